//! A function built against `keyhole:secrets@0.1.0`, the interface before
//! sign, seal and header-token were added, with the WIT of that release
//! inlined. A node on a later 0.1.x must still run it unchanged.

mod bindings {
    wit_bindgen::generate!({
        inline: r#"
            package keyhole:secrets@0.1.0;

            interface secrets {
                variant error {
                    not-granted(string),
                    denied(string),
                    unavailable(string),
                    invalid-argument(string),
                }

                resource secret {
                    name: func() -> string;
                    version: func() -> u32;
                    hmac-sha256: func(message: list<u8>) -> result<list<u8>, error>;
                    verify-hmac-sha256: func(message: list<u8>, tag: list<u8>) -> result<bool, error>;
                    reveal: func() -> result<list<u8>, error>;
                }

                get: func(binding: string) -> result<secret, error>;
            }

            world legacy {
                import secrets;
            }
        "#,
    });
}

use bindings::keyhole::secrets::secrets;
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Legacy;

impl wasip2::exports::http::incoming_handler::Guest for Legacy {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let (status, text) = match secrets::get("KEY").and_then(|s| s.hmac_sha256(b"legacy")) {
            Ok(tag) => (200, tag.iter().map(|b| format!("{b:02x}")).collect()),
            Err(e) => (403, format!("{e:?}")),
        };
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
}

wasip2::http::proxy::export!(Legacy);
