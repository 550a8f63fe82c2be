//! What the admin API takes and gives: request bodies and replies, the
//! same for the HTTP API and the CLI on the data directory.
//!
//! Bodies refuse unknown fields. No reply carries a secret value; the only
//! credential any reply carries is a token at the moment it is created.

use crate::admin::access::{FunctionScope, Role, RouteScope};
use crate::crypto::keys::KeyKind;
use crate::crypto::secret_value::SecretValue;
use crate::deploy::BindingState;
use crate::operations::OperationSet;
use crate::store::{Dependent, FunctionInfo, Grant, SecretInfo, Timestamp, TokenInfo};
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// A secret value on the wire: standard base64 in a JSON string. Decoded
/// straight into wiped memory; never printed.
pub struct WireValue(pub SecretValue);

impl std::fmt::Debug for WireValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WireValue([REDACTED])")
    }
}

impl Serialize for WireValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text =
            Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.0.expose()));
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for WireValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = WireValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("the value in standard base64")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<WireValue, E> {
                let mut bytes = Zeroizing::new(Vec::with_capacity(text.len()));
                base64::engine::general_purpose::STANDARD
                    .decode_vec(text, &mut bytes)
                    .map_err(|_| E::custom("`value` is not valid standard base64"))?;
                Ok(WireValue(SecretValue::new(std::mem::take(&mut *bytes))))
            }
            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<WireValue, E> {
                let text = Zeroizing::new(text);
                self.visit_str(&text)
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// `PUT /v1/secrets/{name}`: store a secret or a new version of one.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutSecret {
    /// The value, base64.
    pub value: WireValue,
    /// What it is [default: the current version's kind, or opaque].
    #[serde(default)]
    pub kind: Option<KeyKind>,
    /// Maximum age in seconds; 0 removes it [default: keep].
    #[serde(default)]
    pub max_age_secs: Option<i64>,
}

/// `POST /v1/secrets/{name}/rotate`: a new version of an existing secret.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// The value, base64.
    pub value: WireValue,
    /// How long the replaced version stays usable for verification and
    /// decryption, in seconds [default: retire it now].
    #[serde(default)]
    pub grace_secs: Option<i64>,
    /// Maximum age in seconds; 0 removes it [default: keep].
    #[serde(default)]
    pub max_age_secs: Option<i64>,
}

/// `POST /v1/secrets/{name}/rollback`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// The version to make current.
    pub to: u32,
    /// Grace for the replaced version, in seconds [default: none].
    #[serde(default)]
    pub grace_secs: Option<i64>,
}

/// `POST /v1/functions`: deploy a component with its manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    /// The manifest's text (`keyhole.toml`).
    pub manifest: String,
    /// The manifest's path as the developer gave it, for messages.
    #[serde(default = "default_manifest_path")]
    pub manifest_path: String,
    /// The component, base64.
    pub component_base64: String,
    /// Findings of the deploy scan to accept, after review.
    #[serde(default)]
    pub allow_findings: Vec<String>,
}

fn default_manifest_path() -> String {
    "keyhole.toml".into()
}

/// `PUT /v1/grants/{function}/{binding}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    /// The stored secret the binding resolves to.
    pub secret: String,
    /// Operations allowed.
    pub allow: OperationSet,
    /// Hosts an injected value may be sent to (with `inject`).
    #[serde(default)]
    pub egress: crate::outbound::egress::EgressList,
    /// Keep the operations that cannot disclose the value (all but
    /// `reveal`) working when the function is redeployed with another
    /// component, until an operator approves it [default: no].
    #[serde(default)]
    pub follow_redeploys: bool,
    /// Grant only if the deployed component's SHA-256 starts with this (at
    /// least 32 hex digits): the code the operator reviewed.
    #[serde(default)]
    pub digest: Option<String>,
}

/// `POST /v1/functions/{name}/approve`: an operator approves what the
/// function asks for now.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    /// Approve only if the deployed component's SHA-256 starts with this
    /// (at least 32 hex digits): the code the operator reviewed.
    #[serde(default)]
    pub digest: Option<String>,
}

/// `POST /v1/audit/prune`: remove the audit trail's records older than
/// this, leaving a signed checkpoint so `verify` stays meaningful.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneBody {
    /// Records older than this many seconds go.
    pub older_than_secs: u64,
}

/// What an approval changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approved {
    /// The function as it stands now.
    pub function: FunctionInfo,
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// What it may do.
    pub role: Role,
    /// A name for listings and the audit trail [default: role and id].
    #[serde(default)]
    pub name: Option<String>,
    /// For deployers: the function-name patterns it may deploy.
    #[serde(default)]
    pub functions: FunctionScope,
    /// For deployers: the route patterns (`/checkout/*`) it may claim.
    #[serde(default)]
    pub routes: RouteScope,
    /// Lifetime in seconds [default: no expiry].
    #[serde(default)]
    pub expires_secs: Option<i64>,
}

/// A secret with whether it is overdue for rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretListing {
    /// The secret.
    #[serde(flatten)]
    pub info: SecretInfo,
    /// Whether its current value is older than its maximum age.
    pub overdue: bool,
}

/// A new current version: stored, rotated or rolled back to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionChange {
    /// The secret.
    pub name: String,
    /// The version current now.
    pub version: u32,
    /// The value's size, when a value was stored.
    pub bytes: Option<usize>,
    /// Its kind.
    pub kind: KeyKind,
    /// The version it replaced, if any.
    pub replaced: Option<u32>,
    /// Until when the replaced version stays usable for verification and
    /// decryption, if it has a grace window.
    pub grace_until: Option<Timestamp>,
    /// Grants the change reaches, with their last uses.
    pub affected: Vec<Dependent>,
}

/// What removing a secret did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRemoved {
    /// The secret.
    pub name: String,
    /// How many versions went.
    pub versions: u32,
    /// Grants that now resolve to nothing.
    pub dangling_grants: Vec<Grant>,
}

/// What `check` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// How many versions were decrypted.
    pub checked: usize,
    /// Versions that failed their integrity check, as `(secret, version)`.
    pub failed: Vec<(String, u32)>,
    /// Rows that failed their authentication (forged or edited outside
    /// Keyhole), as `table/key`.
    #[serde(default)]
    pub forged: Vec<String>,
    /// What is wrong with the rows' state as a whole (rows rolled back,
    /// deleted or added; the database older than its anchor), if anything.
    #[serde(default)]
    pub state: Option<String>,
}

/// One requested binding of a function and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingStatus {
    /// The binding.
    pub binding: String,
    /// The operations requested.
    pub operations: OperationSet,
    /// Whether an operator granted it.
    pub state: BindingState,
}

/// A deployed function as listed, with its bindings' states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionListing {
    /// The function.
    #[serde(flatten)]
    pub info: FunctionInfo,
    /// Each requested binding's state.
    pub binding_states: Vec<BindingStatus>,
}

/// What a deploy stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployed {
    /// The function as stored, with its bindings' states.
    #[serde(flatten)]
    pub function: FunctionListing,
    /// Scan findings deployed anyway (allowed by the request).
    pub allowed_findings: Vec<String>,
    /// Allowances that matched no finding.
    pub unused_allowances: Vec<String>,
    /// Things the developer should know (e.g. secrets the scan skipped).
    pub warnings: Vec<String>,
}

/// What an undeploy removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undeployed {
    /// The function.
    pub function: String,
    /// How many grants went with it.
    pub grants: usize,
}

/// What a grant stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Granted {
    /// The grant.
    pub grant: Grant,
    /// What the manifest requests for this binding.
    pub requested: OperationSet,
}

/// `GET /v1/whoami`: the caller's own token, so a client (the console)
/// can offer only what the caller may do. The node checks every request
/// regardless; this only saves showing buttons that would be refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    /// The token's name, as audit records give it.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Every permission the role carries (`secrets:read`, ...).
    pub permissions: Vec<String>,
    /// For deployers: the function-name patterns it may act on (empty: all).
    pub functions: FunctionScope,
    /// For deployers: the route patterns it may claim (empty: all).
    pub routes: RouteScope,
}

/// A new token: the only time it is shown.
#[derive(Serialize, Deserialize)]
pub struct CreatedToken {
    /// The token's record.
    pub info: TokenInfo,
    /// The bearer token itself.
    pub token: String,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}
