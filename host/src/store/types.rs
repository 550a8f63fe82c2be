//! What the store holds and tells, as plain data every backend shares:
//! secrets and versions (never values, except [`UsableVersions`] handed to
//! a node), deployments, grants, uses and tokens.

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

/// Uses of one binding that a node observed since its last report (or, as
/// a fleet's node shares it, all it recorded of that binding).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// Non-secret settings from its manifest's `[config]`, which it reads
    /// through `wasi:config/store`. Stored and shown in clear: secrets go
    /// through bindings.
    #[serde(default)]
    pub config: std::collections::BTreeMap<String, String>,
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

/// What [`crate::store::KeyCustody::check_all`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// How many versions were decrypted.
    pub checked: usize,
    /// The versions that failed, as `(secret, version)`.
    pub failed: Vec<(String, u32)>,
    /// Rows that failed their authentication, as `table/key`.
    pub forged: Vec<String>,
    /// What is wrong with the rows' state as a whole (rollback, deletion),
    /// if anything.
    pub state: Option<String>,
}

/// Hex digits of a component's SHA-256 an operator must give to name it:
/// 128 bits, so a deployer cannot make other code that shares them.
pub const MIN_DIGEST_HEX: usize = 32;

/// A tag that changes whenever what it stands for changes (a digest of the
/// rows behind it).
pub type StateTag = [u8; 32];

/// What a node serves, as tags ([`crate::store::Changes::served_state`]):
/// a change to a function's deployment, routes or grants changes its tag,
/// a change to a secret or any of its versions changes the secret's. Two
/// of these name what a node has to reload, and nothing else.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServedState {
    /// The store's revision they were read at.
    pub revision: u64,
    /// Each deployed function's tag, by name.
    pub functions: std::collections::HashMap<String, StateTag>,
    /// Each secret's tag, by name.
    pub secrets: std::collections::HashMap<String, StateTag>,
}
