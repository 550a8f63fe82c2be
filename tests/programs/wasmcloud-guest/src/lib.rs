//! A function written for other runtimes: it reaches secrets only through
//! wasmCloud's `wasmcloud:secrets@0.1.0-draft` and its settings through
//! `wasi:config/store@0.2.0-rc.1`, both bound from the upstream WIT files
//! vendored in `wit/deps` (no Keyhole SDK), and serves `wasi:http`.
//! Keyhole must run it unchanged, under its own grants.
//!
//! Routes (the last path segment; `key` in the query names the secret or
//! setting): `reveal` answers with the value (`string:…` or `bytes:` and
//! hex), `get` opens it only, `dump` opens it and sends the whole of linear
//! memory; `config` answers with a setting, `config-all` with every one.

mod bindings {
    wit_bindgen::generate!({
        path: [
            "../../../wit/deps/wasmcloud-secrets",
            "../../../wit/deps/wasi-config",
        ],
        inline: r#"
            package test:wasmcloud-guest;

            world guest {
                import wasmcloud:secrets/store@0.1.0-draft;
                import wasmcloud:secrets/reveal@0.1.0-draft;
                import wasi:config/store@0.2.0-rc.1;
            }
        "#,
        world: "test:wasmcloud-guest/guest",
        generate_all,
    });
}

use bindings::wasi::config::store as config;
use bindings::wasmcloud::secrets::reveal::reveal;
use bindings::wasmcloud::secrets::store::{self, SecretValue, SecretsError};
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Guest;

impl wasip2::exports::http::incoming_handler::Guest for Guest {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_default();
        let (path, query) = path_with_query
            .split_once('?')
            .unwrap_or((&path_with_query, ""));
        let key = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("key="))
            .unwrap_or_default();
        match path.rsplit('/').next().unwrap_or("") {
            "reveal" => match store::get(key) {
                Ok(secret) => match reveal(&secret) {
                    SecretValue::String(text) => respond(out, 200, format!("string:{text}")),
                    SecretValue::Bytes(bytes) => {
                        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                        respond(out, 200, format!("bytes:{hex}"))
                    }
                },
                Err(e) => refused(out, e),
            },
            "get" => match store::get(key) {
                Ok(_) => respond(out, 200, "opened".into()),
                Err(e) => refused(out, e),
            },
            "dump" => match store::get(key) {
                Ok(secret) => {
                    drop(secret);
                    dump(out)
                }
                Err(e) => refused(out, e),
            },
            "config" => match config::get(key) {
                Ok(Some(value)) => respond(out, 200, value),
                Ok(None) => respond(out, 404, "none".into()),
                Err(e) => respond(out, 502, format!("{e:?}")),
            },
            "config-all" => match config::get_all() {
                Ok(all) => {
                    let lines: Vec<String> = all.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    respond(out, 200, lines.join("\n"))
                }
                Err(e) => respond(out, 502, format!("{e:?}")),
            },
            _ => respond(out, 404, "no such route".into()),
        }
    }
}

wasip2::http::proxy::export!(Guest);

/// The store's error as the body: 404 for not-found, 502 otherwise.
fn refused(out: ResponseOutparam, error: SecretsError) {
    match error {
        SecretsError::NotFound => respond(out, 404, "not-found".into()),
        SecretsError::Upstream(m) => respond(out, 502, format!("upstream: {m}")),
        SecretsError::Io(m) => respond(out, 502, format!("io: {m}")),
    }
}

fn respond(out: ResponseOutparam, status: u16, text: String) {
    let response = OutgoingResponse::new(Fields::new());
    response.set_status_code(status).expect("valid status");
    let body = response.body().expect("body");
    ResponseOutparam::set(out, Ok(response));
    let stream = body.write().expect("stream");
    stream
        .blocking_write_and_flush(text.as_bytes())
        .expect("write");
    drop(stream);
    OutgoingBody::finish(body, None).expect("finish");
}

/// Sends the whole of linear memory as the body, written straight from
/// memory without allocating, so it shows the state `get` left.
fn dump(out: ResponseOutparam) {
    let response = OutgoingResponse::new(Fields::new());
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
