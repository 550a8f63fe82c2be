//! One loaded secret version as the node uses it: the bytes, plus what is
//! derived from them on first use and then reused: the HMAC key schedule
//! the first time a function MACs, the private key the first time it signs.

use crate::crypto::keyed_hmac::KeyedHmac;
use crate::crypto::keys::{KeyError, SigningKey};
use crate::crypto::secret_value::SecretValue;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// Seals under one key version after which the node warns, each time the
/// count reaches one: AES-GCM with random 96-bit nonces should seal at most
/// 2^32 messages under one key (NIST SP 800-38D), and the warnings come
/// well before. The count is this node's since it started.
pub const SEAL_WARNINGS: [u64; 4] = [1 << 24, 1 << 28, 1 << 30, 1 << 31];

/// A decrypted secret version, shared by every request that opens it.
pub struct SecretMaterial {
    version: u32,
    value: SecretValue,
    hmac: OnceLock<KeyedHmac>,
    signing: OnceLock<Result<SigningKey, KeyError>>,
    /// Messages sealed with the value as an AES key, shared by every load
    /// of this version.
    seals: Arc<AtomicU64>,
}

impl SecretMaterial {
    /// Wraps version `version`'s decrypted `value`.
    pub fn new(version: u32, value: SecretValue) -> Self {
        Self {
            version,
            value,
            hmac: OnceLock::new(),
            signing: OnceLock::new(),
            seals: Arc::default(),
        }
    }

    /// The same, counting seals in `seals` (shared with earlier loads of
    /// this version, so a reload does not reset the count).
    pub fn counting_seals_in(mut self, seals: Arc<AtomicU64>) -> Self {
        self.seals = seals;
        self
    }

    /// Counts one message sealed with the value; returns the count.
    pub fn count_seal(&self) -> u64 {
        self.seals.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The version number.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The secret's bytes.
    pub fn value(&self) -> &SecretValue {
        &self.value
    }

    /// HMAC-SHA256 keyed with the value, keyed once and then reused.
    pub fn hmac(&self) -> &KeyedHmac {
        self.hmac
            .get_or_init(|| KeyedHmac::new(self.value.expose()))
    }

    /// The private key the value holds, parsed once and then reused; the
    /// error says why the value is not a usable key.
    pub fn signing_key(&self) -> Result<&SigningKey, &KeyError> {
        self.signing
            .get_or_init(|| SigningKey::from_pem(self.value.expose()))
            .as_ref()
    }
}

impl fmt::Debug for SecretMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretMaterial")
            .field("version", &self.version)
            .field("value", &self.value)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_versions_seal_count_survives_a_reload() {
        let value = || SecretValue::new(vec![7u8; 32]);
        let seals = Arc::new(AtomicU64::new(0));
        let first = SecretMaterial::new(1, value()).counting_seals_in(Arc::clone(&seals));
        assert_eq!(first.count_seal(), 1);
        let reloaded = SecretMaterial::new(1, value()).counting_seals_in(seals);
        assert_eq!(reloaded.count_seal(), 2);
        assert_eq!(
            SecretMaterial::new(2, value()).count_seal(),
            1,
            "another version"
        );
    }
}
