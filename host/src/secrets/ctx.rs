//! A request's secrets state: what its function may reach, the handles it
//! opened, its allowance of refusals, and the copies `reveal` made.
//!
//! Invariant: this state dies with its request. A [`SecretsCtx`] is built
//! for one request from the function's [`FunctionSecrets`] (shared, read
//! only) and dropped with the request's store, taking its handles, tokens
//! and revealed copies (wiped) with it. Why: nothing one request opened
//! may be reached by the next.

use crate::audit::trail::Pressure;
use crate::audit::{FunctionEvent, OpOutcome};
use crate::crypto::AesKey;
use crate::crypto::keys::{self, KeyError};
use crate::crypto::material::SecretMaterial;
use crate::engine::bindings::secrets::Error;
use crate::node::observe::FunctionMetrics;
use crate::node::usage::UsageSlot;
use crate::operations::{Operation, OperationSet};
use crate::outbound::OutboundRules;
use crate::outbound::egress::EgressList;
use crate::outbound::injection::Injector;
use crate::redact::Redactor;
use crate::secrets::handle_slab::HandleSlab;
use crate::secrets::standing::{InForce, Stale, Withdrawn};
use crate::store::Timestamp;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use wasmtime::component::Resource;

/// The longest binding name `get` accepts, in bytes.
pub const MAX_BINDING_LEN: usize = crate::names::MAX_NAME_LEN;
/// How many secret handles one request may hold open at once.
pub const MAX_OPEN_HANDLES: usize = 1024;
/// How many refused operations (secret calls, injections, outgoing
/// requests) one request may make. Each is an audit record or a log line,
/// so without a cap one request could fill the disk; the secret call past
/// it ends the request (a trap) with one record saying so.
pub const MAX_REFUSED_PER_REQUEST: u32 = 100;

/// A request's allowance of refused operations, shared by its secret calls
/// and its outgoing requests.
#[derive(Debug, Default)]
pub struct RefusalBudget(AtomicU32);

/// Where a refusal leaves a request's [`RefusalBudget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Within the allowance: recorded as usual.
    Within,
    /// The first past it: recorded once more, saying the request ends.
    Exhausted,
    /// Past it already: counted, not recorded.
    Over,
}

impl RefusalBudget {
    /// Counts one refusal.
    pub fn spend(&self) -> Refusal {
        match self.0.fetch_add(1, Ordering::Relaxed).saturating_add(1) {
            n if n <= MAX_REFUSED_PER_REQUEST => Refusal::Within,
            n if n == MAX_REFUSED_PER_REQUEST + 1 => Refusal::Exhausted,
            _ => Refusal::Over,
        }
    }
}

/// The trap that ends a request past [`MAX_REFUSED_PER_REQUEST`].
#[derive(Debug, thiserror::Error)]
#[error(
    "more than {MAX_REFUSED_PER_REQUEST} refused operations in one request: the request was ended (a function probing for bindings or grants it does not have)"
)]
pub struct TooManyRefusals;

/// Added to the reason of the last refusal recorded for a request when an
/// outgoing request (not a secret call) spent its allowance: later
/// refusals are not recorded, and its next refused secret call ends it.
pub const LAST_RECORDED_REFUSAL: &str = concat!(
    "the request has now made its allowance of refused operations: ",
    "later refusals are neither recorded nor logged, and its next refused secret call ends it"
);

/// What one binding of one function resolves to right now.
#[derive(Debug, Clone)]
pub struct BoundSecret {
    /// The stored secret's name, for the audit trail.
    pub secret: Arc<str>,
    /// Operations allowed: the operator's grant, narrowed to what the
    /// function's manifest requested.
    pub allowed: OperationSet,
    /// Hosts an injected value may be sent to.
    pub egress: Arc<EgressList>,
    /// The current version, or `None` when the secret has no usable
    /// version (removed, or failed its integrity check).
    pub current: Option<Arc<SecretMaterial>>,
    /// Previous versions in their grace window, newest first: accepted by
    /// `verify-hmac-sha256` and `open` only.
    pub grace: Arc<[GraceVersion]>,
    /// Where this binding's uses are recorded.
    pub usage: Arc<UsageSlot>,
    /// Whether a later load has withdrawn any of this: checked at every
    /// call, so a revoke reaches requests already running.
    pub in_force: InForce,
}

/// A previous version that still verifies and decrypts until `until`.
#[derive(Debug)]
pub struct GraceVersion {
    /// The version's material.
    pub material: Arc<SecretMaterial>,
    /// When its grace window ends (seconds since the epoch).
    pub until: Timestamp,
}

impl GraceVersion {
    /// Whether the window is still open at `now`.
    pub(super) fn open_at(&self, now: Timestamp) -> bool {
        now < self.until
    }
}

/// The grace versions whose window is open now (reading the clock only if
/// there are any).
pub(super) fn in_grace(grace: &[GraceVersion]) -> impl Iterator<Item = &GraceVersion> {
    let now = if grace.is_empty() {
        0
    } else {
        crate::store::now()
    };
    grace.iter().filter(move |g| g.open_at(now))
}

/// Everything one function may reach through `keyhole:secrets`, by binding.
#[derive(Debug)]
pub struct FunctionSecrets {
    /// Sorted by name. A function has a handful of bindings, fixed while it
    /// is loaded: a binary search over them is a few short comparisons
    /// where hashing the guest's name would cost more.
    bindings: Vec<(String, Arc<Binding>)>,
    redactor: OnceLock<Redactor>,
    /// Where its outgoing requests may go.
    outbound: Arc<OutboundRules>,
    /// The SHA-256 of its component, for the audit trail.
    digest: Arc<str>,
}

/// A granted binding: its name and what it resolves to, shared by every
/// handle opened on it.
#[derive(Debug)]
pub(super) struct Binding {
    pub(super) name: Arc<str>,
    pub(super) bound: BoundSecret,
}

impl FunctionSecrets {
    /// The function's bindings, by name.
    pub fn new(bindings: HashMap<String, BoundSecret>) -> Self {
        let mut bindings: Vec<(String, Arc<Binding>)> = bindings
            .into_iter()
            .map(|(name, bound)| {
                let binding = Binding {
                    name: name.as_str().into(),
                    bound,
                };
                (name, Arc::new(binding))
            })
            .collect();
        bindings.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
        Self {
            bindings,
            redactor: OnceLock::new(),
            outbound: Arc::default(),
            digest: "".into(),
        }
    }

    /// The same, for the component with SHA-256 `digest` (which its audit
    /// records name).
    pub fn for_component(mut self, digest: &str) -> Self {
        self.digest = digest.into();
        self
    }

    /// The same, with outgoing requests allowed as `outbound` says (without
    /// it: nowhere but toward the egress lists of injected tokens).
    pub fn with_outbound(mut self, outbound: Arc<OutboundRules>) -> Self {
        self.outbound = outbound;
        self
    }

    /// What `binding` resolves to, if it is granted.
    pub fn get(&self, binding: &str) -> Option<&BoundSecret> {
        self.binding(binding).map(|b| &b.bound)
    }

    pub(super) fn binding(&self, name: &str) -> Option<&Arc<Binding>> {
        let found = self
            .bindings
            .binary_search_by(|(n, _)| n.as_str().cmp(name));
        found.ok().map(|i| &self.bindings[i].1)
    }

    /// A redactor for every value this function can open (and so print, or
    /// have injected), built on first use.
    pub fn redactor(&self) -> &Redactor {
        self.redactor.get_or_init(|| {
            let bound = self.bindings.iter().map(|(n, b)| (n, &b.bound));
            Redactor::new(bound.flat_map(|(name, b)| {
                let grace = b.grace.iter().map(|g| &g.material);
                b.current
                    .iter()
                    .chain(grace)
                    .map(move |m| (name.as_str(), m.value().expose()))
            }))
        })
    }
}

/// Per-request state of the secrets interface.
pub struct SecretsCtx {
    pub(super) function: Arc<str>,
    pub(super) request: u64,
    pub(super) bindings: Arc<FunctionSecrets>,
    pub(super) handles: HandleSlab<SecretHandle>,
    pub(super) injector: Injector,
    pub(super) metrics: Arc<FunctionMetrics>,
    pub(super) refusals: Arc<RefusalBudget>,
    /// Set when one of its records left the audit queue past half full:
    /// the batches the writer had taken then.
    pub(super) behind: Option<u64>,
    /// The copies `reveal` handed wasmtime, wiped once it has let go.
    pub(super) revealed: RevealedCopies,
}

/// The host's copies of revealed values, each wiped (zeroed) before its
/// memory is freed.
///
/// Why: wasmtime's generated bindings take a host function's result by
/// value, copy it into guest memory and drop it; a plain `Vec` would so
/// free the secret's bytes into the allocator unwiped, where a core dump
/// or a later allocation's unused capacity could still hold them. `reveal`
/// is therefore linked through a wrapper that returns an `Arc<[u8]>`
/// (which wasmtime lowers like a list) while this keeps a second
/// reference: once wasmtime has dropped its own, the copy is uniquely ours
/// and is zeroed, at the next `reveal` or when the request ends.
#[derive(Debug, Default)]
pub struct RevealedCopies {
    bytes: Vec<Arc<[u8]>>,
    /// Copies lowered as strings (`wasmcloud:secrets`'s `reveal`).
    texts: Vec<Arc<str>>,
}

impl RevealedCopies {
    /// A copy of `value` for wasmtime to lower, kept here to be wiped.
    pub fn copy(&mut self, value: &[u8]) -> Arc<[u8]> {
        self.wipe_released();
        let copy: Arc<[u8]> = Arc::from(value);
        self.bytes.push(Arc::clone(&copy));
        copy
    }

    /// A copy of `value` for wasmtime to lower as a string, kept here to be
    /// wiped.
    pub fn copy_text(&mut self, value: &str) -> Arc<str> {
        self.wipe_released();
        let copy: Arc<str> = Arc::from(value);
        self.texts.push(Arc::clone(&copy));
        copy
    }

    /// Zeroes and forgets every copy nobody else holds any more.
    pub fn wipe_released(&mut self) {
        self.bytes.retain_mut(|copy| !wipe_if_released(copy));
        self.texts.retain_mut(|copy| !wipe_if_released(copy));
    }

    /// Copies still held elsewhere (by wasmtime, mid-call).
    pub fn held(&self) -> usize {
        self.bytes.len() + self.texts.len()
    }
}

/// Zeroes `copy` if this is its only reference; says whether it did.
fn wipe_if_released<T: zeroize::Zeroize + ?Sized>(copy: &mut Arc<T>) -> bool {
    match Arc::get_mut(copy) {
        Some(value) => {
            value.zeroize();
            true
        }
        None => false,
    }
}

impl Drop for RevealedCopies {
    fn drop(&mut self) {
        self.wipe_released();
    }
}

impl SecretsCtx {
    /// The context for request `request` of `function`, with its bindings;
    /// every call is counted and audited through `metrics`.
    pub fn new(
        function: Arc<str>,
        request: u64,
        bindings: Arc<FunctionSecrets>,
        metrics: Arc<FunctionMetrics>,
    ) -> Self {
        let refusals = Arc::new(RefusalBudget::default());
        Self {
            injector: Injector::new(
                Arc::clone(&function),
                request,
                Arc::clone(&metrics),
                Arc::clone(&bindings.outbound),
            )
            .for_component(Arc::clone(&bindings.digest))
            .with_refusals(Arc::clone(&refusals)),
            function,
            request,
            bindings,
            handles: HandleSlab::default(),
            metrics,
            refusals,
            behind: None,
            revealed: RevealedCopies::default(),
        }
    }

    /// If this request's audit records have filled its queue past half,
    /// what it should wait for at its next pause: the writer taking the
    /// next batch, for at most [`MAX_WAIT_FOR_WRITER`]. Back-pressure so
    /// falls on the request making the records, asynchronously: its worker
    /// serves other requests meanwhile.
    ///
    /// [`MAX_WAIT_FOR_WRITER`]: crate::audit::trail::MAX_WAIT_FOR_WRITER
    pub fn audit_backpressure(
        &mut self,
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> {
        let batches = self.behind.take()?;
        let observer = Arc::clone(self.metrics.observer());
        Some(Box::pin(async move {
            let wait = observer.trail.batch_taken_after(batches);
            let _ = tokio::time::timeout(crate::audit::trail::MAX_WAIT_FOR_WRITER, wait).await;
        }))
    }

    /// Counts and audits one call. A refusal past the request's allowance
    /// is recorded once, saying so, and ends the request.
    pub(super) fn report(
        &mut self,
        operation: &'static str,
        binding: Arc<str>,
        secret: Option<Arc<str>>,
        version: Option<u32>,
        outcome: OpOutcome,
        mut reason: Option<String>,
    ) -> wasmtime::Result<()> {
        let spent = if outcome == OpOutcome::Allowed {
            Refusal::Within
        } else {
            self.refusals.spend()
        };
        match spent {
            Refusal::Within => {}
            Refusal::Exhausted => {
                reason = Some(TooManyRefusals.to_string());
            }
            Refusal::Over => return Err(TooManyRefusals.into()),
        }
        let pressure = self.metrics.secret_operation(
            FunctionEvent {
                function: Arc::clone(&self.function),
                request: self.request,
                binding,
                secret,
                version,
                operation: operation.into(),
                outcome,
                destination: None,
                reason,
                digest: Some(Arc::clone(&self.bindings.digest)),
            },
            operation,
        );
        if let Pressure::Behind { batches } = pressure {
            self.behind.get_or_insert(batches);
        }
        match spent {
            Refusal::Within => Ok(()),
            _ => Err(TooManyRefusals.into()),
        }
    }

    /// The request's header-token injector, which `wasi:http` calls on every
    /// outgoing request.
    pub fn injector_mut(&mut self) -> &mut Injector {
        &mut self.injector
    }

    /// The state behind `handle`; a handle this request does not hold
    /// (forged, or used after its drop) traps.
    pub(super) fn handle(
        &self,
        handle: &Resource<SecretHandle>,
    ) -> wasmtime::Result<&SecretHandle> {
        let rep = handle.rep();
        self.handles
            .get(rep)
            .ok_or_else(|| UnknownHandle(rep).into())
    }
}

/// A secret handle that is not open in this request: the guest traps.
#[derive(Debug, thiserror::Error)]
#[error("secret handle {0} is not open in this request")]
pub(super) struct UnknownHandle(pub(super) u32);

/// A handle's state on the host: one version of one bound secret.
///
/// The guest sees only the resource index; the value enters guest memory
/// only through `reveal` (and leaves the host otherwise only as an injected
/// header toward an egress host).
///
/// It shares its binding with the function's loaded state rather than
/// copying it, so opening a handle costs two reference counts.
#[derive(Debug)]
pub struct SecretHandle {
    pub(super) binding: Arc<Binding>,
    pub(super) material: Arc<SecretMaterial>,
}

impl SecretHandle {
    /// The binding's name, as the function asked for it.
    pub(super) fn name(&self) -> &Arc<str> {
        &self.binding.name
    }

    /// What the binding resolved to when the handle was opened.
    pub(super) fn bound(&self) -> &BoundSecret {
        &self.binding.bound
    }

    /// `Ok` if the binding's grant allows `op`, both as this request
    /// loaded it and as the node holds it now.
    pub(super) fn require(&self, op: Operation) -> Result<(), Error> {
        let bound = self.bound();
        bound.in_force.fresh().map_err(|e| stale(self.name(), e))?;
        bound
            .in_force
            .check()
            .map_err(|e| withdrawn(self.name(), e))?;
        let allowed = bound.allowed.intersect(bound.in_force.allowed_now());
        if allowed.contains(op) {
            Ok(())
        } else {
            Err(Error::Denied(format!(
                "binding `{}` is not granted `{op}` (granted: {allowed})",
                self.name(),
            )))
        }
    }

    /// The value as an AES-256 key, for `seal` and `open`.
    pub(super) fn aes_key(&self) -> Result<AesKey, Error> {
        aes_key(&self.material).map_err(|e| self.unusable(&e))
    }

    /// `invalid-argument` saying why the bound secret cannot serve.
    pub(super) fn unusable(&self, e: &KeyError) -> Error {
        Error::InvalidArgument(format!("binding `{}`: {e}", self.name()))
    }
}

/// `denied`, for a binding withdrawn while the request ran.
pub(super) fn stale(binding: &str, e: Stale) -> Error {
    Error::Unavailable(format!("binding `{binding}`: {e}"))
}

pub(super) fn withdrawn(binding: &str, e: Withdrawn) -> Error {
    Error::Denied(format!("binding `{binding}`: {e}"))
}

pub(super) fn aes_key(material: &SecretMaterial) -> Result<AesKey, KeyError> {
    let value = material.value().expose();
    keys::check_aes_key(value)?;
    Ok(AesKey::from_slice(value).expect("length checked"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revealed_copy_is_wiped_only_once_wasmtime_has_let_go() {
        let mut copies = RevealedCopies::default();
        let lowered = copies.copy(b"the secret");
        copies.wipe_released();
        assert_eq!(copies.held(), 1, "a copy still being lowered was let go");
        assert_eq!(
            &*lowered, b"the secret",
            "a copy still being lowered was wiped"
        );
        drop(lowered);
        copies.wipe_released();
        assert_eq!(copies.held(), 0);

        let mut only = Arc::<[u8]>::from(&b"the secret"[..]);
        let shared = Arc::clone(&only);
        assert!(!wipe_if_released(&mut only));
        drop(shared);
        assert!(wipe_if_released(&mut only));
        assert_eq!(&*only, &[0u8; 10], "a released copy kept its bytes");
    }

    #[test]
    fn a_revealed_text_copy_is_wiped_like_a_byte_copy() {
        let mut copies = RevealedCopies::default();
        let lowered = copies.copy_text("the secret");
        copies.wipe_released();
        assert_eq!(copies.held(), 1, "a text still being lowered was let go");
        assert_eq!(
            &*lowered, "the secret",
            "a text still being lowered was wiped"
        );
        drop(lowered);
        copies.wipe_released();
        assert_eq!(copies.held(), 0);

        let mut only = Arc::<str>::from("the secret");
        let shared = Arc::clone(&only);
        assert!(!wipe_if_released(&mut only));
        drop(shared);
        assert!(wipe_if_released(&mut only));
        assert_eq!(
            only.as_bytes(),
            &[0u8; 10],
            "a released text kept its bytes"
        );
    }
}
