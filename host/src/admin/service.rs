//! The admin actions themselves, over the store.

use super::types::*;
use super::{AdminError, Request, chain_message};
use crate::admin::access::{Caller, FunctionScope, NewToken, Permission, PresentedToken, Role};
use crate::audit::{AdminEvent, Event, Timed, now_ms};
use crate::crypto::keys::KeyKind;
use crate::deploy::scan;
use crate::deploy::{self, BindingState, DeployError, Disclosure};
use crate::engine::runtime::Runtime;
use crate::names;
use crate::operations::Operation;
use crate::store::{
    AdminRecord, Grant, MIN_DIGEST_HEX, MaxAgeChange, NewVersion, Store, StoreError, TokenInfo, now,
};
use base64::Engine as _;
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
    /// Refused (unauthenticated) requests, per source address.
    unauthenticated: Unauthenticated,
}

/// Refused requests one source address may make per window before they are
/// answered 429 (a valid token still works).
pub(super) const UNAUTHENTICATED_PER_WINDOW: u64 = 60;
/// The window, in seconds.
pub(super) const UNAUTHENTICATED_WINDOW_SECS: i64 = 60;
/// Source addresses tracked at once; past it the oldest windows are closed.
const UNAUTHENTICATED_SOURCES: usize = 4096;

/// One source address's refusals in its current window.
struct RefusalWindow {
    started: i64,
    refused: u64,
    /// Refusals not yet in the audit trail (each window's first is).
    unrecorded: u64,
}

/// Refused requests per source address: each window costs at most one
/// durable record, and one more for the count of the rest when it closes;
/// past [`UNAUTHENTICATED_PER_WINDOW`] they are answered 429.
struct Unauthenticated {
    windows: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, RefusalWindow>>,
    window_secs: i64,
}

impl Default for Unauthenticated {
    fn default() -> Self {
        Self {
            windows: Default::default(),
            window_secs: UNAUTHENTICATED_WINDOW_SECS,
        }
    }
}

/// How many deploys the gate may refuse one deployer token in
/// [`GATE_WINDOW_SECS`]; past it, its deploys get 429 without a scan.
pub(super) const GATE_REFUSALS_PER_WINDOW: usize = 5;
/// The window [`GATE_REFUSALS_PER_WINDOW`] counts over, in seconds.
pub(super) const GATE_WINDOW_SECS: i64 = 600;

/// Recent gate refusals per deployer token: each refusal tells a deployer
/// that one of its own functions' secrets is in the upload, so they are
/// few and far between.
#[derive(Default)]
struct GateRefusals(std::sync::Mutex<std::collections::HashMap<String, Vec<i64>>>);

impl GateRefusals {
    /// 429 while `token` has used up its refusals.
    fn check(&self, token: &str) -> Result<(), AdminError> {
        let now = now();
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let recent = all.entry(token.to_owned()).or_default();
        recent.retain(|at| now - at < GATE_WINDOW_SECS);
        if recent.len() >= GATE_REFUSALS_PER_WINDOW {
            let wait = GATE_WINDOW_SECS - (now - recent[0]);
            return Err(AdminError::new(
                429,
                format!(
                    "token `{token}` had {GATE_REFUSALS_PER_WINDOW} deploys refused for carrying credentials in the last {} minutes; try again in {wait} s",
                    GATE_WINDOW_SECS / 60
                ),
            ));
        }
        Ok(())
    }

    fn refused(&self, token: &str) {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.entry(token.to_owned()).or_default().push(now());
    }
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

/// What the store's refusal means for the caller, as an HTTP status.
fn from_store(e: StoreError) -> AdminError {
    let status = match &e {
        StoreError::UnknownSecret(_)
        | StoreError::UnknownFunction(_)
        | StoreError::UnknownGrant { .. }
        | StoreError::UnknownVersion { .. }
        | StoreError::UnknownToken(_) => 404,
        StoreError::HasDependents { .. }
        | StoreError::AlreadyCurrent { .. }
        | StoreError::RouteTaken { .. }
        | StoreError::TokenNameTaken(_)
        | StoreError::TokenAlreadyRevoked(_)
        | StoreError::DigestMismatch { .. }
        | StoreError::Integrity { .. } => 409,
        StoreError::WrongMasterKey | StoreError::Tampered { .. } => 503,
        _ => 500,
    };
    AdminError::new(status, chain_message(&e))
}

fn from_deploy(e: DeployError) -> AdminError {
    let status = match &e {
        DeployError::Store(StoreError::RouteTaken { .. }) => 409,
        DeployError::Store(StoreError::WrongMasterKey) => 503,
        DeployError::Store(_) => 500,
        DeployError::Manifest(_) => 400,
        _ => 422,
    };
    AdminError::new(status, chain_message(&e))
}

/// Refuses a digest prefix too short (or not hex) to name one component.
fn check_digest_prefix(digest: &str) -> Result<(), AdminError> {
    if digest.len() < MIN_DIGEST_HEX
        || digest.len() > 64
        || !digest.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(AdminError::bad_request(format!(
            "--digest needs {MIN_DIGEST_HEX} to 64 hex digits of the component's SHA-256 (`keyhole functions --json` shows it whole): a shorter prefix can be matched by other code"
        )));
    }
    Ok(())
}

fn reply(value: impl Serialize) -> Result<Value, AdminError> {
    serde_json::to_value(value)
        .map_err(|e| AdminError::new(500, format!("cannot encode the reply: {e}")))
}

fn max_age(secs: Option<i64>) -> Result<MaxAgeChange, AdminError> {
    match secs {
        None => Ok(MaxAgeChange::Keep),
        Some(0) => Ok(MaxAgeChange::Clear),
        Some(s) if s > 0 => Ok(MaxAgeChange::Set(s)),
        Some(_) => Err(AdminError::bad_request(
            "`max_age_secs` must be positive (or 0 to remove the maximum age)",
        )),
    }
}

fn grace(secs: Option<i64>) -> Result<Option<i64>, AdminError> {
    match secs {
        Some(s) if s <= 0 => Err(AdminError::bad_request(
            "`grace_secs` must be at least one second",
        )),
        other => Ok(other),
    }
}

fn valid_name(kind: &'static str, name: &str) -> Result<(), AdminError> {
    names::validate(kind, name).map_err(|e| AdminError::bad_request(e.to_string()))
}

/// Refuses a value that is not a `kind` key, without echoing it.
fn check_kind(
    kind: KeyKind,
    value: &crate::crypto::secret_value::SecretValue,
) -> Result<(), AdminError> {
    kind.validate(value.expose()).map_err(|e| {
        let hint = if kind == KeyKind::Aes256 {
            "\nhint: give the 32 raw key bytes, not hex or base64 text (standard input loses one trailing newline; pass raw bytes with --from-file)"
        } else {
            ""
        };
        AdminError::new(
            422,
            format!("not a valid {kind} key: {e}; nothing was stored{hint}"),
        )
    })
}

/// A new value for a secret, as a put or a rotation asks for it.
struct NewValue {
    value: WireValue,
    kind: KeyKind,
    grace: Option<i64>,
    max_age_secs: Option<i64>,
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
        }
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
        .map_err(|e| AdminError::new(500, format!("cannot start the runtime: {e:#}")))?;
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

    /// Who presents `authorization` (an HTTP `Authorization` header value)
    /// in a request from `ip`: 401 for a missing, malformed, unknown,
    /// revoked or expired token. Refusals are recorded in the audit trail,
    /// one record per source address and window (the rest counted into one
    /// more when it closes), and past `UNAUTHENTICATED_PER_WINDOW` (60) of
    /// them they are answered 429. A valid token is never limited.
    pub fn authenticate(
        &self,
        ip: std::net::IpAddr,
        authorization: Option<&[u8]>,
    ) -> Result<Caller, AdminError> {
        let now = now();
        let window_secs = self.unauthenticated.window_secs;
        let mut closed = Vec::new();
        {
            let mut windows = self
                .unauthenticated
                .windows
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            // Windows that ended are written as one record each.
            let over_capacity = windows.len() >= UNAUTHENTICATED_SOURCES;
            windows.retain(|ip, w| {
                let ended = now - w.started >= window_secs || over_capacity;
                if ended && w.unrecorded > 0 {
                    closed.push((*ip, w.started, w.unrecorded));
                }
                !ended
            });
        };
        for (ip, started, count) in closed {
            self.record_refusals(
                &format!("source/{ip}"),
                format!(
                    "{count} more refused request(s) from {ip} in the {window_secs} s from {} (coalesced)",
                    crate::audit::format_time(started)
                ),
            );
        }
        // A valid token is never limited: only refusals are counted.
        let result = self.check_token(authorization);
        let Err(e) = &result else {
            return result;
        };
        let (first, wait) = {
            let mut windows = self
                .unauthenticated
                .windows
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let w = windows.entry(ip).or_insert(RefusalWindow {
                started: now,
                refused: 0,
                unrecorded: 0,
            });
            w.refused += 1;
            if w.refused > 1 {
                w.unrecorded += 1;
            }
            let over = w.refused > UNAUTHENTICATED_PER_WINDOW;
            (
                w.refused == 1,
                over.then(|| window_secs - (now - w.started)),
            )
        };
        if first {
            self.record_refusals("token", format!("{} (from {ip})", e.message));
        }
        match wait {
            Some(wait) => Err(AdminError::new(
                429,
                format!(
                    "too many refused requests from {ip}: at most {UNAUTHENTICATED_PER_WINDOW} in {window_secs} s; try again in {} s",
                    wait.max(1)
                ),
            )),
            None => result,
        }
    }

    /// Records a refused authentication (or a window of them) in the trail.
    fn record_refusals(&self, target: &str, detail: String) {
        let event = AdminEvent {
            token: "(unauthenticated)".into(),
            role: "-".into(),
            action: "authenticate".into(),
            target: target.into(),
            function: None,
            secret: None,
            outcome: "denied".into(),
            detail: Some(detail),
        };
        // Refused either way; a trail that cannot take the record is logged.
        if let Err(err) = self.store.append_audit(&[Timed {
            at_ms: now_ms(),
            event: Event::Admin(Box::new(event)),
        }]) {
            tracing::error!("cannot record a refused admin request in the audit trail: {err}");
        }
    }

    fn check_token(&self, authorization: Option<&[u8]>) -> Result<Caller, AdminError> {
        let unauthorized = |m: &str| AdminError::new(401, m);
        let header = authorization.ok_or_else(|| {
            unauthorized("no bearer token: send `Authorization: Bearer <token>` (the CLI reads KEYHOLE_TOKEN)")
        })?;
        let token = std::str::from_utf8(header)
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| unauthorized("the Authorization header is not `Bearer <token>`"))?;
        let presented = PresentedToken::parse(token)
            .ok_or_else(|| unauthorized("not a Keyhole token (they look like kh_<id>_<secret>)"))?;
        let (info, hash) = self
            .store
            .token_by_id(presented.id)
            .map_err(from_store)?
            .filter(|(_, hash)| presented.matches(hash))
            .ok_or_else(|| unauthorized("unknown token"))?;
        drop(hash);
        // Only now, for a token that matched, is the whole store verified: a
        // forged or restored token row must not act, and a caller without a
        // token cannot make the node do this work. Details stay in the log.
        self.store.verify_integrity().map_err(|e| {
            tracing::error!("refusing admin requests: {e}");
            AdminError::new(
                503,
                "the store failed its integrity check; an operator runs `keyhole check` on the node",
            )
        })?;
        if let Some(at) = info.revoked_at {
            return Err(unauthorized(&format!(
                "token `{}` was revoked at {}",
                info.name,
                crate::audit::format_time(at)
            )));
        }
        if let Some(at) = info.expires_at.filter(|at| now() >= *at) {
            return Err(unauthorized(&format!(
                "token `{}` expired at {}",
                info.name,
                crate::audit::format_time(at)
            )));
        }
        Ok(Caller::Token {
            name: info.name,
            role: info.role,
            scope: info.functions,
            routes: info.routes,
        })
    }

    /// Records in the audit trail what the deploy gate found of stored
    /// values in a deployer's upload (`what`, in full: names are for
    /// whoever reads the trail), `clean` included.
    fn record_probe(&self, caller: &Caller, function: &str, outcome: &str, what: &str) {
        if outcome != "clean" {
            tracing::warn!(
                token = %caller.name(),
                function = %function.escape_debug(),
                "a deployer's component carries the value of a stored secret (deploy {outcome}; see the audit trail)"
            );
        }
        let event = AdminEvent {
            token: caller.name().to_owned(),
            role: caller.role().as_str().to_owned(),
            action: "deploy.gate".into(),
            target: format!("function/{function}"),
            function: Some(function.to_owned()),
            secret: None,
            outcome: outcome.into(),
            detail: Some(format!("stored values in the upload: {what}")),
        };
        if let Err(e) = self.store.append_audit(&[Timed {
            at_ms: now_ms(),
            event: Event::Admin(Box::new(event)),
        }]) {
            tracing::error!("cannot record a deploy probe in the audit trail: {e}");
        }
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

    /// Refuses a deploy by a `caller` who may not deploy, from the request's
    /// headers alone (its body, up to 64 MiB, is never read), recording the
    /// refusal as [`Admin::handle`] would; `None` when the caller may.
    pub fn refuse_unread_deploy(&self, caller: &Caller) -> Option<AdminError> {
        if caller.role().allows(Permission::FunctionsDeploy) {
            return None;
        }
        let e = AdminError::forbidden(caller, Permission::FunctionsDeploy);
        let event = AdminEvent {
            token: caller.name().to_owned(),
            role: caller.role().as_str().to_owned(),
            action: "function.deploy".into(),
            target: "function/?".into(),
            function: None,
            secret: None,
            outcome: "denied".into(),
            detail: None,
        };
        Some(match self.record_denied(event, &e) {
            Ok(()) => e,
            Err(err) => AdminError::new(500, chain_message(&err)),
        })
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
                403,
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
                .map_err(|err| AdminError::new(500, chain_message(&err)))?;
            return Err(e);
        }
        crate::store::audited(&*self.store, event, |record| {
            self.execute(caller, request, record)
        })
        .map_err(|e| AdminError::new(500, chain_message(&e)))?
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
            Request::Dependents { name } => reply(store.dependents(&name).map_err(from_store)?),
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
            Request::Audit(query) => reply(store.audit_entries(&query).map_err(from_store)?),
            Request::AuditVerify => reply(store.verify_audit().map_err(from_store)?),
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

    fn put(
        &self,
        name: &str,
        body: PutSecret,
        record: &AdminRecord,
    ) -> Result<VersionChange, AdminError> {
        valid_name("secret", name)?;
        let current_kind = match self.store.secret(name) {
            Ok(info) => Some(info.kind),
            Err(StoreError::UnknownSecret(_)) => None,
            Err(e) => return Err(from_store(e)),
        };
        let kind = body.kind.or(current_kind).unwrap_or_default();
        self.add_version(
            name,
            NewValue {
                value: body.value,
                kind,
                grace: None,
                max_age_secs: body.max_age_secs,
            },
            false,
            record,
        )
    }

    fn rotate(
        &self,
        name: &str,
        body: RotateSecret,
        record: &AdminRecord,
    ) -> Result<VersionChange, AdminError> {
        let kind = self.store.secret(name).map_err(from_store)?.kind;
        let grace = grace(body.grace_secs)?;
        self.add_version(
            name,
            NewValue {
                value: body.value,
                kind,
                grace,
                max_age_secs: body.max_age_secs,
            },
            true,
            record,
        )
    }

    /// Stores `new.value` as the new current version of `name` (only of an
    /// existing secret when `rotate`), after checking it is a `new.kind` key.
    fn add_version(
        &self,
        name: &str,
        new: NewValue,
        rotate: bool,
        record: &AdminRecord,
    ) -> Result<VersionChange, AdminError> {
        let NewValue {
            value,
            kind,
            grace,
            max_age_secs,
        } = new;
        let value = value.0;
        if value.is_empty() {
            return Err(AdminError::bad_request(
                "the value is empty; nothing was stored",
            ));
        }
        check_kind(kind, &value)?;
        let new = NewVersion {
            value: &value,
            kind,
            grace,
            max_age: max_age(max_age_secs)?,
        };
        let stored = if rotate {
            self.store.rotate_secret(name, &new, record)
        } else {
            self.store.put_secret(name, &new, record)
        }
        .map_err(from_store)?;
        self.change(
            name,
            stored.version,
            Some(value.len()),
            kind,
            stored.replaced,
            grace,
        )
    }

    /// Describes a new current version and the grants it reaches.
    fn change(
        &self,
        name: &str,
        version: u32,
        bytes: Option<usize>,
        kind: KeyKind,
        replaced: Option<u32>,
        grace: Option<i64>,
    ) -> Result<VersionChange, AdminError> {
        let affected = match replaced {
            Some(_) => self.store.dependents(name).map_err(from_store)?,
            None => Vec::new(),
        };
        Ok(VersionChange {
            name: name.to_owned(),
            version,
            bytes,
            kind,
            replaced,
            grace_until: replaced.and(grace).map(|secs| now() + secs),
            affected,
        })
    }

    fn deploy(
        &self,
        caller: &Caller,
        body: Deploy,
        record: &AdminRecord,
    ) -> Result<Deployed, AdminError> {
        let component = base64::engine::general_purpose::STANDARD
            .decode(body.component_base64.as_bytes())
            .map_err(|_| {
                AdminError::bad_request("`component_base64` is not valid standard base64")
            })?;
        let deploy::Prepared {
            deployment,
            component_path,
            compiled,
        } = deploy::prepare_upload(
            self.runtime()?,
            &body.manifest,
            Path::new(&body.manifest_path),
            component,
        )
        .map_err(from_deploy)?;
        if !caller.covers(&deployment.info.name) {
            return Err(AdminError::new(
                403,
                format!(
                    "token `{}` may not deploy function `{}`",
                    caller.name(),
                    deployment.info.name
                ),
            ));
        }
        self.may_take(caller, &deployment.info.name, "replace")?;
        if let Some(route) = deployment
            .info
            .routes
            .iter()
            .find(|r| !caller.covers_route(r))
        {
            return Err(AdminError::new(
                403,
                format!(
                    "token `{}` may claim only routes under {}, not `{route}` (function `{}`)",
                    caller.name(),
                    caller.route_scope(),
                    deployment.info.name
                ),
            ));
        }
        let deployer = caller.role() == Role::Deployer;
        if deployer {
            self.gate_refusals.check(caller.name())?;
        }
        let stored = scan::stored_values(&*self.store).map_err(from_store)?;
        let warnings = if !deployer {
            stored
                .unreadable
                .iter()
                .map(|name| {
                    format!(
                        "secret `{name}` failed its integrity check and was not searched for (see `keyhole check`)"
                    )
                })
                .collect()
        } else if stored.unreadable.is_empty() {
            Vec::new()
        } else {
            // Names are for operators.
            vec![format!(
                "{} stored secret(s) failed their integrity check and were not searched for; tell an operator",
                stored.unreadable.len()
            )]
        };
        // A deployer learns where a stored value is only for the secrets
        // its own functions are bound to, and nothing of the rest.
        let bound: Vec<String> = if deployer {
            self.store
                .grants(None)
                .map_err(from_store)?
                .into_iter()
                .filter(|g| caller.covers(&g.function) || g.function == deployment.info.name)
                .map(|g| g.secret)
                .collect()
        } else {
            Vec::new()
        };
        let disclosure = |secret: &str| {
            if !deployer {
                Disclosure::Named
            } else if bound.iter().any(|b| b == secret) {
                Disclosure::Anonymous
            } else {
                Disclosure::Silent
            }
        };
        let full = |findings: &[scan::Finding]| {
            findings
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        };
        let gate = match deploy::gate(
            &deployment,
            &component_path,
            &stored.values,
            &body.allow_findings,
            &disclosure,
        ) {
            Ok(gate) => gate,
            Err(e) => {
                let stored_value = matches!(&e, DeployError::HardCodedSecrets { findings, .. }
                    if findings.iter().any(|f| f.kind == scan::FindingKind::StoredValue));
                if deployer
                    && stored_value
                    && let DeployError::HardCodedSecrets {
                        findings, withheld, ..
                    } = &e
                {
                    // Each such refusal answers a question about stored
                    // values: few are given, and operators see them whole.
                    self.gate_refusals.refused(caller.name());
                    let mut whole: Vec<scan::Finding> = findings
                        .iter()
                        .filter(|f| f.kind != scan::FindingKind::StoredValue)
                        .chain(withheld)
                        .cloned()
                        .collect();
                    whole.sort_by_key(|f| f.offset);
                    self.record_probe(caller, &deployment.info.name, "refused", &full(&whole));
                }
                return Err(from_deploy(e));
            }
        };
        drop(stored);
        if deployer {
            // Written whether or not anything matched, so a deploy takes as
            // long (one durable write more) either way.
            let (outcome, what) = if gate.probes.is_empty() {
                ("clean", "no stored value".to_owned())
            } else {
                ("flagged", full(&gate.probes))
            };
            self.record_probe(caller, &deployment.info.name, outcome, &what);
        }
        let may_nest = |owner: &str, routes: &[String]| caller.may_deploy(owner, routes);
        let report =
            deploy::store(&*self.store, &deployment, &may_nest, record).map_err(|e| match e {
                DeployError::Store(nested @ StoreError::RouteNested { .. }) => AdminError::new(
                    403,
                    format!("token `{}`: {nested}; nothing was deployed", caller.name()),
                ),
                other => from_deploy(other),
            })?;
        // Accepted and stored: worth compiling once for every later start.
        self.runtime()?
            .remember(&deployment.info.component_sha256, &compiled);
        let function = FunctionListing {
            binding_states: report
                .bindings
                .into_iter()
                .map(|(binding, operations, state)| BindingStatus {
                    binding,
                    operations,
                    state: shown_state(caller, state),
                })
                .collect(),
            info: report.info,
        };
        Ok(Deployed {
            function,
            allowed_findings: gate.allowed.iter().map(ToString::to_string).collect(),
            unused_allowances: gate.unused_allowances,
            warnings,
        })
    }

    /// Refuses to let `caller` `verb` (replace, undeploy) function `name`
    /// unless it may deploy that function as it stands: a name in scope is
    /// not enough when the routes it serves are not.
    fn may_take(&self, caller: &Caller, name: &str, verb: &str) -> Result<(), AdminError> {
        let functions = self.store.functions().map_err(from_store)?;
        match functions.iter().find(|f| f.name == name) {
            Some(existing) if !caller.may_deploy(&existing.name, &existing.routes) => {
                Err(AdminError::new(
                    403,
                    format!(
                        "token `{}` may not {verb} function `{name}`: it serves {}, outside the routes the token may claim ({})",
                        caller.name(),
                        existing.routes.join(", "),
                        caller.route_scope()
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    fn functions(&self, caller: &Caller) -> Result<Vec<FunctionListing>, AdminError> {
        let grants = self.store.grants(None).map_err(from_store)?;
        let functions = self.store.functions().map_err(from_store)?;
        Ok(functions
            .into_iter()
            .filter(|info| caller.role() != Role::Deployer || caller.covers(&info.name))
            .map(|info| {
                let mine: Vec<Grant> = grants
                    .iter()
                    .filter(|g| g.function == info.name)
                    .cloned()
                    .collect();
                let binding_states = info
                    .bindings
                    .iter()
                    .map(|b| BindingStatus {
                        binding: b.binding.clone(),
                        operations: b.operations,
                        state: shown_state(
                            caller,
                            deploy::binding_state(
                                &b.binding,
                                b.operations,
                                &mine,
                                &info.component_sha256,
                            ),
                        ),
                    })
                    .collect();
                FunctionListing {
                    info,
                    binding_states,
                }
            })
            .collect())
    }

    fn grant(
        &self,
        function: String,
        binding: String,
        body: GrantBody,
        record: &AdminRecord,
    ) -> Result<Granted, AdminError> {
        valid_name("binding", &binding)?;
        if body.allow.is_empty() {
            return Err(AdminError::bad_request(
                "name at least one operation to allow (hmac, sign, seal, inject, reveal)",
            ));
        }
        let injects = body.allow.contains(Operation::Inject);
        match (body.egress.is_empty(), injects) {
            (true, true) => {
                return Err(AdminError::bad_request(
                    "`inject` needs --egress: the hosts the secret may be sent to, e.g. --egress api.example.com",
                ));
            }
            (false, false) => {
                return Err(AdminError::bad_request(
                    "--egress applies only to the `inject` operation; add it to --allow or drop --egress",
                ));
            }
            _ => {}
        }
        let functions = self.store.functions().map_err(from_store)?;
        let Some(info) = functions.iter().find(|f| f.name == function) else {
            return Err(AdminError::new(
                404,
                format!("no function named `{function}` is deployed (see `keyhole functions`)"),
            ));
        };
        let Some(requested) = info.bindings.iter().find(|b| b.binding == binding) else {
            let known: Vec<&str> = info.bindings.iter().map(|b| b.binding.as_str()).collect();
            return Err(AdminError::new(
                409,
                format!(
                    "function `{function}` does not request binding `{binding}` in its manifest (it requests: {})",
                    if known.is_empty() {
                        "nothing".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        };
        let requested = requested.operations;
        if let Some(expected) = &body.digest {
            check_digest_prefix(expected)?;
        }
        if let Some(expected) = &body.digest
            && !info
                .component_sha256
                .starts_with(&expected.to_ascii_lowercase())
        {
            return Err(from_store(StoreError::DigestMismatch {
                function,
                expected: expected.clone(),
                actual: info.component_sha256.clone(),
            }));
        }
        let grant = Grant {
            digest: info.component_sha256.clone(),
            function,
            binding,
            secret: body.secret,
            allow: body.allow,
            egress: body.egress,
            follow_redeploys: body.follow_redeploys,
        };
        self.store.grant(&grant, record).map_err(from_store)?;
        Ok(Granted { grant, requested })
    }

    fn create_token(
        &self,
        caller: &Caller,
        body: CreateToken,
        record: &AdminRecord,
    ) -> Result<CreatedToken, AdminError> {
        if body.role != Role::Deployer && !body.functions.is_unlimited() {
            return Err(AdminError::bad_request(
                "--functions limits deployer tokens only; drop it or use --role deployer",
            ));
        }
        if body.role != Role::Deployer && !body.routes.is_unlimited() {
            return Err(AdminError::bad_request(
                "--routes limits deployer tokens only; drop it or use --role deployer",
            ));
        }
        let expires_at = match body.expires_secs {
            Some(secs) if secs <= 0 => {
                return Err(AdminError::bad_request(
                    "`expires_secs` must be at least one second",
                ));
            }
            Some(secs) => Some(now().saturating_add(secs)),
            None => None,
        };
        let new = NewToken::generate();
        let name = body
            .name
            .unwrap_or_else(|| format!("{}-{}", body.role, &new.id[..8]));
        valid_name("token", &name)?;
        let info = TokenInfo {
            id: new.id.clone(),
            name,
            role: body.role,
            functions: body.functions,
            routes: body.routes,
            created_at: now(),
            expires_at,
            revoked_at: None,
            created_by: caller.name().to_owned(),
        };
        self.store
            .create_token(&info, &new.hash, record)
            .map_err(from_store)?;
        Ok(CreatedToken {
            info,
            token: new.token.to_string(),
        })
    }
}

/// A deployer sees whether a binding is granted, not which secret it got.
fn shown_state(caller: &Caller, state: BindingState) -> BindingState {
    if caller.role() != Role::Deployer {
        return state;
    }
    const HIDDEN: &str = "(hidden)";
    match state {
        BindingState::Granted { .. } => BindingState::Granted {
            secret: HIDDEN.into(),
        },
        BindingState::Partial { missing, .. } => BindingState::Partial {
            secret: HIDDEN.into(),
            missing,
        },
        BindingState::AwaitingApproval { held, .. } => BindingState::AwaitingApproval {
            secret: HIDDEN.into(),
            held,
        },
        BindingState::Pending => BindingState::Pending,
    }
}

fn scope_of(caller: &Caller) -> FunctionScope {
    match caller {
        Caller::Local => FunctionScope::default(),
        Caller::Token { scope, .. } => scope.clone(),
    }
}
