//! The host side of `keyhole:secrets`: every call checked against the
//! calling function's grants, every key operation done on the host.
//!
//! A request's [`SecretsCtx`] holds what the function may reach and the
//! handles the request opened, which die with it. The only path by
//! which secret bytes enter guest memory is `reveal`, behind its grant, and
//! the host copy `reveal` hands wasmtime to lower is wiped, never freed
//! with the bytes in it ([`RevealedCopies`]).

use crate::audit::trail::Pressure;
use crate::audit::{FunctionEvent, OpOutcome};
use crate::bindings::secrets::{self, Algorithm, Error};
use crate::crypto::AesKey;
use crate::egress::EgressList;
use crate::handle_slab::HandleSlab;
use crate::injection::{Injector, Issue};
use crate::keys::{self, KeyError};
use crate::material::SecretMaterial;
use crate::observe::{FunctionMetrics, outcome_of};
use crate::operations::{Operation, OperationSet};
use crate::outbound::OutboundRules;
use crate::redact::Redactor;
use crate::standing::{InForce, Withdrawn};
use crate::store::Timestamp;
use crate::usage::UsageSlot;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use wasmtime::component::{HasData, Linker, Resource};

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
    fn open_at(&self, now: Timestamp) -> bool {
        now < self.until
    }
}

/// The grace versions whose window is open now (reading the clock only if
/// there are any).
fn in_grace(grace: &[GraceVersion]) -> impl Iterator<Item = &GraceVersion> {
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
struct Binding {
    name: Arc<str>,
    bound: BoundSecret,
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

    fn binding(&self, name: &str) -> Option<&Arc<Binding>> {
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
    function: Arc<str>,
    request: u64,
    bindings: Arc<FunctionSecrets>,
    handles: HandleSlab<SecretHandle>,
    injector: Injector,
    metrics: Arc<FunctionMetrics>,
    refusals: Arc<RefusalBudget>,
    /// Set when one of its records left the audit queue past half full:
    /// the batches the writer had taken then.
    behind: Option<u64>,
    /// The copies `reveal` handed wasmtime, wiped once it has let go.
    revealed: RevealedCopies,
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
pub struct RevealedCopies(Vec<Arc<[u8]>>);

impl RevealedCopies {
    /// A copy of `value` for wasmtime to lower, kept here to be wiped.
    pub fn copy(&mut self, value: &[u8]) -> Arc<[u8]> {
        self.wipe_released();
        let copy: Arc<[u8]> = Arc::from(value);
        self.0.push(Arc::clone(&copy));
        copy
    }

    /// Zeroes and forgets every copy nobody else holds any more.
    pub fn wipe_released(&mut self) {
        self.0.retain_mut(|copy| !wipe_if_released(copy));
    }

    /// Copies still held elsewhere (by wasmtime, mid-call).
    pub fn held(&self) -> usize {
        self.0.len()
    }
}

/// Zeroes `copy` if this is its only reference; says whether it did.
fn wipe_if_released(copy: &mut Arc<[u8]>) -> bool {
    match Arc::get_mut(copy) {
        Some(bytes) => {
            zeroize::Zeroize::zeroize(bytes);
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
    fn report(
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
    fn handle(&self, handle: &Resource<SecretHandle>) -> wasmtime::Result<&SecretHandle> {
        let rep = handle.rep();
        self.handles
            .get(rep)
            .ok_or_else(|| UnknownHandle(rep).into())
    }
}

/// A secret handle that is not open in this request: the guest traps.
#[derive(Debug, thiserror::Error)]
#[error("secret handle {0} is not open in this request")]
struct UnknownHandle(u32);

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
    binding: Arc<Binding>,
    material: Arc<SecretMaterial>,
}

impl SecretHandle {
    /// The binding's name, as the function asked for it.
    fn name(&self) -> &Arc<str> {
        &self.binding.name
    }

    /// What the binding resolved to when the handle was opened.
    fn bound(&self) -> &BoundSecret {
        &self.binding.bound
    }

    /// `Ok` if the binding's grant allows `op`, both as this request
    /// loaded it and as the node holds it now.
    fn require(&self, op: Operation) -> Result<(), Error> {
        let bound = self.bound();
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
    fn aes_key(&self) -> Result<AesKey, Error> {
        aes_key(&self.material).map_err(|e| self.unusable(&e))
    }

    /// `invalid-argument` saying why the bound secret cannot serve.
    fn unusable(&self, e: &KeyError) -> Error {
        Error::InvalidArgument(format!("binding `{}`: {e}", self.name()))
    }
}

/// `denied`, for a binding withdrawn while the request ran.
fn withdrawn(binding: &str, e: Withdrawn) -> Error {
    Error::Denied(format!("binding `{binding}`: {e}"))
}

fn aes_key(material: &SecretMaterial) -> Result<AesKey, KeyError> {
    let value = material.value().expose();
    keys::check_aes_key(value)?;
    Ok(AesKey::from_slice(value).expect("length checked"))
}

/// The view of a store's data that the secrets interface works on.
pub struct SecretsView<'a> {
    /// This request's secrets state.
    pub ctx: &'a mut SecretsCtx,
}

/// Implemented by a store's data type to expose the secrets interface.
pub trait SecretsHost: Send {
    /// Borrows the request's secrets state.
    fn secrets(&mut self) -> SecretsView<'_>;
}

struct HasSecrets;

impl HasData for HasSecrets {
    type Data<'a> = SecretsView<'a>;
}

/// The linker name of the interface [`add_to_linker`] provides.
const SECRETS_INTERFACE: &str = "keyhole:secrets/secrets@0.1.1";

/// Adds `keyhole:secrets/secrets` to `linker`, with `reveal` served by
/// [`SecretsView::reveal_wiped`] so its host copy is wiped
/// ([`RevealedCopies`]).
pub fn add_to_linker<T: SecretsHost + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    secrets::add_to_linker::<T, HasSecrets>(linker, T::secrets)?;
    linker.allow_shadowing(true);
    linker.instance(SECRETS_INTERFACE)?.func_wrap(
        "[method]secret.reveal",
        |mut store: wasmtime::StoreContextMut<'_, T>, (handle,): (Resource<SecretHandle>,)| {
            Ok((store.data_mut().secrets().reveal_wiped(handle)?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The trap for `reveal` reached through the generated bindings rather
/// than [`add_to_linker`]'s wrapper: it would free an unwiped copy.
#[derive(Debug, thiserror::Error)]
#[error("`reveal` must be linked through secrets_host::add_to_linker, which wipes its copy")]
struct UnwipedReveal;

impl secrets::Host for SecretsView<'_> {
    fn get(&mut self, binding: String) -> wasmtime::Result<Result<Resource<SecretHandle>, Error>> {
        let refuse = |ctx: &mut SecretsCtx, secret: Option<&Arc<str>>, error: Error| {
            let shown: Arc<str> = if binding.len() > MAX_BINDING_LEN {
                format!("<{} bytes>", binding.len()).into()
            } else {
                printable(&binding).into()
            };
            ctx.report(
                "get",
                shown,
                secret.cloned(),
                None,
                outcome_of::<()>(&Err(error.clone())),
                Some(message(&error).to_owned()),
            )?;
            Ok(Err(error))
        };
        if binding.is_empty() || binding.len() > MAX_BINDING_LEN {
            let error = Error::InvalidArgument(format!(
                "binding names are 1 to {MAX_BINDING_LEN} bytes long (got {})",
                binding.len()
            ));
            return refuse(self.ctx, None, error);
        }
        let Some(entry) = self.ctx.bindings.binding(&binding).cloned() else {
            let error = Error::NotGranted(format!(
                "function `{}` has no grant for binding `{}`",
                self.ctx.function,
                printable(&binding)
            ));
            return refuse(self.ctx, None, error);
        };
        let bound = &entry.bound;
        if let Err(e) = bound.in_force.check() {
            return refuse(self.ctx, Some(&bound.secret), withdrawn(&entry.name, e));
        }
        let Some(material) = bound.current.clone() else {
            let error = Error::Unavailable(format!(
                "binding `{binding}`: its secret has no usable version"
            ));
            return refuse(self.ctx, Some(&bound.secret), error);
        };
        if self.ctx.handles.len() >= MAX_OPEN_HANDLES {
            let error = Error::InvalidArgument(format!(
                "too many open secret handles (at most {MAX_OPEN_HANDLES} per request); drop handles you no longer need"
            ));
            return refuse(self.ctx, Some(&bound.secret), error);
        }
        bound.usage.record(material.version());
        self.ctx.report(
            "get",
            Arc::clone(&entry.name),
            Some(Arc::clone(&bound.secret)),
            Some(material.version()),
            OpOutcome::Allowed,
            None,
        )?;
        let handle = SecretHandle {
            binding: entry,
            material,
        };
        Ok(Ok(Resource::new_own(self.ctx.handles.insert(handle))))
    }
}

impl SecretsView<'_> {
    /// Runs `f` on the handle's state if its grant allows `op`. A handle
    /// that is not in the table traps; a refused operation is the guest's
    /// error to handle.
    ///
    /// Every call is counted and audited as `operation`.
    /// `reveal`: the secret's bytes, behind the `reveal` grant, in a copy
    /// that is wiped once wasmtime has lowered it ([`RevealedCopies`]).
    pub fn reveal_wiped(
        &mut self,
        handle: Resource<SecretHandle>,
    ) -> wasmtime::Result<Result<Arc<[u8]>, Error>> {
        let ctx = &mut *self.ctx;
        let secret = ctx.handle(&handle)?;
        let result = secret.require(Operation::Reveal);
        let (binding, stored, material) = (
            Arc::clone(secret.name()),
            Arc::clone(&secret.bound().secret),
            Arc::clone(&secret.material),
        );
        ctx.report(
            "reveal",
            binding,
            Some(stored),
            Some(material.version()),
            outcome_of(&result),
            result.as_ref().err().map(|e| message(e).to_owned()),
        )?;
        Ok(result.map(|()| ctx.revealed.copy(material.value().expose())))
    }

    fn with_grant<T>(
        &mut self,
        handle: &Resource<SecretHandle>,
        operation: &'static str,
        op: Operation,
        f: impl FnOnce(&SecretHandle) -> Result<T, Error>,
    ) -> wasmtime::Result<Result<T, Error>> {
        let secret = self.ctx.handle(handle)?;
        let result = secret.require(op).and_then(|()| f(secret));
        let (binding, stored, version) = (
            Arc::clone(secret.name()),
            Arc::clone(&secret.bound().secret),
            secret.material.version(),
        );
        self.ctx.report(
            operation,
            binding,
            Some(stored),
            Some(version),
            outcome_of(&result),
            result.as_ref().err().map(|e| message(e).to_owned()),
        )?;
        Ok(result)
    }
}

impl secrets::HostSecret for SecretsView<'_> {
    fn name(&mut self, handle: Resource<SecretHandle>) -> wasmtime::Result<String> {
        Ok(self.ctx.handle(&handle)?.name().to_string())
    }

    fn version(&mut self, handle: Resource<SecretHandle>) -> wasmtime::Result<u32> {
        Ok(self.ctx.handle(&handle)?.material.version())
    }

    fn hmac_sha256(
        &mut self,
        handle: Resource<SecretHandle>,
        message: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        self.with_grant(&handle, "hmac-sha256", Operation::Hmac, |secret| {
            Ok(secret.material.hmac().tag(&message).to_vec())
        })
    }

    fn verify_hmac_sha256(
        &mut self,
        handle: Resource<SecretHandle>,
        message: Vec<u8>,
        tag: Vec<u8>,
    ) -> wasmtime::Result<Result<bool, Error>> {
        self.with_grant(&handle, "verify-hmac-sha256", Operation::Hmac, |secret| {
            let verifies = |material: &SecretMaterial| material.hmac().verifies(&message, &tag);
            if verifies(&secret.material) {
                return Ok(true);
            }
            match in_grace(&secret.bound().grace).find(|g| verifies(&g.material)) {
                Some(g) => {
                    secret.bound().usage.record_grace(g.material.version());
                    Ok(true)
                }
                None => Ok(false),
            }
        })
    }

    fn reveal(
        &mut self,
        handle: Resource<SecretHandle>,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        let _ = handle;
        Err(UnwipedReveal.into())
    }

    fn sign(
        &mut self,
        handle: Resource<SecretHandle>,
        algorithm: Algorithm,
        message: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        let algorithm = match algorithm {
            Algorithm::Ed25519 => keys::Algorithm::Ed25519,
            Algorithm::EcdsaP256Sha256 => keys::Algorithm::EcdsaP256Sha256,
            Algorithm::RsaPkcs1Sha256 => keys::Algorithm::RsaPkcs1Sha256,
        };
        self.with_grant(&handle, "sign", Operation::Sign, |secret| {
            let key = secret
                .material
                .signing_key()
                .map_err(|e| secret.unusable(e))?;
            key.sign(algorithm, &message).map_err(|e| {
                Error::InvalidArgument(format!(
                    "binding `{}`: cannot sign {}: {e}",
                    secret.name(),
                    algorithm.as_str()
                ))
            })
        })
    }

    fn public_key(
        &mut self,
        handle: Resource<SecretHandle>,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        self.with_grant(&handle, "public-key", Operation::Sign, |secret| {
            secret
                .material
                .signing_key()
                .map(|key| key.public_key_spki())
                .map_err(|e| secret.unusable(e))
        })
    }

    fn seal(
        &mut self,
        handle: Resource<SecretHandle>,
        plaintext: Vec<u8>,
        aad: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        self.with_grant(&handle, "seal", Operation::Seal, |secret| {
            let sealed = secret.aes_key()?.seal(&plaintext, &aad);
            let count = secret.material.count_seal();
            if crate::material::SEAL_WARNINGS.contains(&count) {
                tracing::warn!(
                    secret = %secret.bound().secret,
                    version = secret.material.version(),
                    seals = count,
                    "this secret version has sealed this many messages on this node: AES-GCM with random nonces should seal at most 2^32 under one key; rotate it (keyhole secret rotate)"
                );
            }
            Ok(sealed)
        })
    }

    fn open(
        &mut self,
        handle: Resource<SecretHandle>,
        ciphertext: Vec<u8>,
        aad: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        self.with_grant(&handle, "open", Operation::Seal, |secret| {
            let opened = |material: &SecretMaterial| {
                let key = aes_key(material).ok()?;
                key.open(&ciphertext, &aad).ok()
            };
            if let Some(plain) = opened(&secret.material) {
                return Ok(plain.to_vec());
            }
            let from_grace =
                in_grace(&secret.bound().grace).find_map(|g| Some((g.material.version(), opened(&g.material)?)));
            if let Some((version, plain)) = from_grace {
                secret.bound().usage.record_grace(version);
                return Ok(plain.to_vec());
            }
            // A current value that is no AES-256 key says so.
            secret.aes_key()?;
            Err(Error::InvalidArgument(format!(
                "binding `{}`: the ciphertext does not open with this key and aad (tampered with, truncated, or sealed under another key or aad)",
                secret.name()
            )))
        })
    }

    fn header_token(
        &mut self,
        handle: Resource<SecretHandle>,
    ) -> wasmtime::Result<Result<String, Error>> {
        let bound = self.with_grant(&handle, "header-token", Operation::Inject, |secret| {
            if secret.bound().egress.is_empty() {
                return Err(Error::Denied(format!(
                    "binding `{}` may be injected, but its grant names no egress host",
                    secret.name()
                )));
            }
            Ok(Issue {
                binding: Arc::clone(secret.name()),
                secret: Arc::clone(&secret.bound().secret),
                material: Arc::clone(&secret.material),
                egress: Arc::clone(&secret.bound().egress),
                in_force: secret.bound().in_force.clone(),
            })
        })?;
        Ok(bound.and_then(|issue| {
            self.ctx
                .injector
                .issue(issue)
                .map_err(|e| Error::InvalidArgument(e.to_string()))
        }))
    }

    fn drop(&mut self, handle: Resource<SecretHandle>) -> wasmtime::Result<()> {
        match self.ctx.handles.remove(handle.rep()) {
            Some(_) => Ok(()),
            None => Err(UnknownHandle(handle.rep()).into()),
        }
    }
}

/// The text of an error returned to the guest.
pub(crate) fn message(error: &Error) -> &str {
    match error {
        Error::NotGranted(m)
        | Error::Denied(m)
        | Error::Unavailable(m)
        | Error::InvalidArgument(m) => m,
    }
}

/// A guest-chosen name made safe to echo: control characters escaped.
fn printable(name: &str) -> String {
    name.escape_debug().to_string()
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
}
