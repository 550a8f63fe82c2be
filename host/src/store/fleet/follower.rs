//! The follower: applies the fleet's entries to the replica in order, and
//! keeps the link's status.
//!
//! Invariant: entries are applied in stream order, each once, each only
//! after its MAC verifies; an entry that does not verify or does not come
//! right after the last one applied stops the follower there (it retries,
//! and says why) rather than being skipped.

use super::{MASTER_KEY_SUBJECT, STATE_STREAM, STATE_SUBJECT, Shared, components, entry};
use crate::crypto::AesKey;
use crate::store::StoreError;
use crate::store::replication::ChangeSet;
use async_nats::jetstream;
use futures_util::StreamExt as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How a replica's link to its fleet stands.
#[derive(Default)]
pub struct FleetStatus {
    connected: AtomicBool,
    applied: Mutex<u64>,
    applied_changed: Condvar,
    last_sync: Mutex<Option<Instant>>,
    /// Why the follower cannot go on (an entry that cannot be applied, a
    /// log that is not the one it followed), while it cannot.
    blocked: Mutex<Option<String>>,
    /// Entries rejected because their MAC did not verify.
    rejected: AtomicU64,
    /// Whether the follower had applied every entry it knew of when it last
    /// looked: a node publishes its records only then, keyed under the
    /// newest entry key (`keyed`).
    caught_up: AtomicBool,
}

impl std::fmt::Debug for FleetStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetStatus")
            .field("connected", &self.connected())
            .field("applied", &self.applied())
            .finish()
    }
}

impl FleetStatus {
    /// Whether the replica is connected to a NATS server now.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// The last entry the replica applied.
    pub fn applied(&self) -> u64 {
        *self.applied.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seconds since the replica was last known to be connected and
    /// following (`None`: never, since this process started).
    pub fn seconds_since_sync(&self) -> Option<f64> {
        self.last_sync
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|at| at.elapsed().as_secs_f64())
    }

    /// Entries of the log rejected because they were not written by a
    /// holder of the master key.
    pub fn rejected_entries(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Records whether the link is up; the replica counts as in sync while
    /// it is up and its follower is not stuck.
    pub(super) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
        if connected && self.blocked().is_none() {
            *self.last_sync.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
    }

    /// Whether the follower has applied every entry it knew of (see
    /// [`FleetStatus::caught_up`]'s field).
    pub(super) fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Relaxed)
    }

    pub(super) fn set_caught_up(&self, caught_up: bool) {
        self.caught_up.store(caught_up, Ordering::Relaxed);
    }

    pub(super) fn set_applied(&self, seq: u64) {
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        if seq > *applied {
            *applied = seq;
            self.applied_changed.notify_all();
        }
    }

    /// Why the follower is stuck, if it is (see [`FleetStatus`]).
    pub fn blocked(&self) -> Option<String> {
        self.blocked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_blocked(&self, why: Option<String>) {
        *self.blocked.lock().unwrap_or_else(|p| p.into_inner()) = why;
        self.applied_changed.notify_all();
    }

    /// Waits until entry `seq` is applied; `false` if `timeout` passed first.
    pub(super) fn wait_applied(&self, seq: u64, timeout: Duration) -> bool {
        let applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        let (applied, _) = self
            .applied_changed
            .wait_timeout_while(applied, timeout, |a| *a < seq)
            .unwrap_or_else(|p| p.into_inner());
        *applied >= seq
    }
}

/// Follows the fleet's log for as long as the process runs, resuming after
/// each interruption from the last entry applied.
pub(super) async fn follow(shared: Arc<Shared>) {
    let mut delay = Duration::from_millis(100);
    loop {
        let before = shared.status.applied();
        // Not known to be caught up until an entry with none pending after
        // it is applied (or `keyed::may_publish` finds none to apply).
        shared.status.set_caught_up(false);
        let followed = follow_once(&shared).await;
        shared.status.set_caught_up(false);
        match followed {
            Ok(()) => {}
            // An entry that cannot be applied here: the follower stops at
            // it (never skips it) and says why until it can.
            Err(Failure::Blocked(e)) => {
                tracing::error!("cluster: {e}; retrying in {delay:?}");
                shared.status.set_blocked(Some(e.to_string()));
            }
            Err(Failure::Link(e)) => {
                tracing::warn!("cluster: following the fleet stopped: {e}; resuming in {delay:?}");
            }
        }
        delay = if shared.status.applied() > before {
            Duration::from_millis(100)
        } else {
            (delay * 2).min(Duration::from_secs(5))
        };
        tokio::time::sleep(delay).await;
    }
}

/// Why following stopped: the link (retried quietly), or an entry this
/// replica cannot apply (it stops there, and says so).
enum Failure {
    Link(StoreError),
    Blocked(StoreError),
}

async fn follow_once(shared: &Arc<Shared>) -> Result<(), Failure> {
    let replica = Arc::clone(&shared.replica);
    let applied = shared
        .handle
        .spawn_blocking(move || replica.applied_entry())
        .await
        .map_err(|e| Failure::Blocked(StoreError::Cluster(e.to_string())))?
        .map_err(Failure::Blocked)?;
    shared.status.set_applied(applied);
    let broken =
        |e: &dyn std::fmt::Display| Failure::Link(StoreError::ClusterUnavailable(e.to_string()));
    let (stream, last) = last_entry(shared).await.map_err(Failure::Link)?;
    // A log shorter than what this replica applied was purged, or deleted
    // and made again: not the log this replica followed.
    if last < applied {
        return Err(Failure::Blocked(StoreError::Cluster(format!(
            "the fleet's log {STATE_STREAM} ends at entry {last}, but this replica applied up to {applied}: the stream was purged or made again; not following it"
        ))));
    }
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subjects: vec![STATE_SUBJECT.into(), MASTER_KEY_SUBJECT.into()],
            deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                start_sequence: applied + 1,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| broken(&e))?;
    let mut messages = consumer.messages().await.map_err(|e| broken(&e))?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| broken(&e))?;
        let info = message.info().map_err(|e| broken(&e))?;
        let seq = info.stream_sequence;
        let rotation = message.subject.as_str() == MASTER_KEY_SUBJECT;
        let tag = message
            .headers
            .as_ref()
            .and_then(|h| h.get(entry::MAC_HEADER))
            .map(|v| v.as_str().to_owned());
        shared.status.set_caught_up(false);
        let stored_ms = super::unix_ms(info.published);
        apply(
            shared,
            seq,
            &message.payload,
            tag.as_deref(),
            rotation,
            stored_ms,
        )
        .await?;
        shared.status.set_blocked(None);
        shared.status.set_caught_up(info.pending == 0);
    }
    Ok(())
}

/// Verifies and applies entry `seq` (a master-key `rotation` if it came on
/// that subject). An entry whose MAC does not verify was not written by a
/// holder of the master key: every replica rejects it alike, so it is
/// applied as an entry that changes nothing (logged and counted), and the
/// fleet goes on past it.
async fn apply(
    shared: &Arc<Shared>,
    seq: u64,
    payload: &[u8],
    tag: Option<&str>,
    rotation: bool,
    stored_ms: i64,
) -> Result<(), Failure> {
    let key = shared
        .keys
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .for_entry(seq);
    // Entry 1 is the genesis, read and checked when the replica joined.
    let change = if seq == 1 {
        ChangeSet::default()
    } else if !tag.is_some_and(|t| key.verifies(&shared.fleet, seq, payload, t)) {
        tracing::error!(
            "cluster: entry {seq} of {STATE_STREAM} fails its authentication (written by someone without the master key, or damaged): rejected, it changes nothing"
        );
        shared.status.rejected.fetch_add(1, Ordering::Relaxed);
        ChangeSet::default()
    } else if rotation {
        // When the key it retires stops vouching for what nodes publish
        // (`keyed`).
        shared
            .rotation_times
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(seq, stored_ms);
        return rotate(shared, seq, payload).await;
    } else {
        let mut change: ChangeSet = serde_json::from_slice(payload).map_err(|e| {
            Failure::Blocked(StoreError::Cluster(format!(
                "entry {seq} of {STATE_STREAM} cannot be read: {e}"
            )))
        })?;
        // Each component once, however many functions of the entry run it.
        let mut components = std::collections::HashMap::new();
        for sha in entry::component_digests(&change) {
            if let std::collections::hash_map::Entry::Vacant(slot) = components.entry(sha) {
                let bytes = components::fetch(shared, slot.key())
                    .await
                    .map_err(|e| match e {
                        components::ReadError::Unavailable(e) => Failure::Link(e),
                        components::ReadError::Wrong(e) => Failure::Blocked(e),
                    })?;
                slot.insert(bytes);
            }
        }
        entry::restore_components(&mut change, |sha| {
            components
                .get(sha)
                .cloned()
                .ok_or_else(|| StoreError::Cluster(format!("component {sha} was not fetched")))
        })
        .map_err(Failure::Blocked)?;
        change
    };
    apply_rows(shared, seq, change).await
}

/// Applies entry `seq`'s rows to the replica (off the runtime), and
/// records that it did.
async fn apply_rows(shared: &Arc<Shared>, seq: u64, change: ChangeSet) -> Result<(), Failure> {
    let replica = Arc::clone(&shared.replica);
    shared
        .handle
        .spawn_blocking(move || replica.apply_entry(seq, &change))
        .await
        .map_err(|e| Failure::Blocked(StoreError::Cluster(e.to_string())))?
        .map_err(|e| {
            Failure::Blocked(StoreError::Cluster(format!(
                "entry {seq} of {STATE_STREAM} cannot be applied to this replica: {e}"
            )))
        })?;
    shared.status.set_applied(seq);
    Ok(())
}

/// Applies master-key rotation entry `seq` (its MAC verified): with the
/// new master key, if this replica was given it, the replica re-wraps and
/// switches, and later entries are checked under the keyring the entry
/// carries. Without it the follower stops here, so the replica keeps the
/// last state it can open and serves it, and says why.
async fn rotate(shared: &Arc<Shared>, seq: u64, payload: &[u8]) -> Result<(), Failure> {
    let blocked = |why: String| Failure::Blocked(StoreError::Cluster(why));
    let rotation = entry::RotationEntry::decode(payload)
        .ok_or_else(|| blocked(format!("entry {seq} of {STATE_STREAM} cannot be read")))?;
    let key_check = rotation.key_check();
    // A replica that joined after a later rotation holds its keyring (and
    // perhaps only its key): this earlier one's rows are applied as any
    // entry's, since the later rotation re-wraps every data key again.
    let superseded = shared
        .keys
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .newest_from()
        > seq + 1;
    let replica = Arc::clone(&shared.replica);
    let next = shared.next_master.clone();
    let check = key_check.clone();
    /// What the replica makes of the rotation.
    enum Seen {
        /// Applied already (it proposed it, and took its keyring then).
        Applied,
        /// The new key, which this replica holds.
        NewKey(AesKey),
        /// Neither key it holds is the new one.
        NoKey,
    }
    // Off the runtime: the replica's locks may be held by a write that is
    // itself waiting for this runtime.
    let seen = shared
        .handle
        .spawn_blocking(move || -> Result<Seen, StoreError> {
            if replica.applied_entry()? >= seq {
                return Ok(Seen::Applied);
            }
            let current = replica.current_master();
            Ok(next
                .as_deref()
                .into_iter()
                .chain([&*current])
                .find(|key| crate::store::opens_key_check(key, &check))
                .map_or(Seen::NoKey, |key| {
                    Seen::NewKey(AesKey::from_slice(key.expose()).expect("a key's own length"))
                }))
        })
        .await
        .map_err(|e| blocked(e.to_string()))?
        .map_err(Failure::Blocked)?;
    let new = match seen {
        Seen::Applied => {
            shared.status.set_applied(seq);
            return Ok(());
        }
        Seen::NewKey(new) => new,
        Seen::NoKey if superseded => return apply_rows(shared, seq, rotation.change).await,
        Seen::NoKey => {
            return Err(blocked(format!(
                "entry {seq} of {STATE_STREAM} rotates the fleet's master key, and this node does not hold the new key: it keeps serving the state before it (entry {}); restart it with the new key in {} (and the current one still in {}) to follow",
                seq - 1,
                crate::crypto::master_key::NEW_MASTER_KEY_ENV,
                crate::crypto::master_key::MASTER_KEY_ENV
            )));
        }
    };
    let keys = rotation
        .keyring(&new, &shared.fleet)
        .filter(|keys| {
            keys.newest_from() == seq + 1
                && keys.agrees_with(&shared.keys.read().unwrap_or_else(|p| p.into_inner()))
        })
        .ok_or_else(|| {
            blocked(format!(
                "entry {seq} of {STATE_STREAM} rotates the master key, but the fleet's keyring it carries does not open under the new key, or does not agree with the one this replica holds"
            ))
        })?;
    // In force before the entry commits: a write decided on the state
    // after it is proposed under the new entry key. (A replica that joined
    // after later rotations holds their keys already.)
    {
        let mut held = shared.keys.write().unwrap_or_else(|p| p.into_inner());
        if keys.len() > held.len() {
            *held = keys;
        }
    }
    let replica = Arc::clone(&shared.replica);
    let change = rotation.change;
    shared
        .handle
        .spawn_blocking(move || replica.apply_master_key_entry(seq, &change, &key_check, new))
        .await
        .map_err(|e| blocked(e.to_string()))?
        .map_err(|e| {
            blocked(format!(
                "entry {seq} of {STATE_STREAM} (a master-key rotation) cannot be applied to this replica: {e}"
            ))
        })?;
    tracing::info!("cluster: entry {seq}: switched to the fleet's new master key");
    shared.status.set_applied(seq);
    Ok(())
}

/// The fleet's log and the sequence of its last entry.
pub(super) async fn last_entry(
    shared: &Shared,
) -> Result<(jetstream::stream::Stream, u64), StoreError> {
    let broken = |e: &dyn std::fmt::Display| StoreError::ClusterUnavailable(e.to_string());
    let mut stream = shared
        .js
        .get_stream(STATE_STREAM)
        .await
        .map_err(|e| broken(&e))?;
    let last = stream
        .info()
        .await
        .map_err(|e| broken(&e))?
        .state
        .last_sequence;
    Ok((stream, last))
}

/// Waits until the replica has applied every entry the fleet had when this
/// was called (a CLI command then sees the fleet's latest state).
pub(super) async fn catch_up(shared: &Arc<Shared>) -> Result<(), StoreError> {
    let (_, last) = last_entry(shared).await?;
    let status = Arc::clone(&shared.status);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if status.applied() >= last {
            return Ok(());
        }
        // Give the follower a moment to try before believing it stuck.
        if let Some(why) = status.blocked() {
            return Err(StoreError::Cluster(why));
        }
        if Instant::now() >= deadline {
            return Err(StoreError::ClusterUnavailable(format!(
                "this replica did not catch up with the fleet's {last} entries within 60 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Keeps [`FleetStatus`] current with the client's connection, and says in
/// the log when the node is cut off and when it is back.
pub(super) async fn watch_connection(shared: Arc<Shared>) {
    let mut was = true;
    loop {
        let now = shared.client.connection_state() == async_nats::connection::State::Connected;
        shared.status.set_connected(now);
        if !now {
            shared.status.set_caught_up(false);
        }
        if was && !now {
            tracing::warn!(
                "cluster: cut off from {}: serving the last state applied (entry {})",
                shared.config.display_urls(),
                shared.status.applied()
            );
        } else if !was && now {
            tracing::info!(
                "cluster: reconnected to {}; catching up",
                shared.config.display_urls()
            );
        }
        was = now;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
