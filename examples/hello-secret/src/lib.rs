//! `hello-secret`: opens the `GREETING_KEY` binding and answers with its
//! name and version — never its value.

use keyhole_sdk::{http, secrets};
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct HelloSecret;

impl wasip2::exports::http::incoming_handler::Guest for HelloSecret {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        match secrets::get("GREETING_KEY") {
            Ok(secret) => {
                let text = format!(
                    "hello from keyhole: binding {} is at version {}\n",
                    secret.name(),
                    secret.version()
                );
                http::respond(out, 200, "text/plain; charset=utf-8", text.as_bytes());
            }
            Err(e) => http::respond(
                out,
                503,
                "text/plain; charset=utf-8",
                format!("{e}\n").as_bytes(),
            ),
        }
    }
}

wasip2::http::proxy::export!(HelloSecret);
