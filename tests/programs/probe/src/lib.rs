//! A test guest that probes the host's boundaries. The last path segment
//! picks the probe; query parameters configure it. Deployed under several
//! function names with different manifests by the integration tests.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use keyhole_sdk::secrets::Algorithm;
use keyhole_sdk::{http, jwt, secrets};
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

const TEXT: &str = "text/plain; charset=utf-8";

struct Probe;

impl wasip2::exports::http::incoming_handler::Guest for Probe {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_default();
        let path = path_with_query.split('?').next().unwrap_or_default();
        let param = |name: &str| http::query_param(&path_with_query, name).map(str::to_owned);
        // Percent-decoded, so a test can ask for any name a guest could
        // (`<`, spaces: what no client puts in a URL as it is).
        let binding = percent_decoded(&param("binding").unwrap_or_default());
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
            "sign" => respond_result(
                out,
                algorithm(param("alg").as_deref())
                    .and_then(|alg| secrets::get(&binding)?.sign(alg, b"probe"))
                    .map(hex),
            ),
            "public-key" => respond_result(
                out,
                secrets::get(&binding).and_then(|s| s.public_key()).map(hex),
            ),
            "jwt" => respond_result(
                out,
                algorithm(param("alg").as_deref()).and_then(|alg| {
                    jwt::sign(
                        &secrets::get(&binding)?,
                        alg,
                        Some("probe"),
                        r#"{"sub":"probe"}"#,
                    )
                }),
            ),
            "seal" => respond_result(
                out,
                secrets::get(&binding)
                    .and_then(|s| s.seal(b"probe-plaintext", b"probe-aad"))
                    .map(hex),
            ),
            "open" => respond_result(
                out,
                secrets::get(&binding)
                    .and_then(|s| {
                        let sealed = unhex(&param("sealed").unwrap_or_default());
                        let aad = param("aad").unwrap_or_else(|| "probe-aad".into());
                        s.open(&sealed, aad.as_bytes())
                    })
                    .map(|plain| String::from_utf8_lossy(&plain).into_owned()),
            ),
            "token" => respond_result(out, secrets::get(&binding).and_then(|s| s.header_token())),
            "inject" => inject(out, &binding, &param),
            "print" => print(out, &binding),
            "cut" => cut(
                out,
                &binding,
                param("at").and_then(|n| n.parse().ok()).unwrap_or(0),
            ),
            "noise" => {
                // A forged log line with a terminal escape, then a flood.
                println!("\x1b[31mred\nINFO keyhole_host::server: forged line");
                let flood = "z".repeat(1024);
                for _ in 0..param("kib").and_then(|n| n.parse().ok()).unwrap_or(0u32) {
                    println!("{flood}");
                }
                // Then newlines alone: few bytes, many lines.
                let newlines = param("newlines")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0usize);
                print!("{}", "\n".repeat(newlines));
                http::respond(out, 200, TEXT, b"noisy\n")
            }
            "panic" => match secrets::get(&binding).and_then(|s| s.reveal()) {
                Ok(value) => panic!("probe panics holding {}", String::from_utf8_lossy(&value)),
                Err(e) => http::respond(out, 403, TEXT, format!("error {e}\n").as_bytes()),
            },
            "dump" => dump(
                out,
                &binding,
                param("op").as_deref().unwrap_or("none"),
                param("url").as_deref().unwrap_or(""),
            ),
            "ambient" => ambient(out, param("port").as_deref().unwrap_or("1")),
            "spin" => spin(),
            "hold" => hold(request, out, &binding),
            "grow" => grow(out),
            "bench-op" => bench_op(
                out,
                &binding,
                param("op").as_deref().unwrap_or(""),
                param("n").and_then(|n| n.parse().ok()).unwrap_or(1000),
            ),
            "bench" => bench(
                out,
                &binding,
                param("n").and_then(|n| n.parse().ok()).unwrap_or(10_000),
            ),
            _ => http::respond(out, 200, TEXT, b"ok\n"),
        }
    }
}

/// Opens `binding` once and keeps the handle for the whole request: for each
/// line of the request body, as it arrives, runs the operation the line
/// names on that handle (`hmac`, `reveal`, `token`; `get` opens a new one)
/// and streams back one line saying how it went. Lets a test change grants
/// while a request is running.
fn hold(request: IncomingRequest, out: ResponseOutparam, binding: &str) {
    let held = secrets::get(binding);
    let response = OutgoingResponse::new(Fields::new());
    let body = response.body().expect("a new response has a body");
    ResponseOutparam::set(out, Ok(response));
    let stream = body.write().expect("the body's stream is taken once");
    let say = |line: String| {
        let _ = stream.blocking_write_and_flush(format!("{line}\n").as_bytes());
    };
    let outcome = |op: &str, result: Result<String, secrets::Error>| match result {
        Ok(text) => format!("{op} ok {text}"),
        Err(e) => format!("{op} error {e}"),
    };
    say(outcome(
        "get",
        held.as_ref()
            .map(|s| format!("version {}", s.version()))
            .map_err(Clone::clone),
    ));
    let incoming = request.consume().expect("the body is consumed once");
    let input = incoming.stream().expect("the body's stream is taken once");
    let mut pending = Vec::new();
    while let Ok(chunk) = input.blocking_read(4096) {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let op = String::from_utf8_lossy(&line[..end]).trim().to_owned();
            let result = match op.as_str() {
                "get" => secrets::get(binding).map(|s| format!("version {}", s.version())),
                _ => match &held {
                    Err(e) => Err(e.clone()),
                    Ok(secret) => match op.as_str() {
                        "hmac" => secret.hmac_sha256(b"held").map(hex),
                        "reveal" => secret.reveal().map(|v| format!("{} bytes", v.len())),
                        "token" => secret.header_token().map(|t| format!("{} chars", t.len())),
                        other => Err(secrets::Error::InvalidArgument(format!(
                            "no operation `{other}`"
                        ))),
                    },
                },
            };
            say(outcome(&op, result));
        }
    }
    drop(stream);
    let _ = OutgoingBody::finish(body, None);
}

/// `text` with each `%XX` replaced by its byte (others kept as they are).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|_| bytes[i] == b'%')
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .filter_map(|i| u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

fn algorithm(name: Option<&str>) -> Result<Algorithm, secrets::Error> {
    match name {
        Some("ed25519") => Ok(Algorithm::EdDsa),
        Some("es256") => Ok(Algorithm::Es256),
        Some("rs256") => Ok(Algorithm::Rs256),
        other => Err(secrets::Error::InvalidArgument(format!(
            "probe: unknown alg {other:?}"
        ))),
    }
}

/// Sends a request to `url` carrying a header token where `place` says:
/// `header` (default), `url` or `body`. With `token=`, sends that literal
/// token instead of asking for one (a replay). Answers with the upstream's
/// status, or 502 and the error the guest saw.
fn inject(out: ResponseOutparam, binding: &str, param: &dyn Fn(&str) -> Option<String>) {
    let token = match param("token") {
        Some(token) => token,
        None => match secrets::get(binding).and_then(|s| s.header_token()) {
            Ok(token) => token,
            Err(e) => return http::respond(out, 403, TEXT, format!("error {e}\n").as_bytes()),
        },
    };
    let url = param("url").unwrap_or_default();
    let bearer = format!("Bearer {token}");
    let result = match param("place").as_deref().unwrap_or("header") {
        "url" => http::fetch("GET", &format!("{url}?key={token}"), &[], b""),
        "body" => http::fetch("POST", &url, &[], bearer.as_bytes()),
        _ => http::fetch(
            "GET",
            &url,
            &[("authorization", bearer.as_bytes()), ("x-probe", b"1")],
            b"",
        ),
    };
    match result {
        Ok(reply) => http::respond(
            out,
            200,
            TEXT,
            format!("status {}\ntoken {token}\n", reply.status).as_bytes(),
        ),
        Err(e) => http::respond(out, 502, TEXT, format!("error {e}\n").as_bytes()),
    }
}

/// Reveals the secret and prints it so that its first `at` bytes fall
/// within the node's 64 KiB of output per stream, and the rest past it.
fn cut(out: ResponseOutparam, binding: &str, at: usize) {
    use std::io::Write;
    let value = match secrets::get(binding).and_then(|s| s.reveal()) {
        Ok(value) => value,
        Err(e) => return http::respond(out, 403, TEXT, format!("error {e}\n").as_bytes()),
    };
    let mut text = vec![b'z'; 64 * 1024 - at.min(64 * 1024)];
    text.extend_from_slice(&value);
    text.extend_from_slice(b" after\n");
    let mut stdout = std::io::stdout();
    let _ = stdout.write_all(&text);
    let _ = stdout.flush();
    http::respond(out, 200, TEXT, b"cut\n")
}

/// Reveals the secret and prints it to stdout and stderr in every encoding
/// the redactor must catch, and split across two writes.
fn print(out: ResponseOutparam, binding: &str) {
    use std::io::Write;
    let value = match secrets::get(binding).and_then(|s| s.reveal()) {
        Ok(value) => value,
        Err(e) => return http::respond(out, 403, TEXT, format!("error {e}\n").as_bytes()),
    };
    let hex_lower = hex(value.clone());
    let mut forms = vec![
        String::from_utf8_lossy(&value).into_owned(),
        hex_lower.clone(),
        hex_lower.to_uppercase(),
        STANDARD.encode(&value),
        URL_SAFE.encode(&value),
        jwt::base64url(&value),
        value
            .iter()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    char::from(*b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect(),
    ];
    for prefix in [&b"x"[..], b"xy"] {
        let mut shifted = prefix.to_vec();
        shifted.extend_from_slice(&value);
        shifted.extend_from_slice(b"!tail");
        forms.push(STANDARD.encode(&shifted));
        forms.push(URL_SAFE.encode(&shifted));
    }
    let mut stdout = std::io::stdout();
    for (i, form) in forms.iter().enumerate() {
        let _ = writeln!(stdout, "form {i}: <{form}>");
        eprintln!("stderr form {i}: <{form}>");
    }
    // One value split across two writes, flushed in between.
    let raw = String::from_utf8_lossy(&value).into_owned();
    let half = raw.len() / 2;
    let half = (0..=half)
        .rev()
        .find(|i| raw.is_char_boundary(*i))
        .unwrap_or(0);
    let _ = write!(stdout, "split: <{}", &raw[..half]);
    let _ = stdout.flush();
    let _ = writeln!(stdout, "{}>", &raw[half..]);
    let _ = stdout.flush();
    println!("probe printed {} forms", forms.len() + 1);
    http::respond(
        out,
        200,
        TEXT,
        format!("printed {}\n", forms.len() + 1).as_bytes(),
    );
}

/// Uses the secret as `op` says, drops everything, then sends the whole of
/// linear memory as the body, written straight from memory without
/// allocating so the dump shows the state the operation left.
fn dump(out: ResponseOutparam, binding: &str, op: &str, url: &str) {
    let outcome = match secrets::get(binding) {
        Ok(secret) => match op {
            "hmac" => secret.hmac_sha256(b"dump").map(|t| t.len()),
            "reveal" => secret.reveal().map(|v| std::hint::black_box(v).len()),
            "sign-ed25519" => secret.sign(Algorithm::EdDsa, b"dump").map(|s| s.len()),
            "sign-es256" => secret.sign(Algorithm::Es256, b"dump").map(|s| s.len()),
            "sign-rs256" => secret.sign(Algorithm::Rs256, b"dump").map(|s| s.len()),
            "public-key" => secret.public_key().map(|s| s.len()),
            "seal" => secret.seal(b"dump", b"aad").map(|s| s.len()),
            "open" => secret
                .seal(b"dump", b"aad")
                .and_then(|sealed| secret.open(&sealed, b"aad"))
                .map(|p| p.len()),
            "inject" => secret.header_token().and_then(|token| {
                let bearer = format!("Bearer {token}");
                http::fetch("GET", url, &[("authorization", bearer.as_bytes())], b"")
                    .map(|reply| reply.body.len())
                    .map_err(|e| secrets::Error::InvalidArgument(e.to_string()))
            }),
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

/// Times `n` rounds of one operation on a held handle from inside the
/// guest and answers `<op> <ns> ns`: sign-ed25519 / sign-es256 /
/// sign-rs256 (256-byte message), seal / open (1 KiB), header-token.
fn bench_op(out: ResponseOutparam, binding: &str, op: &str, n: u64) {
    use wasip2::clocks::monotonic_clock::now;
    let secret = match secrets::get(binding) {
        Ok(secret) => secret,
        Err(e) => return http::respond(out, 403, TEXT, format!("error {e}\n").as_bytes()),
    };
    let message = [7u8; 256];
    let plaintext = [9u8; 1024];
    let sealed = secret.seal(&plaintext, b"aad");
    let start = now();
    for _ in 0..n {
        let result = match op {
            "sign-ed25519" => secret.sign(Algorithm::EdDsa, &message).map(|s| s.len()),
            "sign-es256" => secret.sign(Algorithm::Es256, &message).map(|s| s.len()),
            "sign-rs256" => secret.sign(Algorithm::Rs256, &message).map(|s| s.len()),
            "seal" => secret.seal(&plaintext, b"aad").map(|s| s.len()),
            "open" => sealed
                .clone()
                .and_then(|sealed| secret.open(&sealed, b"aad"))
                .map(|p| p.len()),
            "header-token" => secret.header_token().map(|t| t.len()),
            other => Err(secrets::Error::InvalidArgument(format!(
                "probe: no op {other}"
            ))),
        };
        if let Err(e) = std::hint::black_box(result) {
            return http::respond(out, 403, TEXT, format!("error {e}\n").as_bytes());
        }
    }
    let each = (now() - start) / n.max(1);
    http::respond(out, 200, TEXT, format!("{op} {each} ns\n").as_bytes());
}
