//! A test guest that probes the host's boundaries. The last path segment
//! picks the probe; query parameters configure it. Deployed under several
//! function names with different manifests by the integration tests.

use keyhole_sdk::{http, secrets};
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

const TEXT: &str = "text/plain; charset=utf-8";

struct Probe;

impl wasip2::exports::http::incoming_handler::Guest for Probe {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_default();
        let (path, query) = path_with_query
            .split_once('?')
            .unwrap_or((&path_with_query, ""));
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
                .map(str::to_owned)
        };
        let binding = param("binding").unwrap_or_default();
        match path.rsplit('/').next().unwrap_or("") {
            "hmac" => respond_result(
                out,
                secrets::get(&binding)
                    .and_then(|s| s.hmac_sha256(b"probe"))
                    .map(hex),
            ),
            "verify" => respond_result(
                out,
                secrets::get(&binding)
                    .and_then(|s| s.verify_hmac_sha256(b"probe", &[0u8; 32]))
                    .map(|ok| ok.to_string()),
            ),
            "reveal" => respond_result(
                out,
                secrets::get(&binding)
                    .and_then(|s| s.reveal())
                    .map(|bytes| format!("{} bytes", bytes.len())),
            ),
            "version" => {
                respond_result(out, secrets::get(&binding).map(|s| s.version().to_string()))
            }
            "dump" => dump(out, &binding, param("op").as_deref().unwrap_or("none")),
            "ambient" => ambient(out, param("port").as_deref().unwrap_or("1")),
            "spin" => spin(),
            "grow" => grow(out),
            "bench" => bench(
                out,
                &binding,
                param("n").and_then(|n| n.parse().ok()).unwrap_or(10_000),
            ),
            _ => http::respond(out, 200, TEXT, b"ok\n"),
        }
    }
}

/// 200 with the value, or 403 with `error <kind>: <message>`.
fn respond_result(out: ResponseOutparam, result: Result<String, secrets::Error>) {
    match result {
        Ok(text) => http::respond(out, 200, TEXT, format!("{text}\n").as_bytes()),
        Err(e) => http::respond(out, 403, TEXT, format!("error {e}\n").as_bytes()),
    }
}

fn hex(bytes: Vec<u8>) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Uses the secret as `op` says, drops everything, then sends the whole of
/// linear memory as the body, written straight from memory without
/// allocating so the dump shows the state the operation left.
fn dump(out: ResponseOutparam, binding: &str, op: &str) {
    let outcome = match secrets::get(binding) {
        Ok(secret) => match op {
            "hmac" => secret.hmac_sha256(b"dump").map(|t| t.len()),
            "reveal" => secret.reveal().map(|v| std::hint::black_box(v).len()),
            _ => Ok(0),
        },
        Err(e) => Err(e),
    };
    if let Err(e) = outcome {
        return http::respond(out, 403, TEXT, format!("error {e}\n").as_bytes());
    }
    let headers = Fields::new();
    let response = OutgoingResponse::new(headers);
    let body = response.body().expect("body");
    ResponseOutparam::set(out, Ok(response));
    {
        let stream = body.write().expect("stream");
        let end = core::arch::wasm32::memory_size(0) * 65536;
        let mut at = 1usize; // address 0 is null to Rust
        while at < end {
            let permitted = match stream.check_write() {
                Ok(0) => {
                    stream.subscribe().block();
                    continue;
                }
                Ok(n) => n as usize,
                Err(_) => return,
            };
            let len = permitted.min(end - at).min(64 * 1024);
            // SAFETY: every address below memory_size * 64 KiB is mapped linear memory.
            let chunk = unsafe { core::slice::from_raw_parts(at as *const u8, len) };
            if stream.write(chunk).is_err() {
                return;
            }
            at += len;
        }
        let _ = stream.blocking_flush();
    }
    let _ = OutgoingBody::finish(body, None);
}

/// Reports what the host lets a guest see of itself: environment,
/// arguments, directories, files and sockets.
fn ambient(out: ResponseOutparam, port: &str) {
    let mut report = String::new();
    report += &format!("env {}\n", std::env::vars_os().count());
    report += &format!("args {}\n", std::env::args_os().count());
    report += &format!(
        "preopens {}\n",
        wasip2::filesystem::preopens::get_directories().len()
    );
    for path in [
        "/",
        ".",
        "/etc/passwd",
        "master.key",
        ".keyhole/master.key",
        "/proc/self/environ",
    ] {
        let outcome = match std::fs::read(path) {
            Ok(bytes) => format!("read {} bytes", bytes.len()),
            Err(_) => match std::fs::read_dir(path) {
                Ok(_) => "listed".to_owned(),
                Err(e) => format!("denied ({})", e.kind()),
            },
        };
        report += &format!("file {path} {outcome}\n");
    }
    let tcp = match std::net::TcpStream::connect(format!("127.0.0.1:{port}")) {
        Ok(_) => "connected".to_owned(),
        Err(e) => format!("denied ({})", e.kind()),
    };
    report += &format!("tcp {tcp}\n");
    http::respond(out, 200, TEXT, report.as_bytes());
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Allocates and touches memory until the host refuses more.
fn grow(out: ResponseOutparam) {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    for _ in 0..4096 {
        hoard.push(vec![1u8; 1 << 20]);
    }
    http::respond(
        out,
        200,
        TEXT,
        format!("allocated {} MiB\n", hoard.len()).as_bytes(),
    );
}

/// Times host calls from inside the guest: `n` rounds of get + hmac-sha256
/// + drop, of get + drop, and of verify on a held handle. Prints ns each.
fn bench(out: ResponseOutparam, binding: &str, n: u64) {
    use wasip2::clocks::monotonic_clock::now;
    let message = [7u8; 64];
    let start = now();
    for _ in 0..n {
        let secret = secrets::get(binding).expect("granted");
        std::hint::black_box(secret.hmac_sha256(&message).expect("hmac"));
    }
    let get_hmac = (now() - start) / n;
    let start = now();
    for _ in 0..n {
        std::hint::black_box(secrets::get(binding).expect("granted"));
    }
    let get_only = (now() - start) / n;
    let held = secrets::get(binding).expect("granted");
    let start = now();
    for _ in 0..n {
        std::hint::black_box(
            held.verify_hmac_sha256(&message, &[0u8; 32])
                .expect("verify"),
        );
    }
    let verify_held = (now() - start) / n;
    let text = format!(
        "get+hmac+drop {get_hmac} ns\nget+drop {get_only} ns\nverify-held {verify_held} ns\n"
    );
    http::respond(out, 200, TEXT, text.as_bytes());
}

wasip2::http::proxy::export!(Probe);
