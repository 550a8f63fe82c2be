//! `webhook-verify`: checks a GitHub webhook's `X-Hub-Signature-256`
//! (`sha256=<hex>` of HMAC-SHA256 over the raw body) with the key bound to
//! `GITHUB_WEBHOOK`. The host computes and compares the HMAC; the key never
//! enters this function's memory.

use keyhole_sdk::{http, secrets};
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

/// GitHub caps webhook payloads at 25 MiB.
const MAX_BODY: usize = 25 * 1024 * 1024;
const TEXT: &str = "text/plain; charset=utf-8";

struct WebhookVerify;

impl wasip2::exports::http::incoming_handler::Guest for WebhookVerify {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let signature = http::header(&request, "x-hub-signature-256");
        let Some(body) = http::read_body(&request, MAX_BODY) else {
            return http::respond(out, 413, TEXT, b"body too large or unreadable\n");
        };
        let Some(tag) = signature.as_deref().and_then(parse_signature) else {
            return http::respond(
                out,
                401,
                TEXT,
                b"missing or malformed X-Hub-Signature-256\n",
            );
        };
        let verified =
            secrets::get("GITHUB_WEBHOOK").and_then(|key| key.verify_hmac_sha256(&body, &tag));
        match verified {
            Ok(true) => http::respond(out, 200, TEXT, b"signature valid\n"),
            Ok(false) => http::respond(out, 401, TEXT, b"signature does not match\n"),
            Err(e) => http::respond(out, 503, TEXT, format!("{e}\n").as_bytes()),
        }
    }
}

/// `sha256=<64 hex digits>` to the 32 tag bytes.
fn parse_signature(header: &str) -> Option<Vec<u8>> {
    let hex = header.trim().strip_prefix("sha256=")?;
    if hex.len() != 64 {
        return None;
    }
    (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

wasip2::http::proxy::export!(WebhookVerify);
