//! A test guest that attacks the host on purpose: each route is one hostile
//! behaviour the node must contain (the request fails cleanly, the node keeps
//! serving, nothing leaks). The last path segment picks the attack; query
//! parameters size it. Used by `tests/hostile.rs`.
//!
//! The attacks on resource handles call the canonical ABI directly (see
//! [`raw`]) so that the handle index, the pointers and the string bytes are
//! the attacker's choice rather than what the bindings would pass.

mod raw;

use keyhole_sdk::{http, secrets};
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

const TEXT: &str = "text/plain; charset=utf-8";

struct Hostile;

impl wasip2::exports::http::incoming_handler::Guest for Hostile {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_default();
        let path = path_with_query.split('?').next().unwrap_or_default();
        let param = |name: &str| http::query_param(&path_with_query, name).map(str::to_owned);
        let number = |name: &str, default: u64| {
            param(name)
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(default)
        };
        let binding = param("binding").unwrap_or_else(|| "KEY".to_owned());
        let reply = |out, text: String| http::respond(out, 200, TEXT, text.as_bytes());
        match path.rsplit('/').next().unwrap_or("") {
            "enumerate" => reply(out, enumerate(number("n", 1000))),
            "long-name" => reply(
                out,
                outcome(secrets::get(&"B".repeat(number("len", 1 << 20) as usize)).map(|_| ())),
            ),
            "empty-name" => reply(out, outcome(secrets::get("").map(|_| ()))),
            "invalid-utf8" => reply(out, raw::get_with_bytes(&[b'K', 0xff, 0xfe, b'Y'])),
            "forged" => reply(out, raw::version_of(number("index", 0xdead) as u32)),
            "forged-drop" => reply(out, raw::drop_index(number("index", 7) as u32)),
            "stale" => reply(out, raw::stale(&binding)),
            "double-drop" => reply(out, raw::double_drop(&binding)),
            "wrong-type" => {
                let fields = Fields::new();
                reply(out, raw::version_of(fields.handle()))
            }
            "keep" => reply(out, raw::keep(&binding)),
            "keep-and-use" => reply(out, raw::keep_and_use(&binding)),
            "reuse" => reply(out, raw::version_of(number("index", 1) as u32)),
            "input-out-of-bounds" => reply(out, raw::hmac_out_of_bounds_input(&binding)),
            "result-out-of-bounds" => reply(out, raw::hmac_out_of_bounds_result(&binding)),
            "reveal" => reply(
                out,
                outcome(secrets::get(&binding).and_then(|s| s.reveal()).map(|_| ())),
            ),
            "hmac" => match secrets::get(&binding).and_then(|s| s.hmac_sha256(b"hostile")) {
                Ok(tag) => reply(out, hex(&tag)),
                Err(e) => reply(out, format!("error {e}")),
            },
            "spin" => spin(),
            "recurse" => reply(out, format!("depth {}", recurse(number("depth", 1 << 30)))),
            "grow" => reply(out, grow()),
            "handles" => reply(out, open_handles(&binding, number("n", 5000))),
            "fields" => reply(out, flood_fields(number("n", 1_000_000))),
            "clone-fields" => reply(out, clone_fields(number("n", 10_000))),
            "hold-memory" => reply(out, hold_memory(number("mib", 100), number("ms", 1000))),
            "big-hmac" => reply(out, big_hmac(&binding, number("mib", 32) as usize)),
            "big-body" => big_body(out, number("mib", 256) as usize),
            "trap-mid-operation" => {
                let secret = secrets::get(&binding);
                let _held = &secret;
                unreachable_trap()
            }
            "panic" => {
                let _secret = secrets::get(&binding);
                panic!("hostile guest panics on purpose")
            }
            "no-response" => {}
            "read-body" => {
                let body = http::read_body(&request, 64 << 20);
                reply(out, format!("read {:?} bytes", body.map(|b| b.len())))
            }
            "headers" => flood_headers(out, number("n", 100_000)),
            "cross" => match secrets::get(&binding)
                .and_then(|s| s.hmac_sha256(param("msg").unwrap_or_default().as_bytes()))
            {
                Ok(tag) => reply(out, hex(&tag)),
                Err(e) => reply(out, format!("error {e}")),
            },
            _ => reply(out, "ok".to_owned()),
        }
    }
}

/// `allowed` or the error's kind and message.
fn outcome(result: Result<(), secrets::Error>) -> String {
    match result {
        Ok(()) => "allowed".to_owned(),
        Err(e) => format!("error {e}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Guesses `n` binding names and counts how each was answered.
fn enumerate(n: u64) -> String {
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for i in 0..n {
        let name = format!("GUESS_{i}");
        let kind = match secrets::get(&name) {
            Ok(_) => "opened".to_owned(),
            Err(e) => e.kind().to_owned(),
        };
        *counts.entry(kind).or_default() += 1;
    }
    counts
        .iter()
        .map(|(kind, count)| format!("{kind} {count}\n"))
        .collect()
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Recurses `depth` times with a frame the optimiser cannot remove.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 8]);
    if depth == 0 {
        return 0;
    }
    recurse(std::hint::black_box(depth - 1)).wrapping_add(frame[3])
}

/// Allocates and touches memory until the host refuses more.
fn grow() -> String {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    for _ in 0..4096 {
        hoard.push(vec![1u8; 1 << 20]);
    }
    format!("allocated {} MiB", hoard.len())
}

/// Opens `n` handles and keeps them all; reports how many opened and the
/// first refusal.
fn open_handles(binding: &str, n: u64) -> String {
    let mut held = Vec::new();
    let mut first_error = None;
    let mut refused = 0u64;
    for _ in 0..n {
        match secrets::get(binding) {
            Ok(handle) => held.push(handle),
            Err(e) => {
                refused += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    format!(
        "opened {} refused {refused} first error {}",
        held.len(),
        first_error.unwrap_or_default()
    )
}

/// Creates `n` header-field resources and drops none of them.
fn flood_fields(n: u64) -> String {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(Fields::new());
    }
    format!("created {}", held.len())
}

/// Builds one header map of about 120 KiB, then `n` clones of it, each
/// changed once (so each is a copy on the host), and keeps them all.
fn clone_fields(n: u64) -> String {
    let full = Fields::new();
    let value = vec![b'v'; 1000];
    for i in 0..120 {
        let _ = full.append(&format!("x-fill-{i}"), &value);
    }
    let mut held = Vec::new();
    for i in 0..n {
        let copy = full.clone();
        let _ = copy.append(&format!("x-copy-{i}"), b"1".as_ref());
        held.push(copy);
    }
    format!("cloned {}", held.len())
}

/// Allocates and touches `mib` MiB, holds it for `ms` milliseconds, and
/// answers.
fn hold_memory(mib: u64, ms: u64) -> String {
    use wasip2::clocks::monotonic_clock::now;
    let hoard = vec![1u8; (mib as usize) << 20];
    let until = now() + ms * 1_000_000;
    while now() < until {
        std::hint::black_box(&hoard);
    }
    format!("held {} MiB", hoard.len() >> 20)
}

/// HMAC of `mib` MiB of input.
fn big_hmac(binding: &str, mib: usize) -> String {
    let message = vec![0x5au8; mib << 20];
    outcome(
        secrets::get(binding)
            .and_then(|s| s.hmac_sha256(&message))
            .map(|_| ()),
    )
}

/// Streams `mib` MiB of response body, a chunk at a time.
fn big_body(out: ResponseOutparam, mib: usize) {
    let response = OutgoingResponse::new(Fields::new());
    let body = response.body().expect("a new response has a body");
    ResponseOutparam::set(out, Ok(response));
    let stream = body.write().expect("the body's stream is taken once");
    let chunk = [b'x'; 4096];
    for _ in 0..(mib << 20) / chunk.len() {
        if stream.blocking_write_and_flush(&chunk).is_err() {
            return;
        }
    }
    drop(stream);
    let _ = OutgoingBody::finish(body, None);
}

/// Answers with `n` response headers.
fn flood_headers(out: ResponseOutparam, n: u64) {
    let headers = Fields::new();
    for i in 0..n {
        if headers
            .append(&format!("x-flood-{i}"), b"v".as_ref())
            .is_err()
        {
            break;
        }
    }
    let response = OutgoingResponse::new(headers);
    let body = response.body().expect("a new response has a body");
    ResponseOutparam::set(out, Ok(response));
    let _ = OutgoingBody::finish(body, None);
}

fn unreachable_trap() -> ! {
    core::arch::wasm32::unreachable()
}

wasip2::http::proxy::export!(Hostile);
