//! Crypto: everything that touches key bytes, in one room a security
//! reviewer can read end to end.
//!
//! Owns: the envelope that seals stored secret versions (`envelope`,
//! re-exported here), where the master key comes from ([`master_key`]),
//! secret bytes as the host holds them ([`secret_value`]), a loaded
//! version and what is derived from it ([`material`]), HMAC with a
//! reusable key schedule ([`keyed_hmac`]) and private keys used on the
//! host ([`keys`]).
//!
//! Invariant: secret bytes leave this folder only through
//! `SecretValue::expose` and the operations built on it; nothing here
//! prints, logs or `Debug`s them. Why: the fewer places hold plaintext,
//! the fewer places can leak it.
//!
//! Never touches: the rest of Keyhole. Nothing here imports the store,
//! the engine, HTTP or the audit trail (only the crates that do the
//! cryptography, and `tracing` for seal-count warnings), so it can be
//! read and tested alone.

mod envelope;
pub(crate) mod keyed_hmac;
pub mod keys;
pub mod master_key;
pub mod material;
pub mod secret_value;

pub use envelope::{
    AesKey, IntegrityError, KEY_LEN, SealedVersion, open_version, rewrap_data_key, seal_version,
};
