//! Envelope encryption for stored secrets.
//!
//! Each secret version is sealed with AES-256-GCM under a fresh random data
//! key; the data key is sealed under the node's master key. The associated
//! data binds every ciphertext to the secret's name and version, so a record
//! moved to another name or version fails to open instead of yielding the
//! wrong secret.

use crate::crypto::secret_value::SecretValue;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use rand::Rng;
use std::fmt;
use zeroize::Zeroizing;

/// Length of every key used here: AES-256.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;

/// A 256-bit AES key (master or data key), wiped on drop and never printed.
pub struct AesKey(Zeroizing<[u8; KEY_LEN]>);

impl AesKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        rand::rng().fill_bytes(key.as_mut());
        Self(key)
    }

    /// A key from exactly [`KEY_LEN`] bytes; `None` for any other length.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let array: [u8; KEY_LEN] = bytes.try_into().ok()?;
        Some(Self(Zeroizing::new(array)))
    }

    /// The raw key bytes, for writing a key file.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Encrypts `plaintext` bound to `aad`; the output carries its random nonce.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(self.0.as_ref()));
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Decrypts what [`AesKey::seal`] produced with the same `aad`.
    ///
    /// Fails on a wrong key, a changed byte anywhere, or a different `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, IntegrityError> {
        if sealed.len() < NONCE_LEN {
            return Err(IntegrityError);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(self.0.as_ref()));
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| IntegrityError)
    }
}

impl fmt::Debug for AesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AesKey([REDACTED])")
    }
}

/// A ciphertext did not open: wrong key, tampering, or a record moved
/// between names or versions. Carries nothing of the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ciphertext failed its integrity check")]
pub struct IntegrityError;

/// One sealed secret version as stored: both parts are safe to persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedVersion {
    /// The data key, sealed under the master key.
    pub wrapped_key: Vec<u8>,
    /// The secret's bytes, sealed under the data key.
    pub ciphertext: Vec<u8>,
}

fn value_aad(name: &str, version: u32) -> Vec<u8> {
    format!("keyhole/v1/value/{name}/{version}").into_bytes()
}

fn data_key_aad(name: &str, version: u32) -> Vec<u8> {
    format!("keyhole/v1/data-key/{name}/{version}").into_bytes()
}

/// Seals `value` as version `version` of secret `name` under `master`.
pub fn seal_version(
    master: &AesKey,
    name: &str,
    version: u32,
    value: &SecretValue,
) -> SealedVersion {
    let data_key = AesKey::generate();
    SealedVersion {
        ciphertext: data_key.seal(value.expose(), &value_aad(name, version)),
        wrapped_key: master.seal(data_key.expose(), &data_key_aad(name, version)),
    }
}

/// Opens version `version` of secret `name`; fails if any part was altered,
/// swapped with another record, or sealed under another master key.
pub fn open_version(
    master: &AesKey,
    name: &str,
    version: u32,
    sealed: &SealedVersion,
) -> Result<SecretValue, IntegrityError> {
    let key_bytes = master.open(&sealed.wrapped_key, &data_key_aad(name, version))?;
    let data_key = AesKey::from_slice(&key_bytes).ok_or(IntegrityError)?;
    let mut plain = data_key.open(&sealed.ciphertext, &value_aad(name, version))?;
    Ok(SecretValue::new(std::mem::take(&mut *plain)))
}

/// Re-seals the data key of version `version` of secret `name` from `old`
/// to `new`, leaving the ciphertext it protects untouched.
pub fn rewrap_data_key(
    old: &AesKey,
    new: &AesKey,
    name: &str,
    version: u32,
    wrapped_key: &[u8],
) -> Result<Vec<u8>, IntegrityError> {
    let aad = data_key_aad(name, version);
    let key_bytes = old.open(wrapped_key, &aad)?;
    let data_key = AesKey::from_slice(&key_bytes).ok_or(IntegrityError)?;
    Ok(new.seal(data_key.expose(), &aad))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(master: &AesKey) -> SealedVersion {
        seal_version(
            master,
            "api-key",
            3,
            &SecretValue::new(b"s3cr3t-value".to_vec()),
        )
    }

    #[test]
    fn round_trip() {
        let master = AesKey::generate();
        let opened = open_version(&master, "api-key", 3, &sealed(&master)).unwrap();
        assert_eq!(opened.expose(), b"s3cr3t-value");
    }

    #[test]
    fn ciphertext_holds_no_plaintext() {
        let master = AesKey::generate();
        let s = sealed(&master);
        let all = [s.wrapped_key.as_slice(), s.ciphertext.as_slice()].concat();
        assert!(!all.windows(12).any(|w| w == b"s3cr3t-value"));
    }

    #[test]
    fn records_cannot_move_between_names_or_versions() {
        let master = AesKey::generate();
        let s = sealed(&master);
        assert_eq!(
            open_version(&master, "other", 3, &s).unwrap_err(),
            IntegrityError
        );
        assert_eq!(
            open_version(&master, "api-key", 2, &s).unwrap_err(),
            IntegrityError
        );
    }

    #[test]
    fn wrong_master_key_and_flipped_bytes_fail() {
        let master = AesKey::generate();
        let s = sealed(&master);
        assert!(open_version(&AesKey::generate(), "api-key", 3, &s).is_err());
        for i in 0..s.ciphertext.len() {
            let mut t = s.clone();
            t.ciphertext[i] ^= 0x01;
            assert!(open_version(&master, "api-key", 3, &t).is_err(), "byte {i}");
        }
        for i in 0..s.wrapped_key.len() {
            let mut t = s.clone();
            t.wrapped_key[i] ^= 0x80;
            assert!(open_version(&master, "api-key", 3, &t).is_err(), "byte {i}");
        }
    }

    #[test]
    fn rewrapping_moves_a_version_to_the_new_master_key_only() {
        let old = AesKey::generate();
        let new = AesKey::generate();
        let s = sealed(&old);
        let moved = SealedVersion {
            wrapped_key: rewrap_data_key(&old, &new, "api-key", 3, &s.wrapped_key).unwrap(),
            ciphertext: s.ciphertext.clone(),
        };
        assert_eq!(
            open_version(&new, "api-key", 3, &moved).unwrap().expose(),
            b"s3cr3t-value"
        );
        assert!(open_version(&old, "api-key", 3, &moved).is_err());
        assert!(rewrap_data_key(&new, &old, "api-key", 3, &s.wrapped_key).is_err());
        assert!(rewrap_data_key(&old, &new, "api-key", 2, &s.wrapped_key).is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let key = AesKey::from_slice(&[0x41; 32]).unwrap();
        assert_eq!(format!("{key:?}"), "AesKey([REDACTED])");
    }
}
