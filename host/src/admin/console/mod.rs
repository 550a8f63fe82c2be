//! The operator's console: a single-page app served at `/ui/` by the admin
//! listener, from assets compiled into the binary (no CDN, no build step,
//! nothing fetched at run time: it works on a node with no network).
//!
//! Invariant: the pages hold no data and no credential. They are public,
//! served before authentication, and every datum they show comes from the
//! admin API with the token the operator types in, which the page keeps in
//! the tab's memory only (never a cookie or web storage), so a page left
//! open elsewhere cannot act and a reload signs out. What the page offers
//! follows the caller's role (`GET /v1/whoami`), but the page is never the
//! check: the API refuses what the token may not do, whatever the page
//! shows.
//!
//! Everything the API returns is shown as text (the scripts build the DOM
//! with `textContent`, never HTML strings), and the Content-Security-Policy
//! forbids inline script, other origins and HTML sinks (Trusted Types with
//! no policy), so a hostile name such as `<img src=x onerror=…>` in a
//! binding, a function or an audit record stays inert even if a script
//! were careless.

mod assets;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};

/// The console's Content-Security-Policy: same-origin scripts, styles and
/// API calls only; no inline script or style, no framing, no plugins, and
/// Trusted Types with no policy, so `innerHTML` and its kin throw.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'; \
     require-trusted-types-for 'script'; trusted-types 'none'";

/// Where the console lives on the admin listener.
pub const PREFIX: &str = "/ui/";

/// Whether `path` belongs to the console (its pages, or `/` and `/ui`,
/// which lead to it) rather than to the API.
pub fn is_console_path(path: &str) -> bool {
    path == "/" || path == "/ui" || path.starts_with(PREFIX)
}

/// The console's answer to `method` `path` (a console path): an asset, a
/// redirect to `/ui/`, or an error page; all with the console's headers.
pub fn answer(method: &str, path: &str) -> hyper::Response<Full<Bytes>> {
    if method != "GET" && method != "HEAD" {
        let mut response = plain(405, "the console answers GET and HEAD only\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    if path == "/" || path == "/ui" {
        let mut response = plain(308, "the console is at /ui/\n");
        response
            .headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static(PREFIX));
        return response;
    }
    let asset = match path.strip_prefix(PREFIX) {
        Some("") => assets::find("index.html"),
        Some(name) => assets::find(name),
        None => None,
    };
    match asset {
        Some(asset) => {
            // For HEAD too: hyper sends no body then, and keeps the length.
            let body = Bytes::from_static(asset.body);
            let mut response = hyper::Response::new(Full::new(body));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            );
            with_console_headers(response)
        }
        None => plain(404, "no such page in the console\n"),
    }
}

fn plain(status: u16, text: &'static str) -> hyper::Response<Full<Bytes>> {
    let mut response = hyper::Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    with_console_headers(response)
}

/// Adds the headers every console answer carries: the CSP, no sniffing,
/// no framing, no referrer, and no caching (the assets are small, and a
/// cached page from an older node would call an API it no longer has).
fn with_console_headers(
    mut response: hyper::Response<Full<Bytes>>,
) -> hyper::Response<Full<Bytes>> {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    super::http::add_common_headers(headers);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_serves_its_pages_with_a_strict_policy() {
        let page = answer("GET", "/ui/");
        assert_eq!(page.status(), 200);
        let headers = page.headers();
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("script-src 'self';") && !csp.contains("unsafe"));
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(answer("GET", "/ui/js/app.js").status(), 200);
        assert_eq!(answer("GET", "/ui/nope.js").status(), 404);
        assert_eq!(answer("GET", "/ui/../Cargo.toml").status(), 404);
        assert_eq!(answer("POST", "/ui/").status(), 405);
        let redirect = answer("GET", "/");
        assert_eq!(redirect.status(), 308);
        assert_eq!(redirect.headers()[header::LOCATION], "/ui/");
        assert!(is_console_path("/ui") && !is_console_path("/v1/secrets"));
        assert!(!is_console_path("/uix"));
        assert_eq!(answer("GET", "/v1").status(), 404);
    }
}
