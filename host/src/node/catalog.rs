//! What a running node serves right now: deployed functions, compiled and
//! linked, with their grants resolved to decrypted secret values.
//!
//! The catalog installs a new snapshot whenever the store's revision
//! changes, so grants, secrets and deployments written by the CLI, the
//! admin API or the fleet take effect on the next request, without a
//! restart. It reloads only what a change touched: the store's
//! [`ServedState`] tags each function and secret, and a load rebuilds the
//! functions whose tag changed and those bound to a secret whose tag
//! changed (or whose grace window ended), reusing every other function as
//! it was. Why: a change must be in force within milliseconds on a node
//! serving a thousand functions, and rebuilding all of them for one grant
//! takes longer than that.
//!
//! A request holds the snapshot it started with, so it finishes on the
//! versions it opened — unless a load withdraws them, which
//! [`crate::secrets::standing`] makes reach it at its next secret call.

use crate::admin::access::route_contains;
use crate::crypto::material::SecretMaterial;
use crate::engine::runtime::{ComponentError, FunctionPre, Runtime};
use crate::node::admission::{Admission, FunctionShare};
use crate::node::observe::{FunctionMetrics, Observer};
use crate::node::usage::UsageLog;
use crate::operations::OperationSet;
use crate::outbound::{AddressPolicy, OutboundRules, SystemResolver};
use crate::secrets::standing::{Freshness, Standings, StandingsUpdate, Terms};
use crate::secrets::{BoundSecret, FunctionSecrets, GraceVersion};
use crate::store::{FunctionInfo, Grant, ServedState, Store, StoreError, Timestamp};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// A deployed function, ready to serve.
pub struct LoadedFunction {
    /// The function's name.
    pub name: Arc<str>,
    /// The compiled, linked component.
    pub pre: FunctionPre,
    /// Memory limit per instance, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock limit per request.
    pub timeout: Duration,
    /// What its bindings resolve to.
    pub secrets: Arc<FunctionSecrets>,
    /// Its manifest's non-secret settings (`wasi:config/store`).
    pub config: Arc<crate::config::FunctionConfig>,
    /// Where its requests and secret operations are counted and audited.
    pub metrics: Arc<FunctionMetrics>,
    /// What it holds of the node right now (shared by every load of it).
    pub share: Arc<FunctionShare>,
    /// Instance slots one of its requests takes ([`crate::node::admission::weight_of`]).
    pub weight: u32,
    /// Linear memory one of its requests reserves from the node's budget:
    /// its limit times its memories.
    pub reserved_memory: u64,
}

/// One consistent view of everything the node serves.
#[derive(Default)]
pub struct Snapshot {
    /// Route prefixes, longest first, with the function serving each.
    routes: Vec<(String, Arc<LoadedFunction>)>,
}

impl Snapshot {
    /// The function serving `path`: the longest route that equals `path` or
    /// is a prefix of it ending at a `/`.
    pub fn route(&self, path: &str) -> Option<&Arc<LoadedFunction>> {
        self.routes
            .iter()
            .find(|(prefix, _)| route_contains(prefix, path))
            .map(|(_, f)| f)
    }

    /// How many functions are being served.
    pub fn function_count(&self) -> usize {
        let mut names: Vec<&str> = self.routes.iter().map(|(_, f)| &*f.name).collect();
        names.sort_unstable();
        names.dedup();
        names.len()
    }
}

/// The node's live set of functions, refreshed from the store.
pub struct Catalog {
    store: Arc<dyn Store>,
    runtime: Arc<Runtime>,
    compiled: Mutex<HashMap<String, FunctionPre>>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// What the snapshot was built from; held by a load throughout, so
    /// loads run one at a time.
    loaded: Mutex<Loaded>,
    /// The revision of the snapshot served (`u64::MAX`: none yet), readable
    /// while a load runs.
    loaded_revision: AtomicU64,
    /// Why the last load failed, if it did (the node serves the snapshot
    /// before it meanwhile).
    load_error: Mutex<Option<String>>,
    usage: UsageLog,
    overdue_warned: Mutex<HashMap<String, i64>>,
    observer: Arc<Observer>,
    /// The node's rules for the addresses outgoing requests may reach.
    addresses: Arc<AddressPolicy>,
    /// Who may have an instance now.
    admission: Arc<Admission>,
    /// What each binding is granted now, for requests already running.
    standings: Standings,
    /// Seals made under each secret version, kept across loads.
    seal_counts: Mutex<HashMap<(String, u32), Arc<AtomicU64>>>,
}

/// How a load came by its compiled components (those already loaded are
/// counted in neither).
#[derive(Default)]
struct LoadCounts {
    compiled: usize,
    from_cache: usize,
    /// Secrets whose versions could not be read or decrypted.
    unavailable: usize,
}

/// Above this many functions to reload, a load reads the whole listing
/// once instead of each function on its own.
const READ_ONE_BY_ONE_UP_TO: usize = 32;

/// What the catalog has loaded, kept from load to load so that a change
/// reloads only what it touched.
#[derive(Default)]
struct Loaded {
    /// The store's state it was loaded from (`None`: nothing loaded yet).
    state: Option<ServedState>,
    /// The last revision a load was tried at, loaded or not: waiting for a
    /// change starts from it, so a load that keeps failing is tried again
    /// on the next change or after a wait, not in a busy loop.
    tried: Option<u64>,
    /// Every function being served, by name.
    functions: HashMap<String, Built>,
    /// Deployed functions that could not be loaded: tried at every load.
    failed: HashSet<String>,
    /// The usable versions of each secret a loaded grant names (`None`:
    /// it does not exist, or could not be decrypted).
    secrets: HashMap<String, Option<Resolved>>,
    /// Secrets that could not be read or decrypted: read again at every
    /// load, whether or not they changed.
    unreadable: HashSet<String>,
}

/// A tag no store gives (a SHA-256 of nothing it digests): recorded for
/// what a load read while the store moved on under it, so the next load
/// reads it again whatever its tag then.
const READ_AGAIN: crate::store::StateTag = [0; 32];

/// One loaded function, with what decides when it must be reloaded.
struct Built {
    function: Arc<LoadedFunction>,
    routes: Vec<String>,
    component_sha256: String,
    /// The secrets its grants name.
    secrets: Vec<String>,
}

/// What one load built, to put in place of what it reloaded once it has
/// succeeded.
#[derive(Default)]
struct Reloaded {
    /// Everything was reloaded, not only what changed.
    everything: bool,
    /// The functions reloaded; those no longer deployed are absent here.
    names: HashSet<String>,
    functions: HashMap<String, Built>,
    failed: HashSet<String>,
    /// Secrets decrypted by this load.
    secrets: HashMap<String, Option<Resolved>>,
    /// Secrets this load could not read or decrypt.
    unreadable: HashSet<String>,
}

impl Loaded {
    /// The functions a load from `state` must rebuild (`None`: all of
    /// them, nothing being loaded yet), and the secrets it must decrypt
    /// again: those changed, and those with a grace window over at `now`.
    fn stale(
        &self,
        state: &ServedState,
        now: Timestamp,
    ) -> Option<(HashSet<String>, HashSet<String>)> {
        let old = self.state.as_ref()?;
        let differ = |a: &HashMap<String, _>, b: &HashMap<String, _>| -> HashSet<String> {
            a.iter()
                .filter(|(name, tag)| b.get(*name) != Some(*tag))
                .chain(b.iter().filter(|(name, _)| !a.contains_key(*name)))
                .map(|(name, _)| name.clone())
                .collect()
        };
        let mut secrets = differ(&old.secrets, &state.secrets);
        secrets.extend(self.expired(now));
        secrets.extend(self.unreadable.iter().cloned());
        let mut functions = differ(&old.functions, &state.functions);
        functions.extend(self.failed.iter().cloned());
        functions.extend(
            self.functions
                .iter()
                .filter(|(_, built)| built.secrets.iter().any(|s| secrets.contains(s)))
                .map(|(name, _)| name.clone()),
        );
        Some((functions, secrets))
    }

    /// Secrets with a version whose grace window is over at `now`.
    fn expired(&self, now: Timestamp) -> impl Iterator<Item = String> + '_ {
        self.secrets
            .iter()
            .filter(move |(_, r)| {
                r.as_ref()
                    .is_some_and(|r| r.grace.iter().any(|g| g.until <= now))
            })
            .map(|(name, _)| name.clone())
    }

    /// Puts what `reloaded` built in place of what it reloaded, and lets go
    /// of secrets no function names any more. With `moved` (the store
    /// changed while the load read it), what the load read may be newer
    /// than `state` says: it is marked to be read again next time, so a
    /// change undone since (a grant given, then revoked, back to the
    /// same tag) cannot leave the newer read in force.
    fn replace(&mut self, reloaded: Reloaded, mut state: ServedState, moved: bool) {
        if moved {
            for name in &reloaded.names {
                state.functions.insert(name.clone(), READ_AGAIN);
            }
            for name in reloaded.secrets.keys() {
                state.secrets.insert(name.clone(), READ_AGAIN);
            }
        }
        if reloaded.everything {
            self.functions.clear();
            self.failed.clear();
            self.unreadable.clear();
        }
        self.unreadable
            .retain(|name| !reloaded.secrets.contains_key(name));
        self.unreadable.extend(reloaded.unreadable);
        for name in &reloaded.names {
            self.functions.remove(name);
            self.failed.remove(name);
        }
        self.functions.extend(reloaded.functions);
        self.failed.extend(reloaded.failed);
        self.secrets.extend(reloaded.secrets);
        let named: HashSet<&str> = self
            .functions
            .values()
            .flat_map(|b| b.secrets.iter().map(String::as_str))
            .collect();
        self.secrets.retain(|name, _| named.contains(name.as_str()));
        self.state = Some(state);
    }

    /// The snapshot serving every loaded function.
    fn snapshot(&self) -> Snapshot {
        let mut routes: Vec<(String, Arc<LoadedFunction>)> = self
            .functions
            .values()
            .flat_map(|b| {
                b.routes
                    .iter()
                    .map(|r| (r.clone(), Arc::clone(&b.function)))
            })
            .collect();
        routes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Snapshot { routes }
    }
}

/// One secret's usable versions, shared by every binding that names it.
#[derive(Clone)]
struct Resolved {
    current: Arc<SecretMaterial>,
    grace: Arc<[GraceVersion]>,
}

impl Resolved {
    /// The usable versions: the current one with `None`, those in grace
    /// with the end of their window.
    fn versions(&self) -> Vec<(u32, Option<Timestamp>)> {
        let grace = self
            .grace
            .iter()
            .map(|g| (g.material.version(), Some(g.until)));
        std::iter::once((self.current.version(), None))
            .chain(grace)
            .collect()
    }
}

impl Catalog {
    /// An empty catalog over `store`, its functions reporting to
    /// `observer`; call [`Catalog::refresh`] to load it.
    pub fn new(store: Arc<dyn Store>, runtime: Arc<Runtime>, observer: Arc<Observer>) -> Self {
        Self {
            observer,
            store,
            runtime,
            compiled: Mutex::default(),
            snapshot: RwLock::default(),
            loaded: Mutex::default(),
            loaded_revision: AtomicU64::new(u64::MAX),
            load_error: Mutex::default(),
            usage: UsageLog::default(),
            overdue_warned: Mutex::default(),
            addresses: Arc::default(),
            admission: Arc::default(),
            standings: Standings::default(),
            seal_counts: Mutex::default(),
        }
    }

    /// The same, admitting requests under `admission` (without it: no
    /// limit but the pool's).
    pub fn with_admission(mut self, admission: Arc<Admission>) -> Self {
        self.admission = admission;
        self
    }

    /// The same, refusing every secret operation while `freshness` says
    /// the node is stale (a fleet's node cut off past `--max-stale`).
    /// Call before the first load.
    pub fn with_freshness(mut self, freshness: Arc<Freshness>) -> Self {
        self.standings = Standings::with_freshness(freshness);
        self
    }

    /// Who may have an instance now.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    /// The same, with outgoing requests held to `addresses` (without it:
    /// public addresses only).
    pub fn with_address_policy(mut self, addresses: Arc<AddressPolicy>) -> Self {
        self.addresses = addresses;
        self
    }

    /// Where the node's metrics and function audit records go.
    pub fn observer(&self) -> &Arc<Observer> {
        &self.observer
    }

    /// The runtime functions run on.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The store revision the snapshot was loaded from (`None`: nothing
    /// loaded yet).
    pub fn loaded_revision(&self) -> Option<u64> {
        Some(self.loaded_revision.load(Ordering::Acquire)).filter(|r| *r != u64::MAX)
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Loads what changed in the store since the last load, if anything
    /// did (or a grace window ended). Blocking: it reads the database and
    /// may compile components. Returns whether a new snapshot was
    /// installed.
    pub fn refresh(&self) -> Result<bool, StoreError> {
        let outcome = self.refresh_once();
        *self.load_error.lock().unwrap_or_else(|p| p.into_inner()) =
            outcome.as_ref().err().map(ToString::to_string);
        outcome
    }

    /// Why the last load failed, if it did: the node then serves what it
    /// loaded before, and a change made since may not be in force.
    pub fn load_error(&self) -> Option<String> {
        self.load_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn refresh_once(&self) -> Result<bool, StoreError> {
        let began = std::time::Instant::now();
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let revision = self.store.revision()?;
        loaded.tried = Some(revision);
        let now = crate::store::now();
        let unchanged = loaded
            .state
            .as_ref()
            .is_some_and(|s| s.revision == revision);
        if unchanged && loaded.expired(now).next().is_none() {
            return Ok(false);
        }
        // After a master-key rotation by another process every secret would
        // fail to decrypt: keep serving what is loaded until the key is back.
        self.store.check_master_key()?;
        // Verified as it is read: with forged or rolled-back rows, keep
        // serving what is loaded.
        let state = self.store.served_state()?;
        let stale = loaded.stale(&state, now);
        let (reloaded, counts, standings) = self.load(&loaded, &state, stale)?;
        // Whether a write landed while the load read: then what it read may
        // be newer than `state`'s tags ([`Loaded::replace`]).
        let moved = self.store.revision()? != state.revision;
        // A master-key rotation committed while this load read secret by
        // secret leaves the versions read after it undecryptable: an
        // incomplete snapshot. Keep serving the previous one; the next
        // refresh loads again under the key that opens the store (or, with
        // a key that no longer does, keeps waiting as above).
        if counts.unavailable > 0 {
            self.store.check_master_key()?;
        }
        let reloaded_count = reloaded.names.len();
        let changed_code = reloaded.everything
            || reloaded.names.iter().any(|name| {
                let old = loaded.functions.get(name).map(|b| &b.component_sha256);
                old != reloaded.functions.get(name).map(|b| &b.component_sha256)
            });
        // Withdrawn before the new snapshot is served: a request that
        // starts on the old one in between is refused what it lost, and
        // none is ever refused what the new one grants.
        let withdrawn = standings.commit();
        let revision = state.revision;
        loaded.replace(reloaded, state, moved);
        self.loaded_revision.store(revision, Ordering::Release);
        let snapshot = loaded.snapshot();
        let count = snapshot.function_count();
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(snapshot);
        if changed_code {
            self.forget_unused_code(&loaded);
        }
        self.usage.retain_live();
        tracing::info!(
            revision,
            functions = count,
            reloaded = reloaded_count,
            withdrawn_bindings = withdrawn,
            compiled = counts.compiled,
            from_cache = counts.from_cache,
            elapsed_ms = began.elapsed().as_secs_f64() * 1000.0,
            "loaded functions and grants"
        );
        Ok(true)
    }

    /// Waits until the store changed since the last load, or `timeout`
    /// passed (a failure to tell is logged, and waits the timeout).
    pub fn wait_for_change(&self, timeout: Duration) {
        let seen = self
            .loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tried
            .unwrap_or(u64::MAX);
        if let Err(e) = self.store.wait_for_change(seen, timeout) {
            tracing::error!("cannot watch the store for changes: {e}");
            std::thread::sleep(timeout);
        }
    }

    /// Drops compiled components (in memory and in the cache on disk) that
    /// no loaded or failed function uses any more.
    fn forget_unused_code(&self, loaded: &Loaded) {
        let used: HashSet<&str> = loaded
            .functions
            .values()
            .map(|b| b.component_sha256.as_str())
            .collect();
        let mut compiled = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        compiled.retain(|sha, _| used.contains(sha.as_str()));
        if let Some(cache) = self.runtime.cache() {
            cache.retain(&used);
        }
    }

    /// Builds the functions `stale` names (all deployed ones when `None`)
    /// from `state`, decrypting again the secrets it names and those it
    /// has not loaded yet, and reusing `loaded`'s other secrets.
    fn load(
        &self,
        loaded: &Loaded,
        state: &ServedState,
        stale: Option<(HashSet<String>, HashSet<String>)>,
    ) -> Result<(Reloaded, LoadCounts, StandingsUpdate<'_>), StoreError> {
        let everything = stale.is_none();
        let (names, stale_secrets) = stale.unwrap_or_else(|| {
            let all = state.functions.keys().cloned().collect();
            (all, HashSet::new())
        });
        let mut standings = if everything {
            self.standings.update()
        } else {
            self.standings
                .update_only(names.iter().map(|n| Arc::from(n.as_str())).collect())
        };
        let listed = self.read_functions(&names, state, everything)?;
        let mut reloaded = Reloaded {
            everything,
            names,
            ..Reloaded::default()
        };
        let mut counts = LoadCounts::default();
        let mut unavailable = 0;
        for (info, grants) in listed {
            let mut resolve = |secret: &str| -> Option<Resolved> {
                if let Some(r) = reloaded.secrets.get(secret) {
                    return r.clone();
                }
                if !stale_secrets.contains(secret)
                    && let Some(r) = loaded.secrets.get(secret)
                {
                    return r.clone();
                }
                let resolved = self.decrypt(secret);
                if resolved.is_err() {
                    unavailable += 1;
                    reloaded.unreadable.insert(secret.to_owned());
                }
                let resolved = resolved.ok().flatten();
                reloaded.secrets.insert(secret.to_owned(), resolved.clone());
                resolved
            };
            match self.build(&info, &grants, &mut resolve, &mut standings, &mut counts)? {
                Some(built) => {
                    reloaded.functions.insert(info.name.clone(), built);
                }
                None => {
                    reloaded.failed.insert(info.name.clone());
                }
            }
        }
        counts.unavailable = unavailable;
        Ok((reloaded, counts, standings))
    }

    /// Each function of `names` that `state` says is deployed, with its
    /// grants: read one by one when there are few, from the whole listing
    /// when there are many (or `everything`).
    fn read_functions(
        &self,
        names: &HashSet<String>,
        state: &ServedState,
        everything: bool,
    ) -> Result<Vec<(FunctionInfo, Vec<Grant>)>, StoreError> {
        let deployed: Vec<&String> = names
            .iter()
            .filter(|n| state.functions.contains_key(*n))
            .collect();
        if !everything && deployed.len() <= READ_ONE_BY_ONE_UP_TO {
            let mut out = Vec::with_capacity(deployed.len());
            for name in deployed {
                // Undeployed since the state was read: the next load sees it.
                if let Some(info) = self.store.function(name)? {
                    let grants = self.store.grants(Some(name))?;
                    out.push((info, grants));
                }
            }
            return Ok(out);
        }
        let mut grants: HashMap<String, Vec<Grant>> = HashMap::new();
        for grant in self.store.grants(None)? {
            grants
                .entry(grant.function.clone())
                .or_default()
                .push(grant);
        }
        Ok(self
            .store
            .functions()?
            .into_iter()
            .filter(|info| everything || names.contains(&info.name))
            .map(|info| {
                let granted = grants.remove(&info.name).unwrap_or_default();
                (info, granted)
            })
            .collect())
    }

    /// Builds function `info` with its `grants`, its secrets' versions
    /// from `resolve`; `None` (logged) when its component cannot be
    /// loaded.
    fn build(
        &self,
        info: &FunctionInfo,
        grants: &[Grant],
        resolve: &mut impl FnMut(&str) -> Option<Resolved>,
        standings: &mut StandingsUpdate<'_>,
        counts: &mut LoadCounts,
    ) -> Result<Option<Built>, StoreError> {
        let loaded = self
            .compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&info.component_sha256)
            .cloned()
            .or_else(|| {
                let pre = self.runtime.prepare_cached(&info.component_sha256);
                counts.from_cache += usize::from(pre.is_some());
                pre
            });
        let pre = match loaded {
            Some(pre) => pre,
            None => match self.compile(&info.name, &info.component_sha256)? {
                Ok(pre) => {
                    counts.compiled += 1;
                    pre
                }
                Err(e) => {
                    tracing::error!(
                        function = %info.name,
                        "cannot load function: {}",
                        crate::redact::guest_log::escape_for_log(&format!("{e:#}"))
                    );
                    return Ok(None);
                }
            },
        };
        self.compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(info.component_sha256.clone(), pre.clone());

        let mut secrets = HashMap::new();
        let mut named = Vec::new();
        for requested in &info.bindings {
            let Some(grant) = grants
                .iter()
                .find(|g| g.function == info.name && g.binding == requested.binding)
            else {
                continue;
            };
            // A grant given for other code allows this code only what
            // the operator let follow redeploys, never `reveal`.
            let allowed: OperationSet = grant
                .effective(&info.component_sha256)
                .intersect(requested.operations);
            named.push(grant.secret.clone());
            let resolved = resolve(&grant.secret);
            let egress = Arc::new(grant.egress.clone());
            let usage = self
                .usage
                .slot(&info.name, &requested.binding, &grant.secret);
            let secret: Arc<str> = grant.secret.as_str().into();
            let in_force = standings.bind(
                &info.name,
                &requested.binding,
                Terms {
                    secret: Arc::clone(&secret),
                    allowed,
                    egress: Arc::clone(&egress),
                    versions: resolved.as_ref().map_or_else(Vec::new, Resolved::versions),
                },
            );
            secrets.insert(
                requested.binding.clone(),
                BoundSecret {
                    secret,
                    allowed,
                    egress,
                    in_force,
                    current: resolved.as_ref().map(|r| Arc::clone(&r.current)),
                    grace: resolved.map_or_else(|| Arc::from([]), |r| r.grace),
                    usage,
                },
            );
        }

        let name: Arc<str> = info.name.as_str().into();
        let pending = info.pending_outbound();
        if !pending.is_empty() {
            tracing::warn!(
                function = %info.name,
                hosts = %pending,
                "outbound hosts wait for an operator's approval (keyhole approve {})",
                info.name
            );
        }
        let outbound = Arc::new(OutboundRules {
            allowed: info.effective_outbound(),
            addresses: Arc::clone(&self.addresses),
            resolver: Arc::new(SystemResolver),
        });
        let needs = pre
            .instance_pre()
            .component()
            .resources_required()
            .map(|r| (r.num_memories, r.num_tables));
        let memory_bytes = info.memory_mib as usize * 1024 * 1024;
        let memories = needs.map_or(crate::engine::runtime::MAX_MEMORIES_PER_COMPONENT, |n| n.0);
        let weight = crate::node::admission::weight_of(needs);
        let reserved_memory = memory_bytes as u64 * u64::from(memories.max(1));
        let limits = self.admission.limits();
        if weight > limits.function_slots().min(limits.client_requests)
            || reserved_memory > limits.function_memory()
        {
            tracing::error!(
                function = %info.name,
                weight,
                reserved_memory_mib = reserved_memory >> 20,
                "this function can never be admitted: one request needs more slots or memory than its share of the node (raise --max-instances, --memory-budget or --max-function-share, or lower its memory-mib)"
            );
        }
        let share = self.admission.function_share(&name);
        share.set_max_concurrency(info.max_concurrency);
        let function = Arc::new(LoadedFunction {
            metrics: self.observer.function_metrics(&name),
            share,
            weight,
            reserved_memory,
            name,
            pre,
            memory_bytes,
            timeout: Duration::from_millis(info.timeout_ms.into()),
            config: Arc::new(crate::config::FunctionConfig::new(info.config.clone())),
            secrets: Arc::new(
                FunctionSecrets::new(secrets)
                    .with_outbound(outbound)
                    .for_component(&info.component_sha256),
            ),
        });
        Ok(Some(Built {
            function,
            routes: info.routes.clone(),
            component_sha256: info.component_sha256.clone(),
            secrets: named,
        }))
    }

    /// Compiles deployed function `name`'s component (whose SHA-256 the
    /// store records as `sha256`) and caches the result; the inner error is
    /// the component's, the outer the store's.
    fn compile(
        &self,
        name: &str,
        sha256: &str,
    ) -> Result<Result<FunctionPre, ComponentError>, StoreError> {
        let (component, deployed) = self.store.component(name)?;
        // Read after the listing: a redeploy in between must not run under
        // the digest (and so the grants) of the code it replaced.
        if deployed != sha256 {
            return Ok(Err(ComponentError::Compile(format!(
                "function `{name}` was redeployed while loading; the next load takes the new code"
            ))));
        }
        let compiled = self.runtime.prepare(&component);
        if let Ok(pre) = &compiled {
            self.runtime.remember(sha256, pre);
        }
        Ok(compiled)
    }

    /// Writes the secret uses recorded since the last call to the store.
    /// Called off the request path; returns how many bindings it reported.
    pub fn flush_usage(&self) -> Result<usize, StoreError> {
        self.usage.flush(&*self.store)
    }

    /// Logs a warning for each secret older than its maximum age, at most
    /// once per secret per day; returns the overdue secrets' names.
    pub fn warn_overdue(&self) -> Result<Vec<String>, StoreError> {
        let now = crate::store::now();
        let today = now / 86_400;
        let mut warned = self
            .overdue_warned
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut overdue = Vec::new();
        for secret in self.store.list_secrets()? {
            if !secret.overdue(now) {
                continue;
            }
            if warned.get(&secret.name) != Some(&today) {
                tracing::warn!(
                    secret = %secret.name,
                    version = secret.current_version,
                    age_days = (now - secret.value_created_at) / 86_400,
                    max_age_days = secret.max_age.unwrap_or(0) / 86_400,
                    "secret is overdue for rotation (keyhole secret rotate {})",
                    secret.name
                );
                warned.insert(secret.name.clone(), today);
            }
            overdue.push(secret.name);
        }
        Ok(overdue)
    }

    /// The seal count of version `version` of secret `name`, the same
    /// across loads.
    fn seal_count(&self, name: &str, version: u32) -> Arc<AtomicU64> {
        let mut counts = self.seal_counts.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(counts.entry((name.to_owned(), version)).or_default())
    }

    /// The usable versions of secret `name`; `None` (logged) when it does
    /// not exist, an error (logged) when they cannot be read or decrypted.
    fn decrypt(&self, name: &str) -> Result<Option<Resolved>, StoreError> {
        match self.store.usable_versions(name) {
            Ok(Some(usable)) => {
                let material = |version: u32, value| {
                    let seals = self.seal_count(name, version);
                    Arc::new(SecretMaterial::new(version, value).counting_seals_in(seals))
                };
                Ok(Some(Resolved {
                    current: material(usable.current.version, usable.current.value),
                    grace: usable
                        .grace
                        .into_iter()
                        .map(|(v, until)| GraceVersion {
                            material: material(v.version, v.value),
                            until,
                        })
                        .collect(),
                }))
            }
            Ok(None) => {
                tracing::warn!(
                    secret = name,
                    "a grant names a secret that does not exist; its bindings are unavailable"
                );
                Ok(None)
            }
            Err(e) => {
                tracing::error!(secret = name, "secret is unavailable: {e}");
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::route_contains;

    #[test]
    fn routes_match_whole_segments() {
        assert!(route_contains("/hello", "/hello"));
        assert!(route_contains("/hello", "/hello/there"));
        assert!(!route_contains("/hello", "/helloworld"));
        assert!(!route_contains("/hello", "/"));
        assert!(route_contains("/", "/anything"));
    }
}
