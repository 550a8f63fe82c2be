//! How admin requests travel over HTTP: the routes, in both directions.
//! The node parses them ([`parse`]); the CLI builds them ([`encode`]).
//!
//! | Method | Path | Request |
//! |---|---|---|
//! | GET | `/v1/secrets` | list secrets |
//! | PUT | `/v1/secrets/{name}` | store a value (body [`PutSecret`]) |
//! | POST | `/v1/secrets/{name}/rotate` | rotate (body [`RotateSecret`]) |
//! | GET | `/v1/secrets/{name}/versions` | versions |
//! | POST | `/v1/secrets/{name}/rollback` | roll back (body [`Rollback`]) |
//! | GET | `/v1/secrets/{name}/dependents` | dependents |
//! | DELETE | `/v1/secrets/{name}[?force=true]` | remove |
//! | GET | `/v1/check` | integrity check of every version |
//! | GET | `/v1/functions` | list functions |
//! | POST | `/v1/functions` | deploy (body [`Deploy`]) |
//! | DELETE | `/v1/functions/{name}` | undeploy |
//! | POST | `/v1/functions/{name}/approve` | approve its requests (body [`ApproveBody`]) |
//! | GET | `/v1/grants[?function=F]` | list grants |
//! | PUT | `/v1/grants/{function}/{binding}` | grant (body [`GrantBody`]) |
//! | DELETE | `/v1/grants/{function}/{binding}` | revoke |
//! | GET | `/v1/tokens` | list tokens |
//! | POST | `/v1/tokens` | create a token (body [`CreateToken`]) |
//! | DELETE | `/v1/tokens/{name}` | revoke a token |
//! | GET | `/v1/audit[?function=&secret=&since_ms=&limit=]` | read the trail |
//! | GET | `/v1/audit/verify` | verify the chain |
//! | POST | `/v1/audit/prune` | prune old records (body [`PruneBody`]) |
//! | GET | `/v1/status` | the node's status |
//! | GET | `/v1/whoami` | the caller's own token: role, permissions, scope |

use super::types::{
    ApproveBody, CreateToken, Deploy, GrantBody, PruneBody, PutSecret, Rollback, RotateSecret,
};
use super::{AdminError, ErrorKind, Request};
use crate::audit::Query;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

/// The largest body any request but a deploy may carry.
pub const MAX_BODY: usize = 256 * 1024;
/// The largest deploy body (a base64 component and its manifest).
pub const MAX_DEPLOY_BODY: usize = 64 * 1024 * 1024;

/// The body limit for a request to `method` `path` by a caller who may
/// deploy (`may_deploy`) or not: only a deploy by a caller allowed to make
/// one may be deploy-sized.
pub fn body_limit(method: &str, path: &str, may_deploy: bool) -> usize {
    if may_deploy && is_deploy(method, path) {
        MAX_DEPLOY_BODY
    } else {
        MAX_BODY
    }
}

/// Whether `method` `path` is a deploy (the one request whose body may be
/// deploy-sized).
pub fn is_deploy(method: &str, path: &str) -> bool {
    method == "POST" && path.trim_end_matches('/') == "/v1/functions"
}

/// The function name a manifest declares, if it parses that far.
pub fn manifest_function_name(manifest: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct NameOnly {
        name: String,
    }
    toml::from_str::<NameOnly>(manifest).ok().map(|m| m.name)
}

fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, AdminError> {
    if body.is_empty() {
        return Err(AdminError::bad_request("this request needs a JSON body"));
    }
    serde_json::from_slice(body)
        .map_err(|e| AdminError::bad_request(format!("invalid request body: {e}")))
}

fn no_body(body: &[u8]) -> Result<(), AdminError> {
    if body.is_empty() {
        Ok(())
    } else {
        Err(AdminError::bad_request("this request takes no body"))
    }
}

/// Query parameters, each allowed name at most once; any other is refused.
fn query_params<'q>(
    query: Option<&'q str>,
    allowed: &[&str],
) -> Result<Vec<(&'q str, String)>, AdminError> {
    let mut params: Vec<(&str, String)> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !allowed.contains(&name) {
            return Err(AdminError::bad_request(format!(
                "unknown query parameter `{}` (this endpoint takes: {})",
                name.escape_debug(),
                if allowed.is_empty() {
                    "none".to_owned()
                } else {
                    allowed.join(", ")
                }
            )));
        }
        if params.iter().any(|(n, _)| *n == name) {
            return Err(AdminError::bad_request(format!(
                "query parameter `{name}` is given twice"
            )));
        }
        params.push((name, decode(value)?));
    }
    Ok(params)
}

fn param<'p>(params: &'p [(&str, String)], name: &str) -> Option<&'p str> {
    params
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

fn number<T: std::str::FromStr>(
    params: &[(&str, String)],
    name: &str,
) -> Result<Option<T>, AdminError> {
    param(params, name)
        .map(|v| {
            v.parse().map_err(|_| {
                AdminError::bad_request(format!("query parameter `{name}` must be a number"))
            })
        })
        .transpose()
}

/// Percent-decodes a path segment or query value.
fn decode(text: &str) -> Result<String, AdminError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        AdminError::bad_request("malformed percent-encoding in the URL")
                    })?;
                out.push(hex);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| AdminError::bad_request("the URL is not UTF-8"))
}

/// Percent-encodes everything but unreserved characters.
fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The admin request `method` `path?query` with `body` stands for.
pub fn parse(
    method: &str,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> Result<Request, AdminError> {
    let segments: Vec<String> = path
        .trim_end_matches('/')
        .split('/')
        .skip(1)
        .map(decode)
        .collect::<Result<_, _>>()?;
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let none = |b: &[u8]| query_params(query, &[]).and_then(|_| no_body(b));
    let request = match (method, segments.as_slice()) {
        ("GET", ["v1", "secrets"]) => {
            none(body)?;
            Request::ListSecrets
        }
        ("PUT", ["v1", "secrets", name]) => {
            query_params(query, &[])?;
            Request::PutSecret {
                name: (*name).to_owned(),
                body: json::<PutSecret>(body)?,
            }
        }
        ("POST", ["v1", "secrets", name, "rotate"]) => {
            query_params(query, &[])?;
            Request::RotateSecret {
                name: (*name).to_owned(),
                body: json::<RotateSecret>(body)?,
            }
        }
        ("GET", ["v1", "secrets", name, "versions"]) => {
            none(body)?;
            Request::Versions {
                name: (*name).to_owned(),
            }
        }
        ("POST", ["v1", "secrets", name, "rollback"]) => {
            query_params(query, &[])?;
            Request::Rollback {
                name: (*name).to_owned(),
                body: json::<Rollback>(body)?,
            }
        }
        ("GET", ["v1", "secrets", name, "dependents"]) => {
            none(body)?;
            Request::Dependents {
                name: (*name).to_owned(),
            }
        }
        ("DELETE", ["v1", "secrets", name]) => {
            no_body(body)?;
            let params = query_params(query, &["force"])?;
            let force = match param(&params, "force") {
                None | Some("false") => false,
                Some("true") => true,
                Some(_) => return Err(AdminError::bad_request("`force` is true or false")),
            };
            Request::RemoveSecret {
                name: (*name).to_owned(),
                force,
            }
        }
        ("GET", ["v1", "check"]) => {
            none(body)?;
            Request::Check
        }
        ("GET", ["v1", "functions"]) => {
            none(body)?;
            Request::Functions
        }
        ("POST", ["v1", "functions"]) => {
            query_params(query, &[])?;
            Request::Deploy(json::<Deploy>(body)?)
        }
        ("DELETE", ["v1", "functions", name]) => {
            none(body)?;
            Request::Undeploy {
                function: (*name).to_owned(),
            }
        }
        ("POST", ["v1", "functions", name, "approve"]) => {
            query_params(query, &[])?;
            Request::Approve {
                function: (*name).to_owned(),
                body: json::<ApproveBody>(body)?,
            }
        }
        ("GET", ["v1", "grants"]) => {
            no_body(body)?;
            let params = query_params(query, &["function"])?;
            Request::Grants {
                function: param(&params, "function").map(str::to_owned),
            }
        }
        ("PUT", ["v1", "grants", function, binding]) => {
            query_params(query, &[])?;
            Request::Grant {
                function: (*function).to_owned(),
                binding: (*binding).to_owned(),
                body: json::<GrantBody>(body)?,
            }
        }
        ("DELETE", ["v1", "grants", function, binding]) => {
            none(body)?;
            Request::Revoke {
                function: (*function).to_owned(),
                binding: (*binding).to_owned(),
            }
        }
        ("GET", ["v1", "tokens"]) => {
            none(body)?;
            Request::Tokens
        }
        ("POST", ["v1", "tokens"]) => {
            query_params(query, &[])?;
            Request::CreateToken(json::<CreateToken>(body)?)
        }
        ("DELETE", ["v1", "tokens", name]) => {
            none(body)?;
            Request::RevokeToken {
                name: (*name).to_owned(),
            }
        }
        ("GET", ["v1", "audit"]) => {
            no_body(body)?;
            let params = query_params(query, &["function", "secret", "since_ms", "limit"])?;
            Request::Audit(Query {
                function: param(&params, "function").map(str::to_owned),
                secret: param(&params, "secret").map(str::to_owned),
                since_ms: number(&params, "since_ms")?,
                limit: number(&params, "limit")?,
            })
        }
        ("GET", ["v1", "audit", "verify"]) => {
            none(body)?;
            Request::AuditVerify
        }
        ("GET", ["v1", "status"]) => {
            none(body)?;
            Request::Status
        }
        ("GET", ["v1", "whoami"]) => {
            none(body)?;
            Request::WhoAmI
        }
        ("POST", ["v1", "audit", "prune"]) => {
            query_params(query, &[])?;
            let body: PruneBody = json(body)?;
            Request::AuditPrune {
                older_than_secs: body.older_than_secs,
            }
        }
        _ => return Err(unknown_route(method, &segments)),
    };
    Ok(request)
}

fn unknown_route(method: &str, segments: &[&str]) -> AdminError {
    let known_path = matches!(
        segments,
        ["v1", "secrets"]
            | ["v1", "secrets", _]
            | [
                "v1",
                "secrets",
                _,
                "rotate" | "versions" | "rollback" | "dependents"
            ]
            | ["v1", "check"]
            | ["v1", "functions"]
            | ["v1", "functions", _]
            | ["v1", "grants"]
            | ["v1", "grants", _, _]
            | ["v1", "tokens"]
            | ["v1", "tokens", _]
            | ["v1", "audit"]
            | ["v1", "audit", "verify" | "prune"]
            | ["v1", "functions", _, "approve"]
            | ["v1", "status" | "whoami"]
    );
    if known_path {
        AdminError::new(
            ErrorKind::MethodNotAllowed,
            format!("method {} is not allowed here", method.escape_debug()),
        )
    } else {
        AdminError::new(
            ErrorKind::NotFound,
            "no such admin endpoint (see the README's admin API table)",
        )
    }
}

/// An HTTP request the CLI sends: method, path with query, JSON body.
pub struct Encoded {
    /// The HTTP method.
    pub method: &'static str,
    /// Path and query.
    pub path: String,
    /// The JSON body (wiped after use: it may hold a secret value).
    pub body: Option<Zeroizing<Vec<u8>>>,
}

fn body(value: &impl serde::Serialize) -> Option<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(Vec::new());
    serde_json::to_writer(&mut *out, value).expect("admin bodies always encode");
    Some(out)
}

/// The HTTP request standing for `request`.
pub fn encode(request: &Request) -> Encoded {
    let seg = encode_segment;
    let (method, path, body) = match request {
        Request::PutSecret { name, body: b } => {
            ("PUT", format!("/v1/secrets/{}", seg(name)), body(b))
        }
        Request::RotateSecret { name, body: b } => {
            ("POST", format!("/v1/secrets/{}/rotate", seg(name)), body(b))
        }
        Request::ListSecrets => ("GET", "/v1/secrets".into(), None),
        Request::Versions { name } => ("GET", format!("/v1/secrets/{}/versions", seg(name)), None),
        Request::Rollback { name, body: b } => (
            "POST",
            format!("/v1/secrets/{}/rollback", seg(name)),
            body(b),
        ),
        Request::Dependents { name } => {
            ("GET", format!("/v1/secrets/{}/dependents", seg(name)), None)
        }
        Request::RemoveSecret { name, force } => (
            "DELETE",
            format!(
                "/v1/secrets/{}{}",
                seg(name),
                if *force { "?force=true" } else { "" }
            ),
            None,
        ),
        Request::Check => ("GET", "/v1/check".into(), None),
        Request::Deploy(b) => ("POST", "/v1/functions".into(), body(b)),
        Request::Undeploy { function } => {
            ("DELETE", format!("/v1/functions/{}", seg(function)), None)
        }
        Request::Functions => ("GET", "/v1/functions".into(), None),
        Request::Approve { function, body: b } => (
            "POST",
            format!("/v1/functions/{}/approve", seg(function)),
            body(b),
        ),
        Request::Grant {
            function,
            binding,
            body: b,
        } => (
            "PUT",
            format!("/v1/grants/{}/{}", seg(function), seg(binding)),
            body(b),
        ),
        Request::Revoke { function, binding } => (
            "DELETE",
            format!("/v1/grants/{}/{}", seg(function), seg(binding)),
            None,
        ),
        Request::Grants { function } => (
            "GET",
            match function {
                Some(f) => format!("/v1/grants?function={}", seg(f)),
                None => "/v1/grants".into(),
            },
            None,
        ),
        Request::CreateToken(b) => ("POST", "/v1/tokens".into(), body(b)),
        Request::Tokens => ("GET", "/v1/tokens".into(), None),
        Request::RevokeToken { name } => ("DELETE", format!("/v1/tokens/{}", seg(name)), None),
        Request::Audit(q) => {
            let mut params = Vec::new();
            if let Some(f) = &q.function {
                params.push(format!("function={}", seg(f)));
            }
            if let Some(s) = &q.secret {
                params.push(format!("secret={}", seg(s)));
            }
            if let Some(since) = q.since_ms {
                params.push(format!("since_ms={since}"));
            }
            if let Some(limit) = q.limit {
                params.push(format!("limit={limit}"));
            }
            let query = if params.is_empty() {
                String::new()
            } else {
                format!("?{}", params.join("&"))
            };
            ("GET", format!("/v1/audit{query}"), None)
        }
        Request::AuditVerify => ("GET", "/v1/audit/verify".into(), None),
        Request::Status => ("GET", "/v1/status".into(), None),
        Request::WhoAmI => ("GET", "/v1/whoami".into(), None),
        Request::AuditPrune { older_than_secs } => (
            "POST",
            "/v1/audit/prune".into(),
            body(&PruneBody {
                older_than_secs: *older_than_secs,
            }),
        ),
    };
    Encoded { method, path, body }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::types::WireValue;
    use crate::crypto::secret_value::SecretValue;

    fn round_trip(request: Request) -> Request {
        let encoded = encode(&request);
        let (path, query) = match encoded.path.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (encoded.path.clone(), None),
        };
        let body = encoded.body.map(|b| b.to_vec()).unwrap_or_default();
        parse(encoded.method, &path, query.as_deref(), &body).expect("parses back")
    }

    #[test]
    fn every_request_survives_the_trip_over_http() {
        let cases = vec![
            Request::ListSecrets,
            Request::PutSecret {
                name: "a.b".into(),
                body: PutSecret {
                    value: WireValue(SecretValue::new(b"\x00\xffvalue".to_vec())),
                    kind: None,
                    max_age_secs: Some(60),
                },
            },
            Request::RemoveSecret {
                name: "x".into(),
                force: true,
            },
            Request::Grants {
                function: Some("f-1".into()),
            },
            Request::Audit(Query {
                function: Some("f".into()),
                secret: None,
                since_ms: Some(5),
                limit: Some(7),
            }),
            Request::Revoke {
                function: "f".into(),
                binding: "B".into(),
            },
            Request::Approve {
                function: "f".into(),
                body: ApproveBody {
                    digest: Some("0123abcd".into()),
                },
            },
            Request::AuditVerify,
            Request::AuditPrune {
                older_than_secs: 86_400,
            },
            Request::Status,
            Request::WhoAmI,
        ];
        for request in cases {
            let before = format!("{:?}", request.describe());
            let back = round_trip(request);
            assert_eq!(format!("{:?}", back.describe()), before);
            if let Request::PutSecret { body, .. } = &back {
                assert_eq!(body.value.0.expose(), b"\x00\xffvalue");
                assert_eq!(body.max_age_secs, Some(60));
            }
            if let Request::Audit(q) = &back {
                assert_eq!((q.since_ms, q.limit), (Some(5), Some(7)));
            }
        }
    }

    #[test]
    fn malformed_requests_name_what_is_wrong() {
        let err = |m: &str, p: &str, q: Option<&str>, b: &[u8]| parse(m, p, q, b).unwrap_err();
        let e = err(
            "PUT",
            "/v1/secrets/x",
            None,
            br#"{"value":"AA==","colour":1}"#,
        );
        assert_eq!(e.kind, ErrorKind::BadRequest);
        assert!(
            e.message.contains("unknown field `colour`"),
            "{}",
            e.message
        );
        let e = err("PUT", "/v1/secrets/x", None, br#"{"kind":"opaque"}"#);
        assert!(e.message.contains("missing field `value`"), "{}", e.message);
        let e = err("PUT", "/v1/secrets/x", None, b"{not json");
        assert_eq!(e.kind, ErrorKind::BadRequest);
        let e = err("PUT", "/v1/secrets/x", None, br#"{"value":"***"}"#);
        assert!(e.message.contains("base64"), "{}", e.message);
        let e = err("GET", "/v1/audit", Some("colour=red"), b"");
        assert!(e.message.contains("unknown query parameter `colour`"));
        assert_eq!(
            err("PATCH", "/v1/secrets", None, b"").kind,
            ErrorKind::MethodNotAllowed
        );
        assert_eq!(
            err("GET", "/v2/nothing", None, b"").kind,
            ErrorKind::NotFound
        );
        assert_eq!(
            err("GET", "/v1/secrets", None, b"{}").kind,
            ErrorKind::BadRequest
        );
        let e = err(
            "PUT",
            "/v1/grants/f/b",
            None,
            br#"{"secret":"s","allow":["fly"]}"#,
        );
        assert!(
            e.message.contains("unknown operation `fly`"),
            "{}",
            e.message
        );
    }
}
