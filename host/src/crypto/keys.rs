//! Private keys held as secrets: recognising a PEM key, signing with it on
//! the host, and the key kinds an operator can declare at `secret put`.
//!
//! Signing uses `ring` (constant-time, well kept). A key is parsed once per
//! loaded secret version and reused; the PEM and DER copies made while
//! parsing are wiped.

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use std::fmt;
use std::str::FromStr;
use zeroize::Zeroizing;

/// The length of an AES-256 key, in bytes.
pub const AES_256_KEY_LEN: usize = 32;

/// What a secret's bytes are, as an operator declares with `--kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyKind {
    /// Any bytes (passwords, tokens, HMAC keys). Nothing is checked.
    #[default]
    Opaque,
    /// Exactly 32 bytes: a key for `seal` / `open`.
    Aes256,
    /// An Ed25519 private key, PKCS#8 PEM.
    Ed25519,
    /// An ECDSA P-256 private key, PKCS#8 PEM.
    EcdsaP256,
    /// An RSA private key (2048–4096 bits), PKCS#8 or PKCS#1 PEM.
    Rsa,
}

impl KeyKind {
    /// Every kind, in display order.
    pub const ALL: [KeyKind; 5] = [
        KeyKind::Opaque,
        KeyKind::Aes256,
        KeyKind::Ed25519,
        KeyKind::EcdsaP256,
        KeyKind::Rsa,
    ];

    /// The name used by `--kind` and in listings.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Opaque => "opaque",
            KeyKind::Aes256 => "aes-256",
            KeyKind::Ed25519 => "ed25519",
            KeyKind::EcdsaP256 => "ecdsa-p256",
            KeyKind::Rsa => "rsa",
        }
    }

    /// What the kind is, in words, for error messages.
    fn description(self) -> &'static str {
        match self {
            KeyKind::Opaque => "opaque bytes",
            KeyKind::Aes256 => "a 32-byte AES-256 key",
            KeyKind::Ed25519 => "an Ed25519 private key",
            KeyKind::EcdsaP256 => "an ECDSA P-256 private key",
            KeyKind::Rsa => "an RSA private key",
        }
    }

    /// Checks that `value` is a well-formed key of this kind. The error
    /// says what is wrong and never quotes the value.
    pub fn validate(self, value: &[u8]) -> Result<(), KeyError> {
        match self {
            KeyKind::Opaque => Ok(()),
            KeyKind::Aes256 => check_aes_key(value),
            KeyKind::Ed25519 | KeyKind::EcdsaP256 | KeyKind::Rsa => {
                let key = SigningKey::from_pem(value)?;
                if key.kind() == self {
                    Ok(())
                } else {
                    Err(KeyError::WrongKind {
                        found: key.kind(),
                        needed: self,
                    })
                }
            }
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for KeyKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for KeyKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for KeyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s.trim())
            .ok_or_else(|| {
                format!(
                    "unknown key kind `{}` (known: opaque, aes-256, ed25519, ecdsa-p256, rsa)",
                    s.trim()
                )
            })
    }
}

/// A signature algorithm, as `sign` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Ed25519 (JWT `EdDSA`).
    Ed25519,
    /// ECDSA P-256 with SHA-256, fixed-size `r || s` (JWT `ES256`).
    EcdsaP256Sha256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (JWT `RS256`).
    RsaPkcs1Sha256,
}

impl Algorithm {
    /// The key kind the algorithm signs with.
    pub fn key_kind(self) -> KeyKind {
        match self {
            Algorithm::Ed25519 => KeyKind::Ed25519,
            Algorithm::EcdsaP256Sha256 => KeyKind::EcdsaP256,
            Algorithm::RsaPkcs1Sha256 => KeyKind::Rsa,
        }
    }

    /// The name the WIT uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Ed25519 => "ed25519",
            Algorithm::EcdsaP256Sha256 => "ecdsa-p256-sha256",
            Algorithm::RsaPkcs1Sha256 => "rsa-pkcs1-sha256",
        }
    }
}

/// Why a secret cannot be used as a key. Never carries key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not PEM, or a PEM block of a kind that is not a private key.
    #[error(
        "not a PEM private key ({0}); expected a `-----BEGIN PRIVATE KEY-----` (PKCS#8) block, or `-----BEGIN RSA PRIVATE KEY-----` (PKCS#1) for RSA"
    )]
    NotPem(String),
    /// A private key Keyhole recognises but does not sign with.
    #[error("{0}")]
    Unsupported(String),
    /// The key did not pass the signing library's checks.
    #[error("{} rejected: {reason}", .kind.description())]
    Rejected {
        /// The kind of key it claims to be.
        kind: KeyKind,
        /// What the library said (a fixed description, never key bytes).
        reason: String,
    },
    /// A key of another kind than the operation or `--kind` needs.
    #[error("the secret is {}, but this needs {}", .found.description(), .needed.description())]
    WrongKind {
        /// What the secret holds.
        found: KeyKind,
        /// What was needed.
        needed: KeyKind,
    },
    /// An AES-256 key of the wrong length.
    #[error("an AES-256 key is exactly 32 bytes; this secret is {0} bytes")]
    AesKeyLength(usize),
}

/// Checks that `key` can be an AES-256 key.
pub fn check_aes_key(key: &[u8]) -> Result<(), KeyError> {
    if key.len() == AES_256_KEY_LEN {
        Ok(())
    } else {
        Err(KeyError::AesKeyLength(key.len()))
    }
}

/// A parsed private key, ready to sign.
pub enum SigningKey {
    /// An Ed25519 key pair.
    Ed25519(Ed25519KeyPair),
    /// An ECDSA P-256 key pair (fixed-size signatures).
    EcdsaP256(EcdsaKeyPair),
    /// An RSA key pair.
    Rsa(RsaKeyPair),
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({}, [REDACTED])", self.kind())
    }
}

impl SigningKey {
    /// Parses a PEM private key: PKCS#8 (Ed25519, ECDSA P-256, RSA) or
    /// PKCS#1 (RSA).
    pub fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let trimmed = pem.trim_ascii();
        let (label, der) = pem_rfc7468::decode_vec(trimmed)
            .map(|(label, der)| (label.to_owned(), Zeroizing::new(der)))
            .map_err(|e| KeyError::NotPem(e.to_string()))?;
        match label.as_str() {
            "PRIVATE KEY" => Self::from_pkcs8(&der),
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der)
                .map(SigningKey::Rsa)
                .map_err(|e| rejected(KeyKind::Rsa, e)),
            "EC PRIVATE KEY" => Err(KeyError::Unsupported(
                "a SEC1 `EC PRIVATE KEY` block: convert it to PKCS#8 with `openssl pkcs8 -topk8 -nocrypt -in key.pem`".into(),
            )),
            "ENCRYPTED PRIVATE KEY" => Err(KeyError::Unsupported(
                "an encrypted PKCS#8 key: store it decrypted (Keyhole encrypts it at rest)".into(),
            )),
            other => Err(KeyError::NotPem(format!("found a `{other}` block"))),
        }
    }

    fn from_pkcs8(der: &[u8]) -> Result<Self, KeyError> {
        match pkcs8_algorithm(der) {
            Some(Pkcs8Algorithm::Ed25519) => Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                .map(SigningKey::Ed25519)
                .map_err(|e| rejected(KeyKind::Ed25519, e)),
            Some(Pkcs8Algorithm::Ec(curve)) if curve == OID_P256 => EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                der,
                &SystemRandom::new(),
            )
            .map(SigningKey::EcdsaP256)
            .map_err(|e| rejected(KeyKind::EcdsaP256, e)),
            Some(Pkcs8Algorithm::Ec(curve)) => Err(KeyError::Unsupported(format!(
                "an ECDSA key on curve {}: Keyhole signs ECDSA on P-256 only",
                curve_name(curve)
            ))),
            Some(Pkcs8Algorithm::Rsa) => RsaKeyPair::from_pkcs8(der)
                .map(SigningKey::Rsa)
                .map_err(|e| rejected(KeyKind::Rsa, e)),
            Some(Pkcs8Algorithm::Other) => Err(KeyError::Unsupported(
                "a PKCS#8 key of an algorithm Keyhole does not sign with (it signs with Ed25519, ECDSA P-256 and RSA)".into(),
            )),
            None => Err(KeyError::NotPem(
                "the `PRIVATE KEY` block is not a PKCS#8 structure".into(),
            )),
        }
    }

    /// What kind of key this is.
    pub fn kind(&self) -> KeyKind {
        match self {
            SigningKey::Ed25519(_) => KeyKind::Ed25519,
            SigningKey::EcdsaP256(_) => KeyKind::EcdsaP256,
            SigningKey::Rsa(_) => KeyKind::Rsa,
        }
    }

    /// Signs `message` with `algorithm`, which must match the key's kind.
    pub fn sign(&self, algorithm: Algorithm, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let wrong = || KeyError::WrongKind {
            found: self.kind(),
            needed: algorithm.key_kind(),
        };
        match (self, algorithm) {
            (SigningKey::Ed25519(key), Algorithm::Ed25519) => {
                Ok(key.sign(message).as_ref().to_vec())
            }
            (SigningKey::EcdsaP256(key), Algorithm::EcdsaP256Sha256) => key
                .sign(&SystemRandom::new(), message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| KeyError::Unsupported("ECDSA signing failed".into())),
            (SigningKey::Rsa(key), Algorithm::RsaPkcs1Sha256) => {
                let mut signature = vec![0; key.public().modulus_len()];
                key.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    message,
                    &mut signature,
                )
                .map_err(|_| KeyError::Unsupported("RSA signing failed".into()))?;
                Ok(signature)
            }
            _ => Err(wrong()),
        }
    }

    /// The public key as SubjectPublicKeyInfo DER, the form `openssl`,
    /// JOSE libraries and browsers import.
    pub fn public_key_spki(&self) -> Vec<u8> {
        match self {
            SigningKey::Ed25519(key) => {
                let mut spki = SPKI_ED25519_PREFIX.to_vec();
                spki.extend_from_slice(key.public_key().as_ref());
                spki
            }
            SigningKey::EcdsaP256(key) => {
                let mut spki = SPKI_P256_PREFIX.to_vec();
                spki.extend_from_slice(key.public_key().as_ref());
                spki
            }
            SigningKey::Rsa(key) => {
                // BIT STRING with no unused bits, holding the PKCS#1 RSAPublicKey.
                let mut bits = vec![0u8];
                bits.extend_from_slice(key.public().as_ref());
                let mut body = RSA_ALGORITHM_IDENTIFIER.to_vec();
                body.extend(der_element(0x03, &bits));
                der_element(0x30, &body)
            }
        }
    }
}

fn rejected(kind: KeyKind, e: ring::error::KeyRejected) -> KeyError {
    let reason = match (kind, e.to_string().as_str()) {
        (KeyKind::Rsa, "TooSmall") => "the modulus is smaller than 2048 bits".to_owned(),
        (KeyKind::Rsa, "TooLarge") => "the modulus is larger than 4096 bits".to_owned(),
        (_, "InvalidEncoding") => "the key's encoding is malformed".to_owned(),
        (_, other) => other.to_owned(),
    };
    KeyError::Rejected { kind, reason }
}

impl fmt::Display for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} key", self.kind())
    }
}

/// `SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING (33 bytes) }` up to the key.
const SPKI_ED25519_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// `SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (66 bytes) }` up to the point.
const SPKI_P256_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// `SEQUENCE { OID rsaEncryption, NULL }`.
const RSA_ALGORITHM_IDENTIFIER: [u8; 15] = [
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];

const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

fn curve_name(oid: &[u8]) -> &'static str {
    match oid {
        [0x2b, 0x81, 0x04, 0x00, 0x22] => "P-384",
        [0x2b, 0x81, 0x04, 0x00, 0x23] => "P-521",
        [0x2b, 0x81, 0x04, 0x00, 0x0a] => "secp256k1",
        _ => "other than P-256",
    }
}

/// The algorithm a PKCS#8 `PrivateKeyInfo` declares.
#[derive(Debug, PartialEq, Eq)]
enum Pkcs8Algorithm<'a> {
    Ed25519,
    /// An elliptic-curve key, with its curve's OID.
    Ec(&'a [u8]),
    Rsa,
    Other,
}

/// Reads `PrivateKeyInfo ::= SEQUENCE { version INTEGER, algorithm
/// SEQUENCE { OID, parameters }, ... }` far enough to name the algorithm.
fn pkcs8_algorithm(der: &[u8]) -> Option<Pkcs8Algorithm<'_>> {
    let (tag, info, _) = der_read(der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, _version, rest) = der_read(info)?;
    if tag != 0x02 {
        return None;
    }
    let (tag, algorithm, _) = der_read(rest)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, oid, parameters) = der_read(algorithm)?;
    if tag != 0x06 {
        return None;
    }
    Some(match oid {
        OID_ED25519 => Pkcs8Algorithm::Ed25519,
        OID_RSA_ENCRYPTION => Pkcs8Algorithm::Rsa,
        OID_EC_PUBLIC_KEY => match der_read(parameters) {
            Some((0x06, curve, _)) => Pkcs8Algorithm::Ec(curve),
            _ => Pkcs8Algorithm::Other,
        },
        _ => Pkcs8Algorithm::Other,
    })
}

/// One DER element: its tag, its contents, and what follows it.
fn der_read(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b))
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// A DER element with `tag` around `contents`.
fn der_element(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(contents);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths_round_trip() {
        for len in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let contents = vec![0xab; len];
            let element = der_element(0x04, &contents);
            let (tag, read, rest) = der_read(&element).unwrap();
            assert_eq!((tag, read.len(), rest.len()), (0x04, len, 0));
        }
        assert_eq!(der_read(&[0x30, 0x05, 0x00]), None, "length past the end");
        assert_eq!(der_read(&[0x30, 0x80]), None, "indefinite length");
    }

    #[test]
    fn kinds_parse_and_check_aes_length() {
        assert_eq!("ecdsa-p256".parse::<KeyKind>().unwrap(), KeyKind::EcdsaP256);
        assert!(
            "dsa"
                .parse::<KeyKind>()
                .unwrap_err()
                .contains("unknown key kind `dsa`")
        );
        assert!(KeyKind::Aes256.validate(&[7; 32]).is_ok());
        assert_eq!(
            KeyKind::Aes256.validate(&[7; 16]),
            Err(KeyError::AesKeyLength(16))
        );
        assert!(KeyKind::Opaque.validate(b"anything").is_ok());
    }

    #[test]
    fn non_pem_is_refused_without_echoing_it() {
        let err = KeyKind::Ed25519
            .validate(b"hunter2-not-a-key")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("not a PEM private key"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let cert = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = SigningKey::from_pem(cert).unwrap_err().to_string();
        assert!(err.contains("`CERTIFICATE` block"), "{err}");
    }

    #[test]
    fn pkcs8_algorithm_is_read_from_the_structure() {
        // A minimal PrivateKeyInfo header for an Ed25519 key (RFC 8410 example).
        let ed = hex::decode(
            "302e020100300506032b657004220420d4ee72dbf913584ad5b6d8f1f769f8ad3afe7c28cbf1d4fbe097a88f44755842",
        )
        .unwrap();
        assert_eq!(pkcs8_algorithm(&ed), Some(Pkcs8Algorithm::Ed25519));
        let key = SigningKey::from_pkcs8(&ed).unwrap();
        assert_eq!(key.kind(), KeyKind::Ed25519);
        // RFC 8410's public key for that private key.
        assert_eq!(
            hex::encode(key.public_key_spki()),
            "302a300506032b657003210019bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1"
        );
        assert_eq!(
            key.sign(Algorithm::RsaPkcs1Sha256, b"m").unwrap_err(),
            KeyError::WrongKind {
                found: KeyKind::Ed25519,
                needed: KeyKind::Rsa
            }
        );
        assert_eq!(key.sign(Algorithm::Ed25519, b"m").unwrap().len(), 64);
        assert_eq!(pkcs8_algorithm(b"\x30\x00"), None);

        // Neither the key nor the material holding it prints key bytes.
        let private_hex = "d4ee72dbf913584ad5b6d8f1f769f8ad3afe7c28cbf1d4fbe097a88f44755842";
        let material = crate::crypto::material::SecretMaterial::new(
            1,
            crate::crypto::secret_value::SecretValue::new(ed.clone()),
        );
        let printed = format!("{key:?} {key} {material:?}");
        assert!(printed.contains("REDACTED"), "{printed}");
        // Neither as hex nor as the decimal list a derived Debug prints (0xd4 = 212).
        assert!(
            !printed.contains(private_hex) && !printed.contains("212"),
            "{printed}"
        );
    }
}
