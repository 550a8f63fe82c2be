//! Small helpers for the `wasi:http` side of a function: read a request
//! body, send a whole response.
//!
//! Functions export their handler with the `wasip2` crate:
//!
//! ```no_run
//! use wasip2::http::types::{IncomingRequest, ResponseOutparam};
//!
//! struct Hello;
//!
//! impl wasip2::exports::http::incoming_handler::Guest for Hello {
//!     fn handle(_request: IncomingRequest, out: ResponseOutparam) {
//!         keyhole_sdk::http::respond(out, 200, "text/plain", b"hello\n");
//!     }
//! }
//!
//! wasip2::http::proxy::export!(Hello);
//! ```

use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasip2::io::streams::StreamError;

/// The largest chunk one blocking write may carry (a `wasi:io` limit).
const WRITE_CHUNK: usize = 4096;

/// Reads the whole body of `request`, up to `limit` bytes; `None` if the
/// body is larger or the stream fails.
///
/// ```no_run
/// # fn f(request: wasip2::http::types::IncomingRequest) {
/// let body = keyhole_sdk::http::read_body(&request, 1 << 20).unwrap_or_default();
/// # }
/// ```
pub fn read_body(request: &IncomingRequest, limit: usize) -> Option<Vec<u8>> {
    let body = request.consume().ok()?;
    let mut bytes = Vec::new();
    {
        let stream = body.stream().ok()?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    if bytes.len() + chunk.len() > limit {
                        return None;
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(_)) => return None,
            }
        }
    }
    IncomingBody::finish(body);
    Some(bytes)
}

/// The value of header `name` on `request`, if present exactly once and
/// valid UTF-8.
///
/// ```no_run
/// # fn f(request: wasip2::http::types::IncomingRequest) {
/// let signature = keyhole_sdk::http::header(&request, "x-hub-signature-256");
/// # }
/// ```
pub fn header(request: &IncomingRequest, name: &str) -> Option<String> {
    let values = request.headers().get(name);
    match values.as_slice() {
        [one] => String::from_utf8(one.clone()).ok(),
        _ => None,
    }
}

/// Sends a complete response: status, content type and body (with its
/// length, so clients need no chunked decoding).
///
/// ```no_run
/// # fn f(out: wasip2::http::types::ResponseOutparam) {
/// keyhole_sdk::http::respond(out, 401, "text/plain", b"bad signature\n");
/// # }
/// ```
pub fn respond(out: ResponseOutparam, status: u16, content_type: &str, body: &[u8]) {
    let headers = Fields::from_list(&[
        ("content-type".to_owned(), content_type.as_bytes().to_vec()),
        (
            "content-length".to_owned(),
            body.len().to_string().into_bytes(),
        ),
    ])
    .expect("content-type and content-length are valid headers");
    let response = OutgoingResponse::new(headers);
    response
        .set_status_code(status)
        .expect("status codes from this crate's callers are valid");
    let outgoing = response.body().expect("a new response has a body");
    ResponseOutparam::set(out, Ok(response));
    write_all(&outgoing, body);
    OutgoingBody::finish(outgoing, None).expect("finishing a fully written body");
}

/// Writes `bytes` to `body` in chunks the host accepts.
///
/// ```no_run
/// # fn f(body: &wasip2::http::types::OutgoingBody) {
/// keyhole_sdk::http::write_all(body, b"part of a streamed body");
/// # }
/// ```
pub fn write_all(body: &OutgoingBody, bytes: &[u8]) {
    let stream = body.write().expect("the body's stream is taken once");
    for chunk in bytes.chunks(WRITE_CHUNK) {
        if stream.blocking_write_and_flush(chunk).is_err() {
            break;
        }
    }
}
