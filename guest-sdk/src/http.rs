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

use std::fmt;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
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
    read_incoming(request.consume().ok()?, limit)
}

fn read_incoming(body: IncomingBody, limit: usize) -> Option<Vec<u8>> {
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

/// The value of query parameter `name` in `path_with_query` (as
/// `IncomingRequest::path_with_query` gives it), as written: not
/// percent-decoded. `None` when the parameter is absent.
///
/// ```no_run
/// let path = "/token?sub=alice&alg=rs256";
/// assert_eq!(keyhole_sdk::http::query_param(path, "alg"), Some("rs256"));
/// assert_eq!(keyhole_sdk::http::query_param(path, "kid"), None);
/// ```
pub fn query_param<'a>(path_with_query: &'a str, name: &str) -> Option<&'a str> {
    let (_, query) = path_with_query.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| match pair.split_once('=') {
            Some((key, value)) if key == name => Some(value),
            _ => None,
        })
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

/// A response to an outgoing request, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The HTTP status code.
    pub status: u16,
    /// The response headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The response body.
    pub body: Vec<u8>,
}

/// Why an outgoing request failed; for a request the host refused (a token
/// toward a host off the egress list), the message says which binding and host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError(pub String);

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FetchError {}

/// The largest response body [`fetch`] reads.
pub const MAX_FETCH_BODY: usize = 16 << 20;

/// Sends a request to `url` (`http://` or `https://`) and reads the whole
/// response. Header values may hold tokens from
/// [`crate::secrets::Secret::header_token`]; the host substitutes them.
///
/// ```no_run
/// let token = keyhole_sdk::secrets::get("UPSTREAM_TOKEN")?.header_token()?;
/// let auth = format!("Bearer {token}");
/// let reply = keyhole_sdk::http::fetch(
///     "GET",
///     "https://api.example.com/v1/items",
///     &[("authorization", auth.as_bytes())],
///     b"",
/// )?;
/// println!("upstream said {}", reply.status);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn fetch(
    method: &str,
    url: &str,
    headers: &[(&str, &[u8])],
    body: &[u8],
) -> Result<Fetched, FetchError> {
    let fail = |what: &str| FetchError(what.to_owned());
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        return Err(fail("the URL must start with http:// or https://"));
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) if rest[at..].starts_with('/') => (&rest[..at], rest[at..].to_owned()),
        Some(at) => (&rest[..at], format!("/{}", &rest[at..])),
        None => (rest, "/".to_owned()),
    };
    let fields = Fields::new();
    for (name, value) in headers {
        fields
            .append(name, value)
            .map_err(|e| FetchError(format!("header `{name}`: {e:?}")))?;
    }
    let request = OutgoingRequest::new(fields);
    let method = match method.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_owned()),
    };
    request
        .set_method(&method)
        .map_err(|()| fail("invalid method"))?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| fail("invalid scheme"))?;
    request
        .set_authority(Some(authority))
        .map_err(|()| fail("invalid host in URL"))?;
    request
        .set_path_with_query(Some(&path))
        .map_err(|()| fail("invalid path in URL"))?;
    let outgoing = request.body().map_err(|()| fail("request body"))?;
    let future =
        outgoing_handler::handle(request, None).map_err(|code| FetchError(format!("{code:?}")))?;
    if !body.is_empty() {
        write_all(&outgoing, body);
    }
    // A refused request has no one to finish the body for; its error is
    // what the response future reports.
    let _ = OutgoingBody::finish(outgoing, None);
    let response = loop {
        match future.get() {
            Some(result) => break result,
            None => future.subscribe().block(),
        }
    };
    let response = response
        .map_err(|()| fail("response already taken"))?
        .map_err(|code| FetchError(error_text(&code)))?;
    let status = response.status();
    let headers = response.headers().entries().into_iter().collect::<Vec<_>>();
    let body = response
        .consume()
        .ok()
        .and_then(|b| read_incoming(b, MAX_FETCH_BODY))
        .ok_or_else(|| fail("reading the response body failed or it is too large"))?;
    Ok(Fetched {
        status,
        headers,
        body,
    })
}

fn error_text(code: &wasip2::http::types::ErrorCode) -> String {
    use wasip2::http::types::ErrorCode;
    match code {
        ErrorCode::InternalError(Some(message)) => message.clone(),
        other => format!("{other:?}"),
    }
}
