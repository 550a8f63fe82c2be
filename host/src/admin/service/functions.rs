//! Deploying and listing functions: the deploy gate's refusals limited per
//! token and recorded, routes and scopes checked, bindings shown as the
//! caller may see them.

use super::*;

/// Recent gate refusals per deployer token: each refusal tells a deployer
/// that one of its own functions' secrets is in the upload, so they are
/// few and far between.
#[derive(Default)]
pub(super) struct GateRefusals(std::sync::Mutex<std::collections::HashMap<String, Vec<i64>>>);

impl GateRefusals {
    /// 429 while `token` has used up its refusals.
    pub(super) fn check(&self, token: &str) -> Result<(), AdminError> {
        let now = now();
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let recent = all.entry(token.to_owned()).or_default();
        recent.retain(|at| now - at < GATE_WINDOW_SECS);
        if recent.len() >= GATE_REFUSALS_PER_WINDOW {
            let wait = GATE_WINDOW_SECS - (now - recent[0]);
            return Err(AdminError::new(
                ErrorKind::TooManyRequests,
                format!(
                    "token `{token}` had {GATE_REFUSALS_PER_WINDOW} deploys refused for carrying credentials in the last {} minutes; try again in {wait} s",
                    GATE_WINDOW_SECS / 60
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn refused(&self, token: &str) {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.entry(token.to_owned()).or_default().push(now());
    }
}

/// Refuses a digest prefix too short (or not hex) to name one component.
pub(super) fn check_digest_prefix(digest: &str) -> Result<(), AdminError> {
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

/// A deployer sees whether a binding is granted, not which secret it got.
pub(super) fn shown_state(caller: &Caller, state: BindingState) -> BindingState {
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

pub(super) fn scope_of(caller: &Caller) -> FunctionScope {
    match caller {
        Caller::Local => FunctionScope::default(),
        Caller::Token { scope, .. } => scope.clone(),
    }
}

impl Admin {
    /// Records in the audit trail what the deploy gate found of stored
    /// values in a deployer's upload (`what`, in full: names are for
    /// whoever reads the trail), `clean` included.
    pub(super) fn record_probe(&self, caller: &Caller, function: &str, outcome: &str, what: &str) {
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
            Err(err) => AdminError::new(ErrorKind::Internal, chain_message(&err)),
        })
    }

    pub(super) fn deploy(
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
                ErrorKind::Forbidden,
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
                ErrorKind::Forbidden,
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
        // Past the gate: its compilation is kept for every later load, and
        // kept before the store commits, so that a node sharing this data
        // directory that sees the deployment at once loads it from the
        // cache instead of compiling it again. Should the commit fail, the
        // entry goes again (if another function runs the same component,
        // that costs its next load a compilation, nothing else).
        let sha256 = &deployment.info.component_sha256;
        self.runtime()?.remember(sha256, &compiled);
        let may_nest = |owner: &str, routes: &[String]| caller.may_deploy(owner, routes);
        let stored = deploy::store(&*self.store, &deployment, &may_nest, record);
        if stored.is_err() {
            self.runtime()?.forget(sha256);
        }
        let report = stored.map_err(|e| match e {
            DeployError::Store(nested @ StoreError::RouteNested { .. }) => AdminError::new(
                ErrorKind::Forbidden,
                format!("token `{}`: {nested}; nothing was deployed", caller.name()),
            ),
            other => from_deploy(other),
        })?;
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
    pub(super) fn may_take(
        &self,
        caller: &Caller,
        name: &str,
        verb: &str,
    ) -> Result<(), AdminError> {
        let functions = self.store.functions().map_err(from_store)?;
        match functions.iter().find(|f| f.name == name) {
            Some(existing) if !caller.may_deploy(&existing.name, &existing.routes) => {
                Err(AdminError::new(
                    ErrorKind::Forbidden,
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

    pub(super) fn functions(&self, caller: &Caller) -> Result<Vec<FunctionListing>, AdminError> {
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
}
