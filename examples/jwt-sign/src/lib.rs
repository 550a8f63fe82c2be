//! `jwt-sign`: `GET /token?sub=<subject>[&alg=es256|rs256]` answers with a
//! JWT for that subject, valid for five minutes, signed by the host with the
//! key bound to `JWT_ES256_KEY` or `JWT_RS256_KEY`.
//! `GET /token/public-key?alg=…` answers with the verifying key as PEM.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use keyhole_sdk::secrets::{self, Algorithm};
use keyhole_sdk::{http, jwt};
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

const TEXT: &str = "text/plain; charset=utf-8";
const ISSUER: &str = "keyhole-jwt-sign";
const LIFETIME_SECONDS: u64 = 300;

struct JwtSign;

impl wasip2::exports::http::incoming_handler::Guest for JwtSign {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_default();
        let path = path_with_query.split('?').next().unwrap_or_default();
        let param = |name: &str| http::query_param(&path_with_query, name);
        let (algorithm, binding) = match param("alg").unwrap_or("es256") {
            "es256" => (Algorithm::Es256, "JWT_ES256_KEY"),
            "rs256" => (Algorithm::Rs256, "JWT_RS256_KEY"),
            _ => return http::respond(out, 400, TEXT, b"alg must be es256 or rs256\n"),
        };
        let key = match secrets::get(binding) {
            Ok(key) => key,
            Err(e) => return http::respond(out, 503, TEXT, format!("{e}\n").as_bytes()),
        };
        if path.ends_with("/public-key") {
            return match key.public_key() {
                Ok(der) => http::respond(out, 200, "application/x-pem-file", pem(&der).as_bytes()),
                Err(e) => http::respond(out, 503, TEXT, format!("{e}\n").as_bytes()),
            };
        }
        let Some(subject) = param("sub").filter(|s| valid_subject(s)) else {
            return http::respond(
                out,
                400,
                TEXT,
                b"sub must be 1-64 letters, digits, '-' or '_'\n",
            );
        };
        let now = wasip2::clocks::wall_clock::now().seconds;
        let claims = format!(
            r#"{{"iss":"{ISSUER}","sub":"{subject}","iat":{now},"exp":{}}}"#,
            now + LIFETIME_SECONDS
        );
        match jwt::sign(&key, algorithm, None, &claims) {
            Ok(token) => http::respond(out, 200, "application/jwt", token.as_bytes()),
            Err(e) => http::respond(out, 503, TEXT, format!("{e}\n").as_bytes()),
        }
    }
}

/// Subjects are restricted so they can go into the claims without escaping.
fn valid_subject(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A SubjectPublicKeyInfo DER as a `PUBLIC KEY` PEM block.
fn pem(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END PUBLIC KEY-----\n");
    out
}

wasip2::http::proxy::export!(JwtSign);
