//! The admin actions themselves, over the store: [`Admin::handle`] checks
//! the caller's permission and runs each request inside
//! [`crate::store::audited`], passing the action's record into the write
//! it makes. Who is calling is `authenticate`'s; the actions on secrets,
//! on functions (the deploy gate), and on grants and tokens each have a
//! module of their own.

mod authenticate;
mod functions;
mod grants_and_tokens;
mod secrets;

use super::types::*;
use super::{AdminError, ErrorKind, Request, chain_message};
use crate::admin::access::{Caller, FunctionScope, NewToken, Permission, PresentedToken, Role};
use crate::audit::{AdminEvent, Event, Timed, now_ms};
use crate::crypto::keys::KeyKind;
use crate::deploy::scan;
use crate::deploy::{self, BindingState, DeployError, Disclosure};
use crate::engine::runtime::Runtime;
use crate::names;
use crate::node::status::NodeStatus;
use crate::operations::Operation;
use crate::store::{
    AdminRecord, FleetRecords, Grant, MIN_DIGEST_HEX, MaxAgeChange, NewVersion, Store, StoreError,
    TokenInfo, now,
};
use authenticate::Unauthenticated;
use base64::Engine as _;
use functions::{GateRefusals, check_digest_prefix, scope_of};
use secrets::grace;
use serde::Serialize;
use serde_json::Value;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// The admin actions over one node's store.
pub struct Admin {
    store: Arc<dyn Store>,
    /// For deploys; made on first use when not given.
    runtime: OnceLock<Arc<Runtime>>,
    /// Where the lazily made runtime keeps compiled components, if anywhere.
    compiled_cache: Option<std::path::PathBuf>,
    /// Deploys the gate refused, per deployer token.
    gate_refusals: GateRefusals,
    /// What the running node says of itself, when one runs this service.
    status: Option<StatusSource>,
    /// Refused (unauthenticated) requests, per source address.
    unauthenticated: Unauthenticated,
    /// In a fleet: what every node records (audit chains, last uses),
    /// which `audit`, `audit verify` and `secret dependents` read besides
    /// this store's own.
    fleet_records: Option<Arc<dyn FleetRecords>>,
}

/// Where a running node's status comes from.
type StatusSource = Box<dyn Fn() -> NodeStatus + Send + Sync>;

/// Refused requests one source address may make per window before they are
/// answered 429 (a valid token still works).
pub(super) const UNAUTHENTICATED_PER_WINDOW: u64 = 60;
/// The window, in seconds.
pub(super) const UNAUTHENTICATED_WINDOW_SECS: i64 = 60;

/// How long reading the fleet's audit trail waits for this replica's own
/// newest records to reach it first.
const DELIVER_BEFORE_READING: std::time::Duration = std::time::Duration::from_secs(2);

/// How many deploys the gate may refuse one deployer token in
/// [`GATE_WINDOW_SECS`]; past it, its deploys get 429 without a scan.
pub(super) const GATE_REFUSALS_PER_WINDOW: usize = 5;
/// The window [`GATE_REFUSALS_PER_WINDOW`] counts over, in seconds.
pub(super) const GATE_WINDOW_SECS: i64 = 600;

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

/// What the store's refusal means for the caller.
fn from_store(e: StoreError) -> AdminError {
    let kind = match &e {
        StoreError::UnknownSecret(_)
        | StoreError::UnknownFunction(_)
        | StoreError::UnknownGrant { .. }
        | StoreError::UnknownVersion { .. }
        | StoreError::UnknownToken(_) => ErrorKind::NotFound,
        StoreError::HasDependents { .. }
        | StoreError::AlreadyCurrent { .. }
        | StoreError::RouteTaken { .. }
        | StoreError::TokenNameTaken(_)
        | StoreError::TokenAlreadyRevoked(_)
        | StoreError::DigestMismatch { .. }
        | StoreError::Integrity { .. }
        | StoreError::MasterKeyInForce => ErrorKind::Conflict,
        StoreError::WrongMasterKey
        | StoreError::Tampered { .. }
        | StoreError::ClusterUnavailable(_)
        | StoreError::ClusterOutcomeUnknown(_)
        | StoreError::Cluster(_)
        | StoreError::FleetConflict { .. } => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    };
    AdminError::new(kind, chain_message(&e))
}

/// What the deploy gate's refusal means for the deployer.
fn from_deploy(e: DeployError) -> AdminError {
    let kind = match &e {
        DeployError::Store(StoreError::RouteTaken { .. }) => ErrorKind::Conflict,
        DeployError::Store(
            StoreError::WrongMasterKey
            | StoreError::ClusterUnavailable(_)
            | StoreError::ClusterOutcomeUnknown(_)
            | StoreError::Cluster(_)
            | StoreError::FleetConflict { .. },
        ) => ErrorKind::Unavailable,
        DeployError::Store(_) => ErrorKind::Internal,
        DeployError::Manifest(_) => ErrorKind::BadRequest,
        _ => ErrorKind::Unprocessable,
    };
    AdminError::new(kind, chain_message(&e))
}

fn reply(value: impl Serialize) -> Result<Value, AdminError> {
    serde_json::to_value(value)
        .map_err(|e| AdminError::new(ErrorKind::Internal, format!("cannot encode the reply: {e}")))
}

/// The caller's own token as `GET /v1/whoami` describes it.
fn who_am_i(caller: &Caller) -> WhoAmI {
    let role = caller.role();
    let (functions, routes) = match caller {
        Caller::Local => Default::default(),
        Caller::Token { scope, routes, .. } => (scope.clone(), routes.clone()),
    };
    WhoAmI {
        name: caller.name().to_owned(),
        role,
        permissions: Permission::ALL
            .iter()
            .filter(|p| role.allows(**p))
            .map(|p| p.as_str().to_owned())
            .collect(),
        functions,
        routes,
    }
}

fn valid_name(kind: &'static str, name: &str) -> Result<(), AdminError> {
    names::validate(kind, name).map_err(|e| AdminError::bad_request(e.to_string()))
}

impl Admin {
    /// The admin actions over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            runtime: OnceLock::new(),
            compiled_cache: None,
            gate_refusals: GateRefusals::default(),
            unauthenticated: Unauthenticated::default(),
            status: None,
            fleet_records: None,
        }
    }

    /// The same, for a fleet's replica: `audit` lists the fleet's merged
    /// trail, `audit verify` checks every node's chain in it too, and
    /// `secret dependents` shows the last uses any node recorded.
    pub fn with_fleet_records(mut self, trail: Arc<dyn FleetRecords>) -> Self {
        self.fleet_records = Some(trail);
        self
    }

    /// Delivers this replica's own records before the fleet's trail is
    /// read, so they are in it. Records that cannot go yet wait in the
    /// replica and are missing from what is read (`keyhole status` counts
    /// them; the replica's own chain lists them without `--cluster`).
    fn deliver_own_records(trail: &dyn FleetRecords) {
        if let Err(e) = trail.deliver(DELIVER_BEFORE_READING) {
            tracing::debug!(
                "audit: this replica's newest records are not in the fleet's trail yet: {e}"
            );
        }
    }

    /// The same, answering `status` with what `source` says of the running
    /// node (without it: what the store holds, as for a data directory).
    pub fn with_status(mut self, source: impl Fn() -> NodeStatus + Send + Sync + 'static) -> Self {
        self.status = Some(Box::new(source));
        self
    }

    /// The running node's status, or the store's when no node runs here.
    fn status(&self) -> Result<NodeStatus, AdminError> {
        if let Some(source) = &self.status {
            return Ok(source());
        }
        Ok(NodeStatus {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            running: false,
            functions: self.store.functions().map_err(from_store)?.len(),
            revision: Some(self.store.revision().map_err(from_store)?),
            fleet: None,
            load_error: None,
        })
    }

    /// The same, keeping what it compiles in `dir` (the data directory's
    /// compiled-component cache) when it makes its own runtime.
    pub fn with_compiled_cache(mut self, dir: std::path::PathBuf) -> Self {
        self.compiled_cache = Some(dir);
        self
    }

    /// The same, checking deployed components with `runtime` (a node's own).
    pub fn with_runtime(self, runtime: Arc<Runtime>) -> Self {
        let _ = self.runtime.set(runtime);
        self
    }

    fn runtime(&self) -> Result<&Arc<Runtime>, AdminError> {
        if let Some(runtime) = self.runtime.get() {
            return Ok(runtime);
        }
        let instances = crate::engine::runtime::COMPILE_ONLY_INSTANCES;
        let runtime = match &self.compiled_cache {
            Some(dir) => Runtime::for_store(&*self.store, dir.clone(), instances),
            None => Runtime::with_max_instances(instances),
        }
        .map_err(|e| {
            AdminError::new(
                ErrorKind::Internal,
                format!("cannot start the runtime: {e:#}"),
            )
        })?;
        Ok(self.runtime.get_or_init(|| Arc::new(runtime)))
    }

    /// The store acted on.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The same, closing windows of refused requests after `secs` seconds
    /// instead of a minute (for tests that cannot wait).
    pub fn with_refusal_window(mut self, secs: i64) -> Self {
        self.unauthenticated.window_secs = secs.max(1);
        self
    }

    /// Appends `event` as refused with `e` to the audit trail.
    fn record_denied(&self, mut event: AdminEvent, e: &AdminError) -> Result<(), StoreError> {
        event.outcome = "denied".into();
        event.detail = Some(e.message.clone());
        self.store.append_audit(&[Timed {
            at_ms: now_ms(),
            event: Event::Admin(Box::new(event)),
        }])
    }

    /// Checks `caller` may make `request`, runs it, and records it in the
    /// audit trail before returning; the reply is JSON.
    pub fn handle(&self, caller: &Caller, request: Request) -> Result<Value, AdminError> {
        let described = request.describe();
        let event = AdminEvent {
            token: caller.name().to_owned(),
            role: caller.role().as_str().to_owned(),
            action: described.action.to_owned(),
            target: described.target.clone(),
            function: described.function.clone(),
            secret: described.secret.clone(),
            outcome: "ok".into(),
            detail: None,
        };
        let refusal = if !caller.role().allows(described.permission) {
            Some(AdminError::forbidden(caller, described.permission))
        } else if described.permission == Permission::FunctionsDeploy
            && match described.function.as_deref() {
                Some(function) => !caller.covers(function),
                // A manifest without a readable name deploys nothing; a
                // scoped token is refused rather than trusted with it.
                None => caller.is_scoped(),
            }
        {
            Some(AdminError::new(
                ErrorKind::Forbidden,
                format!(
                    "token `{}` may deploy only functions matching {}, not `{}`",
                    caller.name(),
                    scope_of(caller),
                    described.function.as_deref().unwrap_or("?")
                ),
            ))
        } else {
            None
        };
        if let Some(e) = refusal {
            self.record_denied(event, &e)
                .map_err(|err| AdminError::new(ErrorKind::Internal, chain_message(&err)))?;
            return Err(e);
        }
        crate::store::audited(&*self.store, event, |record| {
            self.execute(caller, request, record)
        })
        .map_err(|e| AdminError::new(ErrorKind::Internal, chain_message(&e)))?
    }

    fn execute(
        &self,
        caller: &Caller,
        request: Request,
        record: &AdminRecord,
    ) -> Result<Value, AdminError> {
        let store = &*self.store;
        match request {
            Request::PutSecret { name, body } => reply(self.put(&name, body, record)?),
            Request::RotateSecret { name, body } => reply(self.rotate(&name, body, record)?),
            Request::ListSecrets => {
                let now = now();
                let listing: Vec<SecretListing> = store
                    .list_secrets()
                    .map_err(from_store)?
                    .into_iter()
                    .map(|info| SecretListing {
                        overdue: info.overdue(now),
                        info,
                    })
                    .collect();
                reply(listing)
            }
            Request::Versions { name } => reply(store.versions(&name).map_err(from_store)?),
            Request::Rollback { name, body } => {
                let grace = grace(body.grace_secs)?;
                let done = store
                    .rollback(&name, body.to, grace, record)
                    .map_err(from_store)?;
                let kind = store.secret(&name).map_err(from_store)?.kind;
                reply(self.change(&name, done.to, None, kind, Some(done.from), grace)?)
            }
            Request::Dependents { name } => {
                let mut dependents = store.dependents(&name).map_err(from_store)?;
                if let Some(fleet) = &self.fleet_records {
                    // Every node's last uses; cut off from the fleet, this
                    // replica's own (the reply is still right about grants).
                    match fleet.last_uses(&name) {
                        Ok(marks) => crate::store::fleet::merge_last_uses(&mut dependents, &marks),
                        Err(e) => tracing::warn!(
                            "secret dependents: other nodes' last uses are not known now: {e}"
                        ),
                    }
                }
                reply(dependents)
            }
            Request::RemoveSecret { name, force } => {
                let removed = store
                    .remove_secret(&name, force, record)
                    .map_err(from_store)?;
                reply(SecretRemoved {
                    name,
                    versions: removed.versions,
                    dangling_grants: removed.dangling_grants,
                })
            }
            Request::Check => {
                let report = store.check_all().map_err(from_store)?;
                reply(CheckResult {
                    checked: report.checked,
                    failed: report.failed,
                    forged: report.forged,
                    state: report.state,
                })
            }
            Request::Deploy(body) => reply(self.deploy(caller, body, record)?),
            Request::Undeploy { function } => {
                self.may_take(caller, &function, "undeploy")?;
                let grants = store.undeploy(&function, record).map_err(from_store)?;
                reply(Undeployed { function, grants })
            }
            Request::Functions => reply(self.functions(caller)?),
            Request::Grant {
                function,
                binding,
                body,
            } => reply(self.grant(function, binding, body, record)?),
            Request::Approve { function, body } => {
                if let Some(digest) = &body.digest {
                    check_digest_prefix(digest)?;
                }
                let function = store
                    .approve(&function, body.digest.as_deref(), record)
                    .map_err(from_store)?;
                reply(Approved { function })
            }
            Request::Revoke { function, binding } => reply(
                store
                    .revoke(&function, &binding, record)
                    .map_err(from_store)?,
            ),
            Request::Grants { function } => {
                reply(store.grants(function.as_deref()).map_err(from_store)?)
            }
            Request::CreateToken(body) => reply(self.create_token(caller, body, record)?),
            Request::Tokens => reply(store.tokens().map_err(from_store)?),
            Request::RevokeToken { name } => {
                reply(store.revoke_token(&name, record).map_err(from_store)?)
            }
            Request::Audit(query) => match &self.fleet_records {
                Some(trail) => {
                    Self::deliver_own_records(&**trail);
                    reply(trail.fleet_entries(&query).map_err(from_store)?)
                }
                None => reply(store.audit_entries(&query).map_err(from_store)?),
            },
            Request::AuditVerify => {
                let mut verification = store.verify_audit().map_err(from_store)?;
                if let Some(trail) = &self.fleet_records {
                    Self::deliver_own_records(&**trail);
                    verification.nodes = trail.verify_fleet().map_err(from_store)?;
                }
                reply(verification)
            }
            Request::Status => reply(self.status()?),
            Request::WhoAmI => reply(who_am_i(caller)),
            Request::AuditPrune { older_than_secs } => {
                if older_than_secs == 0 {
                    return Err(AdminError::bad_request(
                        "`older_than_secs` must be at least 1: pruning keeps records younger than that",
                    ));
                }
                let age_ms =
                    i64::try_from(older_than_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
                let before_ms = now_ms().saturating_sub(age_ms);
                reply(store.prune_audit(before_ms, record).map_err(from_store)?)
            }
        }
    }
}
