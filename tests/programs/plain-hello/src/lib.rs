//! `plain-hello`: a `wasi:http` function that imports nothing of Keyhole's
//! and answers every request with a fixed greeting. Any `wasi:http` host can
//! run it, so the benchmark serves this same component on Keyhole and on the
//! runtimes it is compared with; the tests check Keyhole serves a function
//! with no bindings at all.

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct PlainHello;

const GREETING: &[u8] = b"hello from a plain wasi:http component\n";

impl wasip2::exports::http::incoming_handler::Guest for PlainHello {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let headers = Fields::from_list(&[(
            "content-type".to_string(),
            b"text/plain; charset=utf-8".to_vec(),
        )])
        .expect("a valid header");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("the body, taken once");
        ResponseOutparam::set(out, Ok(response));
        let stream = body.write().expect("the stream, taken once");
        stream
            .blocking_write_and_flush(GREETING)
            .expect("writing the greeting");
        drop(stream);
        OutgoingBody::finish(body, None).expect("finishing the body");
    }
}

wasip2::http::proxy::export!(PlainHello);
