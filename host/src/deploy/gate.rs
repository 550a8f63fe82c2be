//! Deploying a function: check the manifest and the component, store both,
//! and tell the developer which bindings are granted and which wait for an
//! operator.

use crate::deploy::manifest::{self, Manifest, ManifestError};
use crate::deploy::scan::{self, Finding, KnownValue, ScanError};
use crate::engine::runtime::{ComponentError, FunctionPre, Runtime};
use crate::operations::OperationSet;
use crate::store::{AdminRecord, Deployment, FunctionInfo, Grant, NestPolicy, Store, StoreError};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Why a deploy was refused; nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The manifest is missing or invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The component file could not be read.
    #[error("cannot read component {path} (named by the manifest's `component`)")]
    ReadComponent {
        /// The component path.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The component cannot run as a function.
    #[error("component {path} cannot run as a Keyhole function")]
    Component {
        /// The component path.
        path: PathBuf,
        /// What is wrong with it.
        source: ComponentError,
    },
    /// The component carries what looks like hard-coded credentials.
    #[error(
        "component {path} carries what looks like hard-coded credentials; nothing was deployed:\n{}\nput credentials in the store (`keyhole secret put`) and reach them through a binding; after reviewing a finding, deploy anyway with --allow-finding ID",
        findings.iter().map(|f| format!("  {f}")).collect::<Vec<_>>().join("\n")
    )]
    HardCodedSecrets {
        /// The component path.
        path: PathBuf,
        /// What was found, not allowed, as the caller may be told of it.
        findings: Vec<Finding>,
        /// Stored values found that the caller is not told of in full (see
        /// [`Disclosure`]): for the audit trail, never for the caller.
        withheld: Vec<Finding>,
    },
    /// The component could not be parsed for scanning.
    #[error("component {path} cannot be scanned")]
    Scan {
        /// The component path.
        path: PathBuf,
        /// What is wrong with it.
        source: ScanError,
    },
    /// The store refused it (e.g. a route taken by another function).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where one requested binding stands after a deploy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum BindingState {
    /// Granted for every operation requested.
    Granted {
        /// The secret it resolves to.
        secret: String,
    },
    /// Granted, but not for every operation requested.
    Partial {
        /// The secret it resolves to.
        secret: String,
        /// Requested operations the grant does not allow.
        missing: OperationSet,
    },
    /// No grant yet: calls get `not-granted` until an operator grants it.
    Pending,
    /// Granted for another component than the one deployed now: `held`
    /// operations wait until an operator approves this one (`keyhole
    /// approve`); the rest follow the redeploy, as the grant chose.
    AwaitingApproval {
        /// The secret it resolves to.
        secret: String,
        /// Requested operations the grant allows, but not yet to this code.
        held: OperationSet,
    },
}

/// The state of a requested binding, given the function's grants and the
/// SHA-256 of the component deployed now.
pub fn binding_state(
    binding: &str,
    requested: OperationSet,
    grants: &[Grant],
    digest: &str,
) -> BindingState {
    let Some(g) = grants.iter().find(|g| g.binding == binding) else {
        return BindingState::Pending;
    };
    let effective = g.effective(digest);
    let held: OperationSet = requested
        .iter()
        .filter(|op| g.allow.contains(*op) && !effective.contains(*op))
        .collect();
    if !held.is_empty() {
        return BindingState::AwaitingApproval {
            secret: g.secret.clone(),
            held,
        };
    }
    if requested.is_subset_of(effective) {
        BindingState::Granted {
            secret: g.secret.clone(),
        }
    } else {
        BindingState::Partial {
            secret: g.secret.clone(),
            missing: requested
                .iter()
                .filter(|op| !effective.contains(*op))
                .collect(),
        }
    }
}

/// What a successful deploy stored.
#[derive(Debug, Clone)]
pub struct DeployReport {
    /// The function as stored.
    pub info: FunctionInfo,
    /// Each requested binding with its state.
    pub bindings: Vec<(String, OperationSet, BindingState)>,
}

/// What the deploy gate let through.
#[derive(Debug, Clone, Default)]
pub struct GateReport {
    /// Findings deployed anyway, because `--allow-finding` named them.
    pub allowed: Vec<Finding>,
    /// `--allow-finding` IDs that matched nothing.
    pub unused_allowances: Vec<String>,
    /// Values of stored secrets the caller was not told about in full (see
    /// [`Disclosure`]): for the audit trail, never for the caller.
    pub probes: Vec<Finding>,
}

/// What the deploy's caller may learn of a stored secret's value found in
/// its component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disclosure {
    /// Everything: the secret's name, version, encoding and offset
    /// (operators, who may list secrets anyway).
    Named,
    /// That the component carries the value of a stored secret, once: not
    /// which, where, or how often (a deployer, for the secrets its own
    /// functions are bound to). Each refusal answers one yes-or-no
    /// question about the whole upload, and refusals are rate-limited.
    Anonymous,
    /// Nothing: the deploy goes on as if the value were not there, and the
    /// finding goes to the audit trail as a probe. Any answer that differs
    /// when a candidate matches is an oracle a deployer could query with
    /// millions of guesses per upload; only an answer that never differs
    /// is not one.
    Silent,
}

/// Scans a prepared deployment's component for `known` secret values and
/// credential formats; refuses it while any finding is not in `allow`.
/// `disclosure` says, per secret name, what the caller may learn.
pub fn gate(
    deployment: &Deployment,
    component_path: &Path,
    known: &[KnownValue],
    allow: &[String],
    disclosure: &dyn Fn(&str) -> Disclosure,
) -> Result<GateReport, DeployError> {
    let found =
        scan::scan_all(&deployment.component, known).map_err(|source| DeployError::Scan {
            path: component_path.to_owned(),
            source,
        })?;
    let mut findings = Vec::new();
    let mut probes = Vec::new();
    let mut anonymous = false;
    for finding in found {
        match finding.stored_secret().map(disclosure) {
            None | Some(Disclosure::Named) => findings.push(finding),
            Some(Disclosure::Anonymous) => {
                anonymous = true;
                probes.push(finding);
            }
            Some(Disclosure::Silent) => probes.push(finding),
        }
    }
    // Only a value the caller is told of, with where it is, may hide the
    // format finding it overlaps: one that vanished for any other value
    // would point at it.
    scan::drop_shadowed(&mut findings);
    let (allowed, mut refused): (Vec<Finding>, Vec<Finding>) = findings
        .into_iter()
        .partition(|f| allow.iter().any(|id| id == &f.id));
    if anonymous {
        // Said once, where and how often unsaid, and never allowable here.
        refused.push(Finding::anonymous_stored_value());
    }
    if !refused.is_empty() {
        return Err(DeployError::HardCodedSecrets {
            path: component_path.to_owned(),
            findings: refused,
            withheld: probes,
        });
    }
    let unused_allowances = allow
        .iter()
        .filter(|id| !allowed.iter().any(|f| &&f.id == id))
        .cloned()
        .collect();
    Ok(GateReport {
        allowed,
        unused_allowances,
        probes,
    })
}

/// Checks the manifest at `manifest_path` and the component it names, and
/// returns them ready to store, with the component's path. Touches nothing
/// but those two files.
pub fn prepare(runtime: &Runtime, manifest_path: &Path) -> Result<Prepared, DeployError> {
    let manifest: Manifest = manifest::load(manifest_path)?;
    let component =
        std::fs::read(&manifest.component).map_err(|source| DeployError::ReadComponent {
            path: manifest.component.clone(),
            source,
        })?;
    check(runtime, manifest, component)
}

/// Like [`prepare`], for a manifest and component uploaded through the
/// admin API: `manifest_path` (as the developer named it) only shapes
/// messages and the component path shown in them.
pub fn prepare_upload(
    runtime: &Runtime,
    manifest_text: &str,
    manifest_path: &Path,
    component: Vec<u8>,
) -> Result<Prepared, DeployError> {
    let base = manifest_path.parent().unwrap_or(Path::new("."));
    let manifest = manifest::parse(manifest_text, manifest_path, base)?;
    check(runtime, manifest, component)
}

/// A deployment checked and compiled, not yet stored.
pub struct Prepared {
    /// What to store.
    pub deployment: Deployment,
    /// The component's path as the manifest names it (for messages).
    pub component_path: PathBuf,
    /// The compiled component: worth keeping in the runtime's cache once
    /// it passed the gate ([`Runtime::remember`]), never before — a refused
    /// component (one embedding a stored secret, say) must leave no copy
    /// in the data directory; and dropped again if the store then refuses
    /// the deployment ([`Runtime::forget`]).
    pub compiled: FunctionPre,
}

/// Checks that `component` runs as a function, and describes it.
fn check(
    runtime: &Runtime,
    manifest: Manifest,
    component: Vec<u8>,
) -> Result<Prepared, DeployError> {
    let compiled = runtime
        .prepare(&component)
        .map_err(|source| DeployError::Component {
            path: manifest.component.clone(),
            source,
        })?;
    let info = FunctionInfo {
        name: manifest.name,
        routes: manifest.routes,
        memory_mib: manifest.memory_mib,
        timeout_ms: manifest.timeout_ms,
        max_concurrency: manifest.max_concurrency,
        bindings: manifest.bindings,
        component_sha256: hex::encode(Sha256::digest(&component)),
        component_size: component.len() as u64,
        outbound: manifest.outbound,
        approved_outbound: Default::default(),
        config: manifest.config,
        deployed_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    };
    Ok(Prepared {
        deployment: Deployment { info, component },
        component_path: manifest.component,
        compiled,
    })
}

/// Stores a prepared deployment (one transaction: all or nothing) and
/// reports the state of each binding it requests. Routes inside or above
/// another function's are refused unless `may_nest` accepts that function.
pub fn store(
    store: &dyn Store,
    deployment: &Deployment,
    may_nest: &NestPolicy<'_>,
    record: &AdminRecord,
) -> Result<DeployReport, DeployError> {
    store.deploy(deployment, may_nest, record)?;
    let info = deployment.info.clone();
    let grants = store.grants(Some(&info.name))?;
    let bindings = info
        .bindings
        .iter()
        .map(|b| {
            (
                b.binding.clone(),
                b.operations,
                binding_state(&b.binding, b.operations, &grants, &info.component_sha256),
            )
        })
        .collect();
    Ok(DeployReport { info, bindings })
}
