//! Secrets and the forms they could take: random values, their encodings,
//! and finding any of them in memory, on disk or in a log.

use base64::Engine as _;

/// The `X-Hub-Signature-256` GitHub sends with `body` under the webhook
/// key `key` (what `webhook-verify` checks).
pub fn github_signature(key: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hmac_sha256_hex(key, body))
}

/// HMAC-SHA256 of `message` under `key`, lowercase hex: what a function
/// with an `hmac` grant must answer.
pub fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// The forms a secret could take in memory or on disk: raw, hex in both
/// cases, and base64 (standard and URL-safe) at each of the three byte
/// offsets it could start at.
pub fn encodings(secret: &[u8]) -> Vec<(String, Vec<u8>)> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let mut forms = vec![
        ("raw".to_owned(), secret.to_vec()),
        ("hex".to_owned(), hex::encode(secret).into_bytes()),
        ("HEX".to_owned(), hex::encode_upper(secret).into_bytes()),
    ];
    for (alphabet, engine) in [("base64", STANDARD_NO_PAD), ("base64url", URL_SAFE_NO_PAD)] {
        for offset in 0..3usize {
            let padded = [vec![0u8; offset], secret.to_vec()].concat();
            let encoded = engine.encode(&padded);
            let first = (offset * 8).div_ceil(6);
            let last = padded.len() * 8 / 6;
            forms.push((
                format!("{alphabet}+{offset}"),
                encoded.as_bytes()[first..last].to_vec(),
            ));
        }
    }
    forms
}

/// The encodings of `secret` that occur in `haystack`.
pub fn found_in(secret: &[u8], haystack: &[u8]) -> Vec<String> {
    encodings(secret)
        .into_iter()
        .filter(|(_, needle)| {
            haystack
                .windows(needle.len())
                .any(|w| w == needle.as_slice())
        })
        .map(|(name, _)| name)
        .collect()
}

/// A fresh random secret value.
pub fn random_secret() -> Vec<u8> {
    rand::random::<[u8; 32]>().to_vec()
}

/// A random secret of URL- and header-safe characters.
pub fn random_token() -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "sk_live_{}",
        URL_SAFE_NO_PAD.encode(rand::random::<[u8; 30]>())
    )
}
