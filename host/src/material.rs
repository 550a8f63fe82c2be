//! One loaded secret version as the node uses it: the bytes, plus the
//! private key parsed from them the first time a function signs.

use crate::keys::{KeyError, SigningKey};
use crate::secret_value::SecretValue;
use std::fmt;
use std::sync::OnceLock;

/// A decrypted secret version, shared by every request that opens it.
pub struct SecretMaterial {
    version: u32,
    value: SecretValue,
    signing: OnceLock<Result<SigningKey, KeyError>>,
}

impl SecretMaterial {
    /// Wraps version `version`'s decrypted `value`.
    pub fn new(version: u32, value: SecretValue) -> Self {
        Self {
            version,
            value,
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
