//! `reveal-demo`: reveals `DB_PASSWORD` when its grant allows `reveal`, and
//! shows the host's clean denial when it does not. It reports only the
//! length of what it got, as a real function would use the password rather
//! than print it.

use keyhole_sdk::{http, secrets};
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

const TEXT: &str = "text/plain; charset=utf-8";

struct RevealDemo;

impl wasip2::exports::http::incoming_handler::Guest for RevealDemo {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let secret = match secrets::get("DB_PASSWORD") {
            Ok(secret) => secret,
            Err(e) => return http::respond(out, 503, TEXT, format!("{e}\n").as_bytes()),
        };
        match secret.reveal() {
            Ok(bytes) => {
                let text = format!(
                    "revealed DB_PASSWORD version {}: {} bytes\n",
                    secret.version(),
                    bytes.len()
                );
                http::respond(out, 200, TEXT, text.as_bytes());
            }
            Err(e) => http::respond(out, 403, TEXT, format!("reveal refused: {e}\n").as_bytes()),
        }
    }
}

wasip2::http::proxy::export!(RevealDemo);
