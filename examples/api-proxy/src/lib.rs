//! `api-proxy`: forwards `GET /proxy/<path>?<query>` to the upstream named
//! by `UPSTREAM_URL`, with `Authorization: Bearer <token>` where the token
//! is a host-issued stand-in for `API_TOKEN`. The host swaps in the real
//! token only on the way to a host on the grant's egress list; this
//! function never holds it, so it cannot log it, leak it, or send it
//! anywhere else.

use keyhole_sdk::{http, secrets};
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

const TEXT: &str = "text/plain; charset=utf-8";

struct ApiProxy;

impl wasip2::exports::http::incoming_handler::Guest for ApiProxy {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let rest = path.strip_prefix("/proxy").unwrap_or(&path);
        let upstream = match secrets::get("UPSTREAM_URL").and_then(|s| s.reveal()) {
            Ok(url) => String::from_utf8_lossy(&url)
                .trim_end_matches('/')
                .to_owned(),
            Err(e) => return http::respond(out, 503, TEXT, format!("{e}\n").as_bytes()),
        };
        let token = match secrets::get("API_TOKEN").and_then(|s| s.header_token()) {
            Ok(token) => token,
            Err(e) => return http::respond(out, 503, TEXT, format!("{e}\n").as_bytes()),
        };
        let authorization = format!("Bearer {token}");
        let url = format!("{upstream}{}", if rest.is_empty() { "/" } else { rest });
        match http::fetch(
            "GET",
            &url,
            &[("authorization", authorization.as_bytes())],
            b"",
        ) {
            Ok(reply) => {
                let content_type = reply
                    .headers
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
                    .and_then(|(_, v)| String::from_utf8(v.clone()).ok())
                    .unwrap_or_else(|| "application/octet-stream".to_owned());
                http::respond(out, reply.status, &content_type, &reply.body)
            }
            Err(e) => {
                eprintln!("upstream request failed: {e}");
                http::respond(out, 502, TEXT, format!("upstream: {e}\n").as_bytes())
            }
        }
    }
}

wasip2::http::proxy::export!(ApiProxy);
