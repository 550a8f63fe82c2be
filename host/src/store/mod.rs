//! The node's persistent state: secrets (encrypted), deployments and grants.
//!
//! [`Store`] is the boundary every backend implements. The embedded SQLite
//! backend ([`SqliteStore`]) is the default; a clustered backend plugs in
//! behind the same trait. Every write is atomic: it happens whole or not at
//! all, and a refused write changes nothing.

mod sqlite;

pub use sqlite::{ANCHOR_ENV, AuditedError, CheckReport, DATABASE_FILE, SqliteStore};

use crate::crypto::keys::KeyKind;
use crate::crypto::secret_value::SecretValue;
use crate::operations::OperationSet;
use crate::outbound::egress::EgressList;

/// Seconds since the Unix epoch, as stored and listed.
pub type Timestamp = i64;

/// Seconds since the Unix epoch, now.
pub fn now() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as Timestamp)
}

/// What the store tells about a secret: never its value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    pub kind: KeyKind,
    /// When the current version's value was stored: its age counts from here
    /// (a rollback makes an older value current, with its own age).
    pub value_created_at: Timestamp,
    /// How old the current value may grow before it is overdue for
    /// rotation, in seconds; `None` when no maximum is set.
    pub max_age: Option<i64>,
}

impl SecretInfo {
    /// Whether the current value is older than its maximum age at `now`.
    pub fn overdue(&self, now: Timestamp) -> bool {
        self.max_age
            .is_some_and(|max| now.saturating_sub(self.value_created_at) > max)
    }
}

/// Where one version of a secret stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum VersionState {
    /// What functions get now, for every operation.
    Current,
    /// A previous version still accepted for verification and decryption
    /// (never for signing, sealing, injection or reveal) until `until`.
    Grace {
        /// When the grace window ends.
        until: Timestamp,
    },
    /// Kept for rollback; no function can use it.
    Retired,
}

/// One stored version of a secret, as listed: never its value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VersionInfo {
    /// The version number.
    pub version: u32,
    /// When it was stored.
    pub created_at: Timestamp,
    /// What it holds, as declared when it was stored.
    pub kind: KeyKind,
    /// Whether functions can use it now, and how.
    #[serde(flatten)]
    pub state: VersionState,
}

/// One decrypted version a function may use.
#[derive(Debug)]
pub struct UsableVersion {
    /// The version number.
    pub version: u32,
    /// Its decrypted value.
    pub value: SecretValue,
}

/// The versions of one secret that functions may use right now.
#[derive(Debug)]
pub struct UsableVersions {
    /// The current version: every operation uses it.
    pub current: UsableVersion,
    /// Previous versions inside their grace window, newest first, each with
    /// the end of its window: verification and decryption only.
    pub grace: Vec<(UsableVersion, Timestamp)>,
}

/// How a new version changes a secret's maximum age.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaxAgeChange {
    /// Keep whatever the secret had (none for a new secret).
    #[default]
    Keep,
    /// Set it to this many seconds.
    Set(i64),
    /// Remove it.
    Clear,
}

/// A new version of a secret, and how it takes over from the current one.
#[derive(Debug)]
pub struct NewVersion<'a> {
    /// The value.
    pub value: &'a SecretValue,
    /// What it holds; callers validate the value against it first.
    pub kind: KeyKind,
    /// How long the version it replaces stays usable for verification and
    /// decryption, in seconds; `None` retires it at once.
    pub grace: Option<i64>,
    /// The secret's maximum age from now on.
    pub max_age: MaxAgeChange,
}

/// What storing a new version did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The new version's number; it is current now.
    pub version: u32,
    /// The version it replaced as current (into its grace window, or
    /// retired), if the secret existed.
    pub replaced: Option<u32>,
}

/// What a rollback changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolledBack {
    /// The version that was current before.
    pub from: u32,
    /// The version that is current now.
    pub to: u32,
}

/// The most recent use of a binding, as recorded by a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LastUse {
    /// When (to within a second or so: nodes report uses once a second).
    pub at: Timestamp,
    /// The version it got.
    pub version: u32,
}

/// A function that depends on a secret: its grant, and when it last used it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Dependent {
    /// The grant naming the secret.
    #[serde(flatten)]
    pub grant: Grant,
    /// Its last use, or `None` if no node has recorded one.
    pub last_use: Option<LastUse>,
    /// The last time a verification or decryption succeeded only with a
    /// version in its grace window: a sign that a peer still uses the old
    /// value.
    pub last_grace_use: Option<LastUse>,
}

/// Uses of one binding that a node observed since its last report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UseRecord {
    /// The function.
    pub function: String,
    /// The binding.
    pub binding: String,
    /// The secret the binding resolved to.
    pub secret: String,
    /// The latest open, if any since the last report.
    pub last_use: Option<LastUse>,
    /// The latest grace-only success, if any since the last report.
    pub last_grace_use: Option<LastUse>,
}

/// A deployed function as listed: manifest facts, no component bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FunctionInfo {
    /// The function's name.
    pub name: String,
    /// Path prefixes it serves.
    pub routes: Vec<String>,
    /// Memory limit in MiB.
    pub memory_mib: u32,
    /// Wall-clock limit per request, in milliseconds.
    pub timeout_ms: u32,
    /// Requests it may run at once, if its manifest names a limit.
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// Bindings the developer requested, with the operations each needs.
    pub bindings: Vec<RequestedBinding>,
    /// SHA-256 of the component, hex.
    pub component_sha256: String,
    /// Size of the component in bytes.
    pub component_size: u64,
    /// When it was (last) deployed.
    pub deployed_at: Timestamp,
    /// Hosts its manifest asks to call.
    #[serde(default)]
    pub outbound: EgressList,
    /// The hosts an operator approved (`keyhole approve`): it may call
    /// those its manifest still asks for.
    #[serde(default)]
    pub approved_outbound: EgressList,
}

impl FunctionInfo {
    /// The hosts it may call now: asked for and approved.
    pub fn effective_outbound(&self) -> EgressList {
        self.outbound.intersect(&self.approved_outbound)
    }

    /// The hosts it asks for that wait for an operator's approval.
    pub fn pending_outbound(&self) -> EgressList {
        self.outbound.without(&self.approved_outbound)
    }
}

/// One binding a manifest asks for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RequestedBinding {
    /// The name the code uses.
    pub binding: String,
    /// The operations the code needs.
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Grant {
    /// The function granted.
    pub function: String,
    /// The binding name inside that function.
    pub binding: String,
    /// The stored secret the binding resolves to.
    pub secret: String,
    /// What the function may do with it.
    pub allow: OperationSet,
    /// Hosts an injected value may be sent to (for `inject`).
    pub egress: EgressList,
    /// The SHA-256 of the component it was given (or last approved) for:
    /// code deployed since gets none of it until an operator approves it,
    /// except as `follow_redeploys` says.
    #[serde(default)]
    pub digest: String,
    /// Whether the operations that cannot disclose the value (hmac, sign,
    /// seal, inject) keep working for a redeployed component before an
    /// operator approves it. `reveal` never does.
    #[serde(default)]
    pub follow_redeploys: bool,
}

impl Grant {
    /// What the grant allows the component with SHA-256 `digest`: all of it
    /// for the component it was given for; for another, nothing, or with
    /// `follow_redeploys` everything but `reveal`.
    pub fn effective(&self, digest: &str) -> OperationSet {
        if self.digest == digest {
            self.allow
        } else if self.follow_redeploys {
            self.allow
                .iter()
                .filter(|op| *op != crate::operations::Operation::Reveal)
                .collect()
        } else {
            OperationSet::EMPTY
        }
    }

    /// Whether the grant was given for another component than `digest`.
    pub fn awaits_approval(&self, digest: &str) -> bool {
        self.digest != digest
    }
}

/// What removing a secret left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedSecret {
    /// How many versions were deleted.
    pub versions: u32,
    /// Grants that still name the secret (only with `force`); their
    /// functions now get `unavailable` for those bindings.
    pub dangling_grants: Vec<Grant>,
}

fn grant_list(grants: &[Grant]) -> String {
    grants
        .iter()
        .map(|g| format!("`{}` (binding `{}`)", g.function, g.binding))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An admin API token as listed: never the token, never its hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenInfo {
    /// The public part of the token, which finds its record.
    pub id: String,
    /// A name to recognise it by in listings and the audit trail.
    pub name: String,
    /// What it may do.
    pub role: crate::admin::access::Role,
    /// The functions a deployer token may deploy (empty: all).
    pub functions: crate::admin::access::FunctionScope,
    /// The routes a deployer token may claim (empty: all).
    #[serde(default)]
    pub routes: crate::admin::access::RouteScope,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it stops working, if ever.
    pub expires_at: Option<Timestamp>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
    /// Who created it (a token name, or `local`).
    pub created_by: String,
}

impl TokenInfo {
    /// Whether it is neither revoked nor expired at `now`.
    pub fn active(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| now < at)
    }
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

/// Creates `dir` (and its parents) readable by its owner only, or checks an
/// existing one: a data directory that others may write to is refused (they
/// could swap the database or the key file), and one that others may read
/// is narrowed to its owner, with a warning.
pub fn private_dir(dir: &std::path::Path) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: dir.to_owned(),
        source,
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        let mode = std::fs::metadata(dir).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o022 != 0 {
            return Err(StoreError::InsecureDataDir {
                path: dir.to_owned(),
                mode,
            });
        }
        if mode & 0o077 != 0 {
            tracing::warn!(
                dir = %dir.display(),
                "the data directory was readable by others (mode {mode:o}); narrowed to 700"
            );
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir).map_err(io)?;
    Ok(())
}

/// Creates `file` readable and writable by its owner only if it is missing,
/// or narrows an existing one to that (SQLite gives its journal files the
/// database file's mode).
pub fn private_file(file: &std::path::Path) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: file.to_owned(),
        source,
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(file)
            .map_err(io)?;
        let mode = std::fs::metadata(file).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
    }
    #[cfg(not(unix))]
    let _ = io;
    Ok(())
}

/// Hex digits of a component's SHA-256 an operator must give to name it:
/// 128 bits, so a deployer cannot make other code that shares them.
pub const MIN_DIGEST_HEX: usize = 32;

/// Whether a deploy may claim routes inside or above those of another
/// function, given that function's name and routes: a route prefix belongs
/// to the function that first claimed it.
pub type NestPolicy<'a> = dyn Fn(&str, &[String]) -> bool + 'a;

/// Checks `routes`, claimed by `function`, against the routes other
/// functions hold (`taken`, as `(route, owner)` pairs grouped by owner): an
/// equal route is never shared; an overlapping one only where `may_nest`
/// accepts its owner, unless `function` holds that route already (`held`:
/// it claimed it first, or an operator let it nest there).
pub fn check_routes(
    function: &str,
    routes: &[String],
    held: &[String],
    taken: &[(String, String)],
    may_nest: &NestPolicy<'_>,
) -> Result<(), StoreError> {
    for route in routes {
        if let Some((_, owner)) = taken.iter().find(|(r, _)| r == route) {
            return Err(StoreError::RouteTaken {
                route: route.clone(),
                owner: owner.clone(),
            });
        }
    }
    for route in routes.iter().filter(|r| !held.contains(r)) {
        for (other_route, owner) in taken {
            if !crate::admin::access::routes_overlap(route, other_route) {
                continue;
            }
            let owner_routes: Vec<String> = taken
                .iter()
                .filter(|(_, o)| o == owner)
                .map(|(r, _)| r.clone())
                .collect();
            if !may_nest(owner, &owner_routes) {
                return Err(StoreError::RouteNested {
                    route: route.clone(),
                    function: function.to_owned(),
                    other_route: other_route.clone(),
                    owner: owner.clone(),
                });
            }
        }
    }
    Ok(())
}

/// The persistent state of a node.
///
/// Implementations must make every write atomic and must never persist a
/// secret's plaintext. `revision` lets a running node notice writes made by
/// other processes (the CLI) cheaply.
pub trait Store: Send + Sync {
    /// Stores a new version of secret `name` (creating the secret if
    /// needed), makes it current in the same transaction, and returns its
    /// version number. The version it replaces enters its grace window, or
    /// retires.
    fn put_secret(&self, name: &str, new: &NewVersion<'_>) -> Result<Stored, StoreError>;
    /// Like [`Store::put_secret`], but only for a secret that exists.
    fn rotate_secret(&self, name: &str, new: &NewVersion<'_>) -> Result<Stored, StoreError>;
    /// All secrets, by name; never values.
    fn list_secrets(&self) -> Result<Vec<SecretInfo>, StoreError>;
    /// One secret; never its value.
    fn secret(&self, name: &str) -> Result<SecretInfo, StoreError>;
    /// Every version of secret `name`, newest first; never values.
    fn versions(&self, name: &str) -> Result<Vec<VersionInfo>, StoreError>;
    /// Makes version `to` current again; the version it replaces enters a
    /// grace window of `grace` seconds, or retires.
    fn rollback(&self, name: &str, to: u32, grace: Option<i64>) -> Result<RolledBack, StoreError>;
    /// Deletes secret `name` and all its versions. Refused while grants name
    /// it, unless `force`.
    fn remove_secret(&self, name: &str, force: bool) -> Result<RemovedSecret, StoreError>;
    /// The versions of secret `name` functions may use now, decrypted, or
    /// `None` if there is no such secret.
    fn usable_versions(&self, name: &str) -> Result<Option<UsableVersions>, StoreError>;
    /// Every grant naming secret `name`, with its last recorded use.
    fn dependents(&self, name: &str) -> Result<Vec<Dependent>, StoreError>;
    /// Records uses observed by a node. Not a change to what is served: it
    /// leaves [`Store::revision`] alone.
    fn record_uses(&self, uses: &[UseRecord]) -> Result<(), StoreError>;

    /// Stores (or replaces) a function. Grants of a replaced function stay.
    /// Refused when a route equals another function's route, or lies
    /// inside or above one whose function `may_nest` rejects (checked in
    /// the same transaction as the write, so no deploy slips between).
    fn deploy(&self, deployment: &Deployment, may_nest: &NestPolicy<'_>) -> Result<(), StoreError>;
    /// Removes a function and its grants; returns how many grants went.
    fn undeploy(&self, name: &str) -> Result<usize, StoreError>;
    /// All deployed functions, by name.
    fn functions(&self) -> Result<Vec<FunctionInfo>, StoreError>;
    /// The component bytes of function `name`, with the SHA-256 they were
    /// deployed under (checked against the bytes as they are read).
    fn component(&self, name: &str) -> Result<(Vec<u8>, String), StoreError>;
    /// An operator approves what function `function` asks for now: its
    /// outbound hosts, and its grants for the component deployed now. With
    /// `digest`, only if the deployed component's
    /// SHA-256 starts with it (at least 32 hex digits), so an operator
    /// approves the code they reviewed and not one deployed since.
    fn approve(&self, function: &str, digest: Option<&str>) -> Result<FunctionInfo, StoreError>;

    /// Creates or replaces the grant for `grant.function` / `grant.binding`,
    /// refused unless `grant.digest` is the SHA-256 of the component
    /// deployed now (checked in the write's transaction).
    fn grant(&self, grant: &Grant) -> Result<(), StoreError>;
    /// Removes the grant for `function` / `binding`.
    fn revoke(&self, function: &str, binding: &str) -> Result<Grant, StoreError>;
    /// Grants, of one function or of all, by function then binding.
    fn grants(&self, function: Option<&str>) -> Result<Vec<Grant>, StoreError>;

    /// Fails with [`StoreError::Tampered`] when a row that decides what is
    /// served or who may act was forged, or the rows were rolled back.
    fn verify_integrity(&self) -> Result<(), StoreError>;

    /// A number that changes whenever anything in the store changes.
    fn revision(&self) -> Result<u64, StoreError>;
    /// Fails with [`StoreError::WrongMasterKey`] when the master key in use
    /// no longer opens the store (another process rotated it).
    fn check_master_key(&self) -> Result<(), StoreError>;
}
