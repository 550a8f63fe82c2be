//! JSON Web Tokens (RFC 7519) signed by the host: the function writes the
//! claims, the key never leaves the host.
//!
//! ```no_run
//! use keyhole_sdk::{jwt, secrets::{self, Algorithm}};
//!
//! let key = secrets::get("JWT_KEY")?;
//! let token = jwt::sign(&key, Algorithm::Es256, None, r#"{"sub":"42","exp":1900000000}"#)?;
//! # Ok::<(), secrets::Error>(())
//! ```

use crate::secrets::{Algorithm, Error, Secret};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A compact JWT (`header.claims.signature`) over `claims_json`, which
/// must be a JSON object, signed with `key` using `algorithm`. `kid`, when
/// given, goes into the header so verifiers can pick the key.
///
/// ```no_run
/// use keyhole_sdk::{jwt, secrets::{self, Algorithm}};
///
/// let key = secrets::get("JWT_RSA_KEY")?;
/// let token = jwt::sign(&key, Algorithm::Rs256, Some("2026-11"), r#"{"sub":"ci"}"#)?;
/// assert_eq!(token.split('.').count(), 3);
/// # Ok::<(), secrets::Error>(())
/// ```
pub fn sign(
    key: &Secret,
    algorithm: Algorithm,
    kid: Option<&str>,
    claims_json: &str,
) -> Result<String, Error> {
    let claims = claims_json.trim();
    if !(claims.starts_with('{') && claims.ends_with('}')) {
        return Err(Error::InvalidArgument(
            "JWT claims must be a JSON object".into(),
        ));
    }
    let mut header = format!(r#"{{"alg":"{}","typ":"JWT""#, algorithm.jwt_name());
    if let Some(kid) = kid {
        header.push_str(r#","kid":"#);
        push_json_string(&mut header, kid);
    }
    header.push('}');
    let mut token = base64url(header.as_bytes());
    token.push('.');
    token.push_str(&base64url(claims.as_bytes()));
    let signature = key.sign(algorithm, token.as_bytes())?;
    token.push('.');
    token.push_str(&base64url(&signature));
    Ok(token)
}

/// Base64url without padding (RFC 7515's encoding for JWS).
///
/// ```no_run
/// assert_eq!(keyhole_sdk::jwt::base64url(b"\xfb\xff"), "-_8");
/// ```
pub fn base64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn push_json_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}
