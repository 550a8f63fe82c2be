//! One loaded secret version as the node uses it: the bytes, plus what is
//! derived from them on first use and then reused: the HMAC key schedule
//! the first time a function MACs, the private key the first time it signs.

use crate::keyed_hmac::KeyedHmac;
use crate::keys::{KeyError, SigningKey};
use crate::secret_value::SecretValue;
use std::fmt;
use std::sync::OnceLock;

/// A decrypted secret version, shared by every request that opens it.
pub struct SecretMaterial {
    version: u32,
    value: SecretValue,
    hmac: OnceLock<KeyedHmac>,
    signing: OnceLock<Result<SigningKey, KeyError>>,
}

impl SecretMaterial {
    /// Wraps version `version`'s decrypted `value`.
    pub fn new(version: u32, value: SecretValue) -> Self {
        Self {
            version,
            value,
            hmac: OnceLock::new(),
            signing: OnceLock::new(),
        }
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
