//! Why a store operation failed, in one enum every backend returns.

use super::Grant;

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
    /// A secret still granted to functions cannot be removed without force.
    #[error(
        "secret `{secret}` is still granted to {}: revoke those grants first, or pass --force and they get `unavailable`",
        grant_list(grants)
    )]
    HasDependents {
        /// The secret.
        secret: String,
        /// The grants that name it.
        grants: Vec<Grant>,
    },
    /// No such version of a secret.
    #[error("secret `{name}` has no version {version} (see `keyhole secret versions {name}`)")]
    UnknownVersion {
        /// The secret.
        name: String,
        /// The version asked for.
        version: u32,
    },
    /// A rollback to the version that is already current.
    #[error("version {version} of secret `{name}` is already current")]
    AlreadyCurrent {
        /// The secret.
        name: String,
        /// The version.
        version: u32,
    },
    /// A route is already served by another function.
    #[error("route `{route}` is already served by function `{owner}`")]
    RouteTaken {
        /// The contested route prefix.
        route: String,
        /// The function that has it.
        owner: String,
    },
    /// A route lies inside (or above) another function's route, and the
    /// deploy's caller may not deploy that function.
    #[error(
        "route `{route}` of `{function}` lies {} route `{other_route}` of function `{owner}`, which this caller may not deploy",
        if crate::admin::access::route_contains(other_route, route) { "inside" } else { "above" }
    )]
    RouteNested {
        /// The route claimed.
        route: String,
        /// The function claiming it.
        function: String,
        /// The other function's route it overlaps.
        other_route: String,
        /// The function that first claimed that route.
        owner: String,
    },
    /// The deployed component is not the one the operator named.
    #[error(
        "function `{function}` is deployed with component sha256 {actual}, not {expected}: review what is deployed now, then approve with its digest"
    )]
    DigestMismatch {
        /// The function.
        function: String,
        /// The digest (prefix) the operator gave.
        expected: String,
        /// The deployed component's SHA-256.
        actual: String,
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
        crate::crypto::master_key::MASTER_KEY_ENV
    )]
    WrongMasterKey,
    /// The store file is damaged or not a Keyhole store.
    #[error("the store is damaged or not a Keyhole store: {0}")]
    Corrupt(String),
    /// A token by that name exists already.
    #[error("a token named `{0}` exists already (see `keyhole token list`); choose another --name")]
    TokenNameTaken(String),
    /// No token by that name.
    #[error("no token named `{0}` (see `keyhole token list`)")]
    UnknownToken(String),
    /// The token was revoked before.
    #[error("token `{0}` is already revoked")]
    TokenAlreadyRevoked(String),
    /// Rows were changed outside Keyhole: forged (named), or deleted, added
    /// or rolled back (the state no longer verifies).
    #[error(
        "the store was changed outside keyhole and is refused until an operator looks (`keyhole check`): {}{}",
        if forged.is_empty() { String::new() } else { format!("rows failing their authentication: {}; ", forged.join(", ")) },
        state.as_deref().unwrap_or("the rows' state verifies")
    )]
    Tampered {
        /// Rows whose MAC fails, as `table/key`.
        forged: Vec<String>,
        /// What is wrong with the state as a whole, if anything.
        state: Option<String>,
    },
    /// A master-key rotation to the key the store is sealed under already
    /// (a rotation run again after it landed): nothing to do.
    #[error(
        "the store is sealed under that master key already (a rotation to it was done before); nothing was changed"
    )]
    MasterKeyInForce,
    /// The fleet cannot take writes now (unreachable, no quorum, or too
    /// many races lost): nothing was written.
    #[error("the cluster cannot be used now: {0}")]
    ClusterUnavailable(String),
    /// A write was sent to the fleet and no answer came: it may have
    /// landed, in which case every replica applies it.
    #[error(
        "{0}: the write may or may not have taken effect; check (e.g. `keyhole secret versions`, `keyhole grants`) before retrying"
    )]
    ClusterOutcomeUnknown(String),
    /// The fleet refused or could not be used as configured (wrong master
    /// key for it, a malformed entry, ...).
    #[error("cluster: {0}")]
    Cluster(String),
    /// A proposed write lost its race: another replica's entry came after
    /// entry `applied` first. Internal: the store catches up and decides
    /// the write again, so callers never see it.
    #[error("another write reached the cluster first (after entry {applied})")]
    FleetConflict {
        /// The last entry this replica had applied.
        applied: u64,
    },
    /// The database itself failed (I/O, locking, ...).
    #[error("store database error: {0}")]
    Database(rusqlite::Error),
    /// The data directory may be written by users other than its owner.
    #[error(
        "the data directory {} is writable by group or others (mode {mode:o}): anyone who can write there can replace the store or its key; `chmod 700` it (refusing to use it until then)",
        path.display()
    )]
    InsecureDataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Its permission bits.
        mode: u32,
    },
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

fn grant_list(grants: &[Grant]) -> String {
    grants
        .iter()
        .map(|g| format!("`{}` (binding `{}`)", g.function, g.binding))
        .collect::<Vec<_>>()
        .join(", ")
}
