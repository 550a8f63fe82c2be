//! The node's persistent state: secrets (encrypted), deployments and grants.
//!
//! [`Store`] is the boundary every backend implements. The embedded SQLite
//! backend ([`SqliteStore`]) is the default; a clustered backend plugs in
//! behind the same trait. Every write is atomic: it happens whole or not at
//! all, and a refused write changes nothing.

mod sqlite;

pub use sqlite::{DATABASE_FILE, SqliteStore};

use crate::egress::EgressList;
use crate::keys::KeyKind;
use crate::operations::OperationSet;
use crate::secret_value::SecretValue;

/// Seconds since the Unix epoch, as stored and listed.
pub type Timestamp = i64;

/// What the store tells about a secret: never its value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SecretInfo {
    /// The secret's name in the store.
    pub name: String,
    /// The version that functions get now.
    pub current_version: u32,
    /// How many versions are kept.
    pub versions: u32,
    /// When the first version was stored.
    pub created_at: Timestamp,
    /// When the current version was stored.
    pub updated_at: Timestamp,
    /// What the current version holds, as declared when it was put.
    #[serde(serialize_with = "serialize_kind")]
    pub kind: KeyKind,
}

fn serialize_kind<S: serde::Serializer>(kind: &KeyKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.as_str())
}

/// A deployed function as listed: manifest facts, no component bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FunctionInfo {
    /// The function's name.
    pub name: String,
    /// Path prefixes it serves.
    pub routes: Vec<String>,
    /// Memory limit in MiB.
    pub memory_mib: u32,
    /// Wall-clock limit per request, in milliseconds.
    pub timeout_ms: u32,
    /// Bindings the developer requested, with the operations each needs.
    pub bindings: Vec<RequestedBinding>,
    /// SHA-256 of the component, hex.
    pub component_sha256: String,
    /// Size of the component in bytes.
    pub component_size: u64,
    /// When it was (last) deployed.
    pub deployed_at: Timestamp,
}

/// One binding a manifest asks for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RequestedBinding {
    /// The name the code uses.
    pub binding: String,
    /// The operations the code needs.
    #[serde(serialize_with = "serialize_ops")]
    pub operations: OperationSet,
}

/// A function and its component, ready to store.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// Everything but the component bytes.
    pub info: FunctionInfo,
    /// The component binary.
    pub component: Vec<u8>,
}

/// The operator's decision: this function's binding maps to that secret and
/// may do these operations with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Grant {
    /// The function granted.
    pub function: String,
    /// The binding name inside that function.
    pub binding: String,
    /// The stored secret the binding resolves to.
    pub secret: String,
    /// What the function may do with it.
    #[serde(serialize_with = "serialize_ops")]
    pub allow: OperationSet,
    /// Hosts an injected value may be sent to (for `inject`).
    pub egress: EgressList,
}

fn serialize_ops<S: serde::Serializer>(ops: &OperationSet, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(ops.iter().map(|op| op.as_str()))
}

/// What removing a secret left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedSecret {
    /// How many versions were deleted.
    pub versions: u32,
    /// Grants that still name the secret; their functions now get
    /// `unavailable` for those bindings.
    pub dangling_grants: Vec<Grant>,
}

/// Why a store operation failed. Never carries secret bytes.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No secret by that name.
    #[error("no secret named `{0}` (see `keyhole secret list`)")]
    UnknownSecret(String),
    /// No function by that name.
    #[error("no function named `{0}` is deployed (see `keyhole functions`)")]
    UnknownFunction(String),
    /// No grant for that function and binding.
    #[error(
        "function `{function}` has no grant for binding `{binding}` (see `keyhole grants {function}`)"
    )]
    UnknownGrant {
        /// The function named.
        function: String,
        /// The binding named.
        binding: String,
    },
    /// A route is already served by another function.
    #[error("route `{route}` is already served by function `{owner}`")]
    RouteTaken {
        /// The contested route prefix.
        route: String,
        /// The function that has it.
        owner: String,
    },
    /// A stored record failed its integrity check: tampered with, swapped,
    /// or sealed under another master key.
    #[error(
        "secret `{name}` version {version} failed its integrity check (tampered with, or sealed under another master key)"
    )]
    Integrity {
        /// The secret.
        name: String,
        /// The version.
        version: u32,
    },
    /// The master key in use is not the one the store was created with.
    #[error(
        "the master key does not open this store: supply the key it was created with ({})",
        crate::master_key::MASTER_KEY_ENV
    )]
    WrongMasterKey,
    /// The store file is damaged or not a Keyhole store.
    #[error("the store is damaged or not a Keyhole store: {0}")]
    Corrupt(String),
    /// The database itself failed (I/O, locking, ...).
    #[error("store database error: {0}")]
    Database(rusqlite::Error),
    /// Creating the data directory failed.
    #[error("cannot create data directory {path}")]
    Io {
        /// The directory.
        path: std::path::PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
}

// Not `#[from]`: that would also make the database error the source, and
// reports that print the chain would say it twice.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e)
    }
}

/// The persistent state of a node.
///
/// Implementations must make every write atomic and must never persist a
/// secret's plaintext. `revision` lets a running node notice writes made by
/// other processes (the CLI) cheaply.
pub trait Store: Send + Sync {
    /// Stores `value` as a new version of secret `name` (creating the secret
    /// if needed), makes it current, and returns its version number. `kind`
    /// is recorded as declared; callers validate the value against it.
    fn put_secret(&self, name: &str, value: &SecretValue, kind: KeyKind)
    -> Result<u32, StoreError>;
    /// All secrets, by name; never values.
    fn list_secrets(&self) -> Result<Vec<SecretInfo>, StoreError>;
    /// Deletes secret `name` and all its versions.
    fn remove_secret(&self, name: &str) -> Result<RemovedSecret, StoreError>;
    /// The current version of secret `name` and its decrypted value, or
    /// `None` if there is no such secret.
    fn current_secret(&self, name: &str) -> Result<Option<(u32, SecretValue)>, StoreError>;

    /// Stores (or replaces) a function. Grants of a replaced function stay.
    fn deploy(&self, deployment: &Deployment) -> Result<(), StoreError>;
    /// Removes a function and its grants; returns how many grants went.
    fn undeploy(&self, name: &str) -> Result<usize, StoreError>;
    /// All deployed functions, by name.
    fn functions(&self) -> Result<Vec<FunctionInfo>, StoreError>;
    /// The component bytes of function `name`.
    fn component(&self, name: &str) -> Result<Vec<u8>, StoreError>;

    /// Creates or replaces the grant for `grant.function` / `grant.binding`.
    fn grant(&self, grant: &Grant) -> Result<(), StoreError>;
    /// Removes the grant for `function` / `binding`.
    fn revoke(&self, function: &str, binding: &str) -> Result<Grant, StoreError>;
    /// Grants, of one function or of all, by function then binding.
    fn grants(&self, function: Option<&str>) -> Result<Vec<Grant>, StoreError>;

    /// A number that changes whenever anything in the store changes.
    fn revision(&self) -> Result<u64, StoreError>;
}
