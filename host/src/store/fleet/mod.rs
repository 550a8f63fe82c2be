//! The fleet: many Keyhole nodes sharing one state through NATS JetStream.
//!
//! Each node (and each CLI command run with `--cluster`) keeps a replica,
//! the SQLite store in its own data directory, sealed as on a single node.
//! The fleet's state is an ordered log: the stream `KEYHOLE_STATE`, whose
//! first entry (the genesis) names the fleet and seals its entry key under
//! the master key, and whose every later entry is one admin write's
//! [`ChangeSet`](super::replication::ChangeSet), authenticated
//! (`entry`). Components live in the object store `keyhole-components`,
//! named by their SHA-256.
//!
//! Invariant: an admin write is acknowledged only once JetStream stored its
//! entry at the place right after the state it was decided on (a publish
//! with `Nats-Expected-Last-Sequence`), replicated as the stream is (R3 on
//! a cluster): so writes are ordered, none is lost with one server, and two
//! racing writes never both land on the same state. A node serves from its
//! replica and never waits on NATS on the request path; when NATS is gone
//! it serves its last state, and the follower catches up in order when it
//! is back. Each node's audit chain is shipped to the stream
//! `KEYHOLE_AUDIT` (`audit`), where the fleet's trail is read and verified.
//!
//! Never touches: the request path, wasmtime, HTTP.

mod audit;
mod components;
mod config;
mod entry;
mod follower;
mod keyed;
mod log;
mod read;
mod uses;

pub use config::{CA_ENV, CLUSTER_ENV, CREDENTIALS_ENV, ClusterConfig, DOMAIN_ENV};
pub use follower::FleetStatus;
pub use uses::merge as merge_last_uses;

use crate::audit::{Entry, NodeVerification, Query};
use crate::crypto::AesKey;
use crate::store::{FleetRecords, SqliteStore, StoreError};
use async_nats::jetstream;
use entry::{EntryKey, Genesis, Keyring, RotationEntry};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The stream holding the fleet's state log.
const STATE_STREAM: &str = "KEYHOLE_STATE";
/// The subject its entries are published on.
const STATE_SUBJECT: &str = "keyhole.state";
/// The subject master-key rotation entries are published on: in the same
/// stream, so they take their place in the one order, and on a subject of
/// their own, so a joining replica finds the fleet's keyring without
/// reading the whole log.
const MASTER_KEY_SUBJECT: &str = "keyhole.state.master-key";
/// The object store holding components.
const COMPONENTS_BUCKET: &str = "keyhole-components";
/// How long a write waits for JetStream's acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a command waits to reach any server at first.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long joining waits for JetStream to open the fleet's stream, its
/// object store and its first entry. A cluster that has just started, or
/// just lost a server, answers JetStream requests only once it has elected
/// its leaders: on a loaded machine that took more than 5 s (a CI run's
/// `secret put` failed with "jetstream request timed out").
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// A replica joined to its fleet: the store whose admin writes go through
/// the fleet's log, and the follower that applies everyone else's.
pub struct Fleet {
    /// Set once connected (at once for [`Join::Now`]).
    shared: Arc<OnceLock<Arc<Shared>>>,
    replica: Arc<SqliteStore>,
    status: Arc<FleetStatus>,
    config: ClusterConfig,
    /// Runs the NATS client and the follower, apart from the node's own
    /// runtime: admin writes block on it from their own threads.
    _runtime: tokio::runtime::Runtime,
}

/// What the log and the follower share.
struct Shared {
    client: async_nats::Client,
    js: jetstream::Context,
    replica: Arc<SqliteStore>,
    fleet: String,
    /// The entry keys, growing with each master-key rotation.
    keys: std::sync::RwLock<Keyring>,
    /// The genesis's entry key, under which nodes' chain keys are sealed
    /// ([`Keyring::origin`]).
    origin: Arc<EntryKey>,
    /// When each master-key rotation was stored: how long its retired key
    /// still vouches for what nodes publish (`keyed`).
    rotation_times: std::sync::RwLock<keyed::RotationTimes>,
    /// The master key this replica was told to rotate to
    /// (`KEYHOLE_NEW_MASTER_KEY`), if any.
    next_master: Option<Arc<AesKey>>,
    components: jetstream::object_store::ObjectStore,
    status: Arc<FleetStatus>,
    handle: tokio::runtime::Handle,
    config: ClusterConfig,
    /// This replica's audit chain on its way to the fleet's stream.
    audit: audit::Shipping,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("fleet", &self.shared.get().map(|s| s.fleet.clone()))
            .field("servers", &self.config.display_urls())
            .finish_non_exhaustive()
    }
}

/// How a replica joins.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Join {
    /// A CLI command: the cluster must answer now, and the replica is
    /// brought up to date before the command runs.
    Now,
    /// A node: it starts serving its replica at once, whether or not the
    /// cluster answers, and joins and follows the fleet when it can.
    Serving,
}

impl Fleet {
    /// Joins `replica` (opened under `master`) to the fleet at `config`,
    /// creating the fleet's stream, object store and genesis if this is
    /// the first replica, and starts following it. `next_master`, the key
    /// a master-key rotation is to move to, lets the replica follow that
    /// rotation (and join a fleet already rotated to it).
    ///
    /// With [`Join::Now`], fails with a clear error when no server answers
    /// within a few seconds, when the fleet was created under another
    /// master key, or when the replica belongs to another fleet; nothing is
    /// written then. With [`Join::Serving`], returns at once; until the
    /// fleet is reached the replica serves what it has and refuses admin
    /// writes.
    pub fn join(
        config: ClusterConfig,
        master: &AesKey,
        next_master: Option<&AesKey>,
        replica: Arc<SqliteStore>,
        join: Join,
    ) -> Result<Self, StoreError> {
        let copy = |key: &AesKey| AesKey::from_slice(key.expose()).expect("a key's own length");
        let next_master = next_master.map(|key| Arc::new(copy(key)));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("keyhole-fleet")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Cluster(format!("cannot start the cluster client: {e}")))?;
        let handle = runtime.handle().clone();
        let status = Arc::new(FleetStatus::default());
        let slot = Arc::new(OnceLock::new());
        match join {
            Join::Now => {
                let shared = runtime.block_on(connect(
                    &config,
                    master,
                    next_master.clone(),
                    &replica,
                    &status,
                    &handle,
                ))?;
                let shared = start(shared, &slot);
                runtime.block_on(follower::catch_up(&shared))?;
            }
            Join::Serving => {
                replica.replicate_through(Arc::new(log::NotYet::new(Arc::clone(&slot))));
                let master = copy(master);
                let (config, replica, status, slot) = (
                    config.clone(),
                    Arc::clone(&replica),
                    Arc::clone(&status),
                    Arc::clone(&slot),
                );
                runtime.spawn(async move {
                    let mut delay = Duration::from_millis(100);
                    loop {
                        let next = next_master.clone();
                        match connect(&config, &master, next, &replica, &status, &handle).await {
                            Ok(shared) => {
                                let shared = start(shared, &slot);
                                tracing::info!(
                                    "cluster: following fleet {} at {}",
                                    shared.fleet,
                                    config.display_urls()
                                );
                                return;
                            }
                            // Wrong key, another fleet, refused
                            // credentials are said loudly; every failure is
                            // tried again (an operator may fix it without a
                            // restart).
                            Err(e) => {
                                if matches!(e, StoreError::Cluster(_)) {
                                    tracing::error!(
                                        "cluster: {e}; serving the local replica, retrying in {delay:?}"
                                    );
                                } else {
                                    tracing::warn!(
                                        "cluster: {e}; serving the local replica, retrying in {delay:?}"
                                    );
                                }
                                tokio::time::sleep(delay).await;
                                delay = (delay * 2).min(Duration::from_secs(5));
                            }
                        }
                    }
                });
            }
        }
        Ok(Self {
            shared: slot,
            replica,
            status,
            config,
            _runtime: runtime,
        })
    }

    /// The status of this replica's link to the fleet (for `/metrics` and
    /// `--max-stale`).
    pub fn status(&self) -> Arc<FleetStatus> {
        Arc::clone(&self.status)
    }

    /// The fleet's identity, once joined.
    pub fn id(&self) -> Option<String> {
        self.shared.get().map(|s| s.fleet.clone())
    }

    /// Ships `source`'s audit chain, which must verify, to the fleet's
    /// trail as its own node, `imported-…`, named after the chain's key (so
    /// importing the same store again names the same node and ships nothing
    /// twice): how `keyhole cluster import` brings a single node's history.
    /// Returns the node's name and what the chain verified to.
    pub fn import_trail(
        &self,
        source: &Arc<SqliteStore>,
    ) -> Result<(String, crate::audit::Verification), StoreError> {
        use crate::store::AuditLog as _;
        let shared = self
            .shared
            .get()
            .ok_or_else(|| StoreError::ClusterUnavailable("not connected to the fleet".into()))?;
        let verification = source.verify_audit()?;
        if let Some(bad) = &verification.first_bad {
            return Err(StoreError::Corrupt(format!(
                "the audit trail of {} does not verify at record {} ({}): see `keyhole audit verify` there; nothing was imported",
                source.data_dir().display(),
                bad.seq,
                bad.problem
            )));
        }
        let name = hex::encode(&source.chain_key()?.derive("keyhole import node name")[..4]);
        let node = format!("imported-{name}");
        let shipping = audit::Shipping::new(node.clone());
        self._runtime
            .block_on(audit::deliver_chain(shared, &shipping, source, false))?;
        Ok((node, verification))
    }

    /// Records of this replica's audit chain the fleet's trail lacks.
    pub fn audit_waiting(&self) -> Result<u64, StoreError> {
        self.replica.audit_waiting()
    }

    /// This replica's name in the fleet's audit trail, once joined.
    pub fn node(&self) -> Option<String> {
        self.shared.get().map(|s| s.audit.node.clone())
    }

    /// What the fleet's nodes record (audit chains, last uses), as this
    /// replica reads it.
    pub fn records(&self) -> Arc<dyn FleetRecords> {
        Arc::new(FleetTrail {
            shared: Arc::clone(&self.shared),
            handle: self._runtime.handle().clone(),
        })
    }
}

/// [`FleetRecords`] through a fleet's connection.
struct FleetTrail {
    shared: Arc<OnceLock<Arc<Shared>>>,
    handle: tokio::runtime::Handle,
}

impl FleetTrail {
    fn joined(&self) -> Result<&Arc<Shared>, StoreError> {
        self.shared.get().ok_or_else(|| {
            StoreError::ClusterUnavailable(
                "this node has not reached the cluster since it started, so the fleet's audit trail cannot be read".into(),
            )
        })
    }

    /// The fleet, if this replica follows it: what reading the fleet's
    /// records needs.
    fn following(&self) -> Result<&Arc<Shared>, StoreError> {
        let shared = self.joined()?;
        // Stopped at an entry (a rotation to a key it does not hold), it
        // does not know which keys the fleet has retired since.
        if let Some(why) = shared.status.blocked() {
            return Err(StoreError::ClusterUnavailable(format!(
                "this node does not follow the fleet now, so its reading of the fleet's records could be stale; ask a node that follows it ({why})"
            )));
        }
        Ok(shared)
    }
}

impl FleetRecords for FleetTrail {
    fn deliver(&self, timeout: Duration) -> Result<u64, StoreError> {
        let shared = self.joined()?;
        self.handle.block_on(async {
            tokio::time::timeout(timeout, audit::deliver_pending(shared))
                .await
                .map_err(|_| {
                    StoreError::ClusterUnavailable(format!(
                        "the cluster did not take this replica's audit records within {timeout:?}"
                    ))
                })?
        })?;
        Ok(shared
            .audit
            .shipped
            .load(std::sync::atomic::Ordering::Relaxed))
    }

    fn fleet_entries(&self, query: &Query) -> Result<Vec<Entry>, StoreError> {
        let shared = self.following()?;
        self.handle.block_on(audit::entries(shared, query))
    }

    fn verify_fleet(&self) -> Result<Vec<NodeVerification>, StoreError> {
        let shared = self.following()?;
        self.handle.block_on(audit::verify(shared))
    }

    fn node(&self) -> Option<String> {
        self.shared.get().map(|s| s.audit.node.clone())
    }

    fn last_uses(&self, secret: &str) -> Result<Vec<crate::store::UseRecord>, StoreError> {
        let shared = self.following()?;
        self.handle.block_on(uses::of_secret(shared, secret))
    }
}

/// Makes the replica write through the fleet and starts following it.
fn start(shared: Shared, slot: &OnceLock<Arc<Shared>>) -> Arc<Shared> {
    let shared = Arc::new(shared);
    shared
        .replica
        .replicate_through(Arc::new(log::FleetLog::new(Arc::clone(&shared))));
    shared.handle.spawn(follower::follow(Arc::clone(&shared)));
    shared
        .handle
        .spawn(follower::watch_connection(Arc::clone(&shared)));
    shared.handle.spawn(audit::ship(Arc::clone(&shared)));
    let _ = slot.set(Arc::clone(&shared));
    shared
}

/// Connects, finds or creates the fleet, and checks the master key and the
/// replica's fleet.
async fn connect(
    config: &ClusterConfig,
    master: &AesKey,
    next_master: Option<Arc<AesKey>>,
    replica: &Arc<SqliteStore>,
    status: &Arc<FleetStatus>,
    handle: &tokio::runtime::Handle,
) -> Result<Shared, StoreError> {
    let unreachable = |e: &dyn std::fmt::Display| {
        StoreError::ClusterUnavailable(format!(
            "cannot reach the cluster at {}: {e}",
            config.display_urls()
        ))
    };
    let mut options = async_nats::ConnectOptions::new()
        .name("keyhole")
        .connection_timeout(CONNECT_TIMEOUT)
        .max_reconnects(None::<usize>);
    if let Some(path) = &config.credentials {
        options = options.credentials_file(path).await.map_err(|e| {
            StoreError::Cluster(format!(
                "cannot read the NATS credentials file {}: {e}",
                path.display()
            ))
        })?;
    }
    // The client does not log in with a URL's `user:password@` by itself.
    match config.url_login().map_err(StoreError::Cluster)? {
        Some(config::UrlLogin::UserPassword { user, password }) => {
            options = options.user_and_password(user, password.as_str().to_owned());
        }
        Some(config::UrlLogin::Token(token)) => {
            options = options.token(token.as_str().to_owned());
        }
        None => {}
    }
    if let Some(ca) = &config.ca {
        options = options.add_root_certificates(ca.clone());
    }
    if config.requires_tls() {
        options = options.require_tls(true);
    }
    let client = tokio::time::timeout(CONNECT_TIMEOUT, options.connect(config.urls.clone()))
        .await
        .map_err(|_| unreachable(&"no server answered within 5 s"))?
        .map_err(|e| {
            let text = e.to_string();
            let given = config.credentials.is_some() || config.urls.iter().any(|u| u.contains('@'));
            if (text.contains("authorization") || text.contains("authentication")) && given {
                StoreError::Cluster(format!(
                    "the cluster at {} refused these credentials: {text}",
                    config.display_urls()
                ))
            } else if text.contains("authorization") || text.contains("authentication") {
                StoreError::Cluster(format!(
                    "the cluster at {} asks for a login and none was given (user:password@ in the URLs, or {}): {text}",
                    config.display_urls(),
                    config::CREDENTIALS_ENV
                ))
            } else {
                unreachable(&text)
            }
        })?;
    let info = client.server_info();
    if !info.jetstream {
        return Err(StoreError::Cluster(format!(
            "the NATS server {} has no JetStream: start it with -js",
            info.server_name
        )));
    }
    // Three copies on a cluster: losing any one server loses no write.
    let replicas = if info.cluster.is_some() { 3 } else { 1 };
    if replicas == 1 {
        tracing::warn!(
            "cluster: the NATS server {} is not clustered: the fleet's state has one copy",
            info.server_name
        );
    }
    // At an edge site the server is a leaf of the hub, whose JetStream is
    // another domain: the fleet's streams are reached through it.
    let js = match &config.domain {
        Some(domain) => jetstream::context::ContextBuilder::new()
            .domain(domain)
            .timeout(ACK_TIMEOUT)
            .build(client.clone()),
        None => {
            if let Some(own) = info.domain.as_deref().filter(|d| !d.is_empty()) {
                tracing::warn!(
                    "cluster: the NATS server {} is in JetStream domain `{own}`; if it is an edge site's leaf server, set {} to the hub's domain, or the fleet's streams are made here, apart from the hub's",
                    info.server_name,
                    config::DOMAIN_ENV
                );
            }
            jetstream::context::ContextBuilder::new()
                .timeout(ACK_TIMEOUT)
                .build(client.clone())
        }
    };
    let config_of_stream = jetstream::stream::Config {
        name: STATE_STREAM.into(),
        subjects: vec![STATE_SUBJECT.into(), MASTER_KEY_SUBJECT.into()],
        num_replicas: replicas,
        storage: jetstream::stream::StorageType::File,
        // The log is the state: entries are never removed, by age, count,
        // deletion or purge.
        deny_delete: true,
        deny_purge: true,
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + SETUP_TIMEOUT;
    let stream = until_set_up(deadline, &format!("open the stream {STATE_STREAM}"), || {
        js.get_or_create_stream(config_of_stream.clone())
    })
    .await
    .map_err(|e| unreachable(&e))?;
    // A fleet made before master-key rotations had a subject of their own.
    let mut stream = stream;
    if !stream
        .cached_info()
        .config
        .subjects
        .iter()
        .any(|s| s == MASTER_KEY_SUBJECT)
    {
        let mut updated = stream.cached_info().config.clone();
        updated.subjects.push(MASTER_KEY_SUBJECT.into());
        js.update_stream(updated).await.map_err(|e| {
            unreachable(&format!(
                "the stream {STATE_STREAM} predates master-key rotations and needs the subject {MASTER_KEY_SUBJECT}, which could not be added ({e}): connect once with credentials allowed $JS.API.STREAM.UPDATE.{STATE_STREAM}"
            ))
        })?;
        stream = js
            .get_stream(STATE_STREAM)
            .await
            .map_err(|e| unreachable(&e))?;
    }
    let components = until_set_up(
        deadline,
        &format!("open the object store {COMPONENTS_BUCKET}"),
        || async {
            match js.get_object_store(COMPONENTS_BUCKET).await {
                Ok(store) => Ok(store),
                Err(_) => js
                    .create_object_store(jetstream::object_store::Config {
                        bucket: COMPONENTS_BUCKET.into(),
                        num_replicas: replicas,
                        storage: jetstream::stream::StorageType::File,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| e.to_string()),
            }
        },
    )
    .await
    .map_err(|e| unreachable(&e))?;
    until_set_up(
        deadline,
        &format!("open the stream {}", audit::AUDIT_STREAM),
        || {
            js.get_or_create_stream(jetstream::stream::Config {
                name: audit::AUDIT_STREAM.into(),
                subjects: vec![audit::AUDIT_SUBJECTS.into()],
                num_replicas: replicas,
                storage: jetstream::stream::StorageType::File,
                // The fleet's trail: a record, once stored, stays.
                deny_delete: true,
                deny_purge: true,
                ..Default::default()
            })
        },
    )
    .await
    .map_err(|e| unreachable(&e))?;
    until_set_up(
        deadline,
        &format!("open the stream {}", uses::USES_STREAM),
        || {
            js.get_or_create_stream(jetstream::stream::Config {
                name: uses::USES_STREAM.into(),
                subjects: vec![uses::USES_SUBJECTS.into()],
                num_replicas: replicas,
                storage: jetstream::stream::StorageType::File,
                // Each node's latest mark per binding.
                max_messages_per_subject: 1,
                ..Default::default()
            })
        },
    )
    .await
    .map_err(|e| unreachable(&e))?;
    let genesis = genesis(&js, &stream, master, deadline).await?;
    let fleet = genesis.fleet.clone();
    let (rotations, mut rotation_times) = rotation_entries(&stream).await?;
    let keys = keyring(&rotations, &genesis, master, next_master.as_deref())?;
    // The times of the rotations the keyring holds (the authentic ones).
    rotation_times.retain(|seq, _| keys.starting_at(seq + 1).is_some());
    let replica2 = Arc::clone(replica);
    let fleet2 = fleet.clone();
    handle
        .spawn_blocking(move || replica2.bind_fleet(&fleet2))
        .await
        .map_err(|e| StoreError::Cluster(e.to_string()))??;
    let replica2 = Arc::clone(replica);
    let node = handle
        .spawn_blocking(move || replica2.audit_node_id())
        .await
        .map_err(|e| StoreError::Cluster(e.to_string()))??;
    status.set_connected(true);
    Ok(Shared {
        client,
        js,
        replica: Arc::clone(replica),
        fleet,
        origin: keys.origin(),
        keys: std::sync::RwLock::new(keys),
        rotation_times: std::sync::RwLock::new(rotation_times),
        next_master,
        components,
        status: Arc::clone(status),
        handle: handle.clone(),
        config: config.clone(),
        audit: audit::Shipping::new(node),
    })
}

/// Runs one step of joining until it succeeds or `deadline` passes, then
/// says what could not be done and why. The first failure is logged, so a
/// command that waits for a cluster electing its leaders says what it waits
/// for.
async fn until_set_up<T, E, F, Fut>(
    deadline: tokio::time::Instant,
    what: &str,
    mut step: F,
) -> Result<T, String>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut tries = 0u32;
    loop {
        match step().await {
            Ok(done) => return Ok(done),
            Err(e) if tokio::time::Instant::now() < deadline => {
                if tries == 0 {
                    tracing::info!("cluster: waiting for JetStream to {what}: {e}");
                }
                tries += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(format!("cannot {what}: {e}")),
        }
    }
}

/// The fleet's keyring as this replica's keys open it, found by walking the
/// master-key rotation entries in order from the genesis.
///
/// With the genesis's key (the replica holds the first master key), each
/// rotation is taken only if its MAC verifies under the keyring so far and
/// its keyring continues that one; the walk stops at the first authentic
/// rotation this replica cannot open (its follower stops there too, and
/// says why). Without it (the replica holds only a later key), the walk
/// starts at a rotation whose keyring one of its keys opens: sealed under a
/// key only the fleet's operators held then, and consistent with its own
/// MAC. So a retired master key a node still holds cannot hand it another
/// keyring: a rotation sealed under that key, published after the key was
/// retired, does not verify under the entry key then in force.
fn keyring(
    rotations: &[RotationMessage],
    genesis: &Genesis,
    master: &AesKey,
    next_master: Option<&AesKey>,
) -> Result<Keyring, StoreError> {
    let held: Vec<&AesKey> = next_master.into_iter().chain([master]).collect();
    match walk_rotations(genesis, &held, rotations) {
        Some(keys) => Ok(keys),
        // No key it holds opens the genesis or any rotation: the genesis's
        // refusal says so.
        None => Err(genesis
            .open(master)
            .err()
            .unwrap_or_else(|| StoreError::Cluster("the fleet's keyring cannot be read".into()))),
    }
}

/// One message of the master-key rotation subject: its sequence, payload
/// and MAC.
type RotationMessage = (u64, bytes::Bytes, Option<String>);

/// The walk [`keyring`] makes over `rotations` (in stream order) with the
/// keys `held` (the next master key first).
fn walk_rotations(
    genesis: &Genesis,
    held: &[&AesKey],
    rotations: &[RotationMessage],
) -> Option<Keyring> {
    let mut keys = held
        .iter()
        .find_map(|key| genesis.open(key).ok())
        .map(Keyring::first);
    for (seq, payload, tag) in rotations {
        let seq = *seq;
        let Some(rotation) = RotationEntry::decode(payload) else {
            continue;
        };
        let opened = held
            .iter()
            .find_map(|key| rotation.keyring(key, &genesis.fleet));
        let authentic = |under: &Keyring| {
            tag.as_deref().is_some_and(|t| {
                under
                    .for_entry(seq)
                    .verifies(&genesis.fleet, seq, payload, t)
            })
        };
        match (&keys, opened) {
            (Some(current), Some(next)) => {
                if authentic(current)
                    && next.newest_from() == seq + 1
                    && next.len() == current.len() + 1
                    && next.agrees_with(current)
                {
                    keys = Some(next);
                }
            }
            // An authentic rotation this replica cannot follow: it stops
            // there.
            (Some(current), None) => {
                if authentic(current) {
                    break;
                }
            }
            (None, Some(next)) => {
                if authentic(&next) && next.newest_from() == seq + 1 {
                    keys = Some(next);
                }
            }
            (None, None) => {}
        }
    }
    keys
}

/// Every message on the master-key rotation subject (sequence, payload,
/// MAC), and when JetStream stored each.
async fn rotation_entries(
    stream: &jetstream::stream::Stream,
) -> Result<(Vec<RotationMessage>, keyed::RotationTimes), StoreError> {
    let messages = read::all_messages(
        stream,
        jetstream::consumer::pull::OrderedConfig {
            filter_subject: MASTER_KEY_SUBJECT.into(),
            ..Default::default()
        },
        None,
    )
    .await
    .map_err(|e| {
        StoreError::ClusterUnavailable(format!("cannot read the fleet's master-key rotations: {e}"))
    })?;
    let mut times = keyed::RotationTimes::new();
    let rotations = messages
        .into_iter()
        .map(|message| {
            let info = message.info().ok();
            let seq = info.as_ref().map_or(0, |i| i.stream_sequence);
            if let Some(info) = &info {
                times.insert(seq, unix_ms(info.published));
            }
            let tag = message
                .headers
                .as_ref()
                .and_then(|h| h.get(entry::MAC_HEADER))
                .map(|v| v.as_str().to_owned());
            (seq, message.payload.clone(), tag)
        })
        .collect();
    Ok((rotations, times))
}

/// `at` in Unix milliseconds.
fn unix_ms(at: time::OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// The fleet's genesis entry, written first if the stream is empty (by
/// exactly one of the replicas racing to: it must be entry 1).
async fn genesis(
    js: &jetstream::Context,
    stream: &jetstream::stream::Stream,
    master: &AesKey,
    deadline: tokio::time::Instant,
) -> Result<Genesis, StoreError> {
    let first = stream.get_raw_message(1).await;
    let payload = match first {
        Ok(message) => message.payload,
        Err(_) => {
            let (genesis, _) = Genesis::new(master);
            // A stream just made may not have its leader yet: retry until
            // the setup's deadline. Only one genesis can be entry 1.
            loop {
                let publish = jetstream::message::PublishMessage::build()
                    .payload(genesis.encode().into())
                    .expected_last_sequence(0);
                let outcome = match js.send_publish(STATE_SUBJECT, publish).await {
                    Ok(ack) => ack.await.map(|_| ()),
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(()) => break,
                    Err(e)
                        if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence =>
                    {
                        break;
                    }
                    Err(e) if tokio::time::Instant::now() < deadline => {
                        tracing::debug!("cluster: cannot write the genesis entry yet: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => {
                        return Err(StoreError::ClusterUnavailable(format!(
                            "cannot write the fleet's first entry: {e}"
                        )));
                    }
                }
            }
            stream
                .get_raw_message(1)
                .await
                .map_err(|e| {
                    StoreError::ClusterUnavailable(format!(
                        "cannot read the fleet's first entry: {e}"
                    ))
                })?
                .payload
        }
    };
    Genesis::decode(&payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::replication::ChangeSet;

    /// A rotation message at `seq` moving `current` to a new entry key,
    /// sealed under `new`, with its MAC under `signed_with` (the entry key
    /// in force there, for an authentic one).
    fn rotation(
        fleet: &str,
        seq: u64,
        current: &Keyring,
        new: &AesKey,
        signed_with: &Keyring,
    ) -> (RotationMessage, Keyring) {
        let next = current.rotated(seq + 1);
        let entry = RotationEntry::new(ChangeSet::default(), b"check", &next.seal(new, fleet));
        let payload = serde_json::to_vec(&entry).unwrap();
        let tag = signed_with.for_entry(seq).mac(fleet, seq, &payload);
        ((seq, payload.into(), Some(tag)), next)
    }

    fn same(a: &Keyring, b: &Keyring) -> bool {
        a.len() == b.len() && a.agrees_with(b)
    }

    #[test]
    fn the_keyring_follows_authentic_rotations_only() {
        let k0 = AesKey::generate();
        let (genesis, first) = Genesis::new(&k0);
        let fleet = genesis.fleet.clone();
        let start = Keyring::first(first);
        let (k1, k2) = (AesKey::generate(), AesKey::generate());
        let (r1, after_r1) = rotation(&fleet, 10, &start, &k1, &start);
        let (r2, after_r2) = rotation(&fleet, 20, &after_r1, &k2, &after_r1);

        // Every key, in order, for a node that holds them in turn.
        let all = walk_rotations(&genesis, &[&k2, &k1, &k0], &[r1.clone(), r2.clone()]).unwrap();
        assert!(same(&all, &after_r2));
        // A node with the newest key alone gets the whole keyring.
        let newest = walk_rotations(&genesis, &[&k2], &[r1.clone(), r2.clone()]).unwrap();
        assert!(same(&newest, &after_r2));
        // A node with the first key alone stops at the first rotation.
        let stopped = walk_rotations(&genesis, &[&k0], &[r1.clone(), r2.clone()]).unwrap();
        assert!(same(&stopped, &start));

        // Whoever kept the retired first key publishes, after the
        // rotation, a "rotation" sealed under it, MAC'd with the first
        // entry key: a node still holding only that key is not moved by it.
        let (forged, _) = rotation(&fleet, 30, &start, &k0, &start);
        let walked = walk_rotations(&genesis, &[&k0], &[r1.clone(), forged.clone()]).unwrap();
        assert!(
            same(&walked, &start),
            "a retired key handed the node a keyring"
        );
        // Nor is a node holding both keys, nor one with the new key alone.
        let walked = walk_rotations(&genesis, &[&k1, &k0], &[r1.clone(), forged.clone()]).unwrap();
        assert!(same(&walked, &after_r1));
        // Junk on the subject (no MAC, not a rotation) is passed over.
        let junk: RotationMessage = (15, bytes::Bytes::from_static(b"{}"), None);
        let walked = walk_rotations(&genesis, &[&k2], &[r1, junk, r2]).unwrap();
        assert!(same(&walked, &after_r2));
        // No key that opens anything: nothing.
        assert!(walk_rotations(&genesis, &[&AesKey::generate()], &[forged]).is_none());
    }
}
