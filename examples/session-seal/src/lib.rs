//! `session-seal`: `POST /session/login?user=<name>` answers with a
//! `Set-Cookie: session=…` whose value is the user name sealed with the key
//! bound to `SESSION_KEY` (AES-256-GCM, on the host). `GET /session` with
//! that cookie opens it and greets the user; a tampered or foreign cookie
//! gets 401.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keyhole_sdk::{http, secrets};
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

const TEXT: &str = "text/plain; charset=utf-8";
/// Binds sealed cookies to this purpose, so a value sealed for something
/// else under the same key does not open as a session.
const AAD: &[u8] = b"session-seal/v1";

struct SessionSeal;

impl wasip2::exports::http::incoming_handler::Guest for SessionSeal {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_default();
        let key = match secrets::get("SESSION_KEY") {
            Ok(key) => key,
            Err(e) => return http::respond(out, 503, TEXT, format!("{e}\n").as_bytes()),
        };
        if path_with_query.starts_with("/session/login?") {
            let Some(user) = http::query_param(&path_with_query, "user")
                .filter(|u| !u.is_empty() && u.len() <= 64)
            else {
                return http::respond(out, 400, TEXT, b"user= is required (1-64 bytes)\n");
            };
            return match key.seal(user.as_bytes(), AAD) {
                Ok(sealed) => set_cookie(out, &URL_SAFE_NO_PAD.encode(&sealed)),
                Err(e) => http::respond(out, 503, TEXT, format!("{e}\n").as_bytes()),
            };
        }
        let cookie = http::header(&request, "cookie").unwrap_or_default();
        let Some(sealed) = cookie
            .split(';')
            .find_map(|c| c.trim().strip_prefix("session="))
            .and_then(|value| URL_SAFE_NO_PAD.decode(value).ok())
        else {
            return http::respond(out, 401, TEXT, b"no session\n");
        };
        match key.open(&sealed, AAD) {
            Ok(user) => http::respond(
                out,
                200,
                TEXT,
                format!("hello {}\n", String::from_utf8_lossy(&user)).as_bytes(),
            ),
            Err(secrets::Error::InvalidArgument(_)) => {
                http::respond(out, 401, TEXT, b"invalid session\n")
            }
            Err(e) => http::respond(out, 503, TEXT, format!("{e}\n").as_bytes()),
        }
    }
}

fn set_cookie(out: ResponseOutparam, value: &str) {
    let body = format!("session={value}\n");
    let headers = Fields::from_list(&[
        ("content-type".to_owned(), TEXT.as_bytes().to_vec()),
        (
            "set-cookie".to_owned(),
            format!("session={value}; HttpOnly; Secure; SameSite=Strict; Path=/").into_bytes(),
        ),
        (
            "content-length".to_owned(),
            body.len().to_string().into_bytes(),
        ),
    ])
    .expect("valid headers");
    let response = OutgoingResponse::new(headers);
    let outgoing = response.body().expect("a new response has a body");
    ResponseOutparam::set(out, Ok(response));
    http::write_all(&outgoing, body.as_bytes());
    OutgoingBody::finish(outgoing, None).expect("finishing a fully written body");
}

wasip2::http::proxy::export!(SessionSeal);
