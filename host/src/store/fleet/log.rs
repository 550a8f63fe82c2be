//! The replica's side of the fleet's log: proposing an admin write, or a
//! master-key rotation, as the next entry ([`Replication`]).

use super::{
    ACK_TIMEOUT, MASTER_KEY_SUBJECT, STATE_SUBJECT, Shared, components, entry, entry::RotationEntry,
};
use crate::crypto::AesKey;
use crate::store::StoreError;
use crate::store::replication::{ChangeSet, Proposal, Replication};
use async_nats::jetstream;
use std::sync::Arc;
use std::time::Duration;

/// How long a write waits before it asks again when no stream answered.
const NO_STREAM_RETRY: Duration = Duration::from_millis(50);
/// How long a write that lost a race waits for this replica to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);

/// Proposes admin writes to the fleet's log.
pub(super) struct FleetLog {
    shared: Arc<Shared>,
}

impl FleetLog {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

fn unavailable(what: &str) -> StoreError {
    StoreError::ClusterUnavailable(what.to_owned())
}

impl Replication for FleetLog {
    fn propose(&self, applied: u64, change: &ChangeSet) -> Result<Proposal, StoreError> {
        let (stripped, components) = entry::strip_components(change);
        let payload = serde_json::to_vec(&stripped).expect("plain data");
        let shared = &self.shared;
        let tag = entry_tag(shared, applied + 1, &payload);
        shared.handle.block_on(async {
            let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
            tokio::time::timeout_at(deadline, async {
                for component in &components {
                    components::upload(shared, component, deadline).await?;
                }
                Ok::<_, StoreError>(())
            })
            .await
            .map_err(|_| {
                unavailable("the cluster did not take the component in time; nothing was written")
            })??;
            publish_entry(shared, STATE_SUBJECT, payload, &tag, applied, deadline).await
        })
    }

    /// Publishes the rotation on its own subject, with the fleet's keyring
    /// grown by a fresh entry key for the entries after it, sealed under
    /// `new`. Once accepted, this replica's own later proposals use that
    /// key (before its write commits, so none goes out under the old one).
    fn propose_master_key(
        &self,
        applied: u64,
        change: &ChangeSet,
        key_check: &[u8],
        new: &AesKey,
    ) -> Result<Proposal, StoreError> {
        let shared = &self.shared;
        let (stripped, components) = entry::strip_components(change);
        if !components.is_empty() {
            return Err(StoreError::Cluster(
                "a master-key rotation deploys no component".into(),
            ));
        }
        let keys = shared
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .rotated(applied + 2);
        let entry = RotationEntry::new(stripped, key_check, &keys.seal(new, &shared.fleet));
        let payload = serde_json::to_vec(&entry).expect("plain data");
        let tag = entry_tag(shared, applied + 1, &payload);
        let proposal = shared.handle.block_on(async {
            let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
            publish_entry(shared, MASTER_KEY_SUBJECT, payload, &tag, applied, deadline).await
        })?;
        if matches!(proposal, Proposal::Accepted(seq) if seq == applied + 1) {
            // Its time by this clock until the follower reads the stream's.
            let now = super::unix_ms(time::OffsetDateTime::now_utc());
            shared
                .rotation_times
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .entry(applied + 1)
                .or_insert(now);
            *shared.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        }
        Ok(proposal)
    }

    fn share_uses(&self, marks: Vec<crate::store::UseRecord>) {
        let shared = Arc::clone(&self.shared);
        self.shared
            .handle
            .spawn(super::uses::share(Arc::clone(&shared), marks));
    }

    fn await_newer(&self, applied: u64) -> Result<(), StoreError> {
        if self
            .shared
            .status
            .wait_applied(applied + 1, CATCH_UP_TIMEOUT)
        {
            Ok(())
        } else {
            Err(unavailable(
                "this replica is not receiving the cluster's entries, so the write cannot be decided on the latest state; nothing was written",
            ))
        }
    }
}

/// The MAC of `payload` as entry `seq`, under the entry key in force there.
fn entry_tag(shared: &Shared, seq: u64, payload: &[u8]) -> String {
    shared
        .keys
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .for_entry(seq)
        .mac(&shared.fleet, seq, payload)
}

/// Publishes `payload` on `subject` as the entry right after `applied`,
/// and says where the fleet put it, or that another came first.
async fn publish_entry(
    shared: &Shared,
    subject: &'static str,
    payload: Vec<u8>,
    tag: &str,
    applied: u64,
    deadline: tokio::time::Instant,
) -> Result<Proposal, StoreError> {
    // The MAC names the entry: a publish repeated after a lost
    // acknowledgement is recognised by JetStream's de-duplication and
    // answered with the place the first one took.
    let publish = || {
        jetstream::message::PublishMessage::build()
            .payload(payload.clone().into())
            .header(entry::MAC_HEADER, tag)
            .message_id(tag)
            .expected_last_sequence(applied)
    };
    let mut asked_again = false;
    loop {
        let acked = tokio::time::timeout(ACK_TIMEOUT, async {
            shared.js.send_publish(subject, publish()).await?.await
        })
        .await;
        match acked {
            Ok(Ok(ack)) => return Ok(Proposal::Accepted(ack.sequence)),
            Ok(Err(e)) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                return Ok(Proposal::Conflict);
            }
            // No stream answered on the server this replica talks to (its
            // leader being elected, or the server still learning of it):
            // nothing was stored; try again.
            Ok(Err(e))
                if e.kind() == jetstream::context::PublishErrorKind::StreamNotFound
                    && tokio::time::Instant::now() < deadline
                    && !asked_again =>
            {
                tokio::time::sleep(NO_STREAM_RETRY).await;
            }
            // After an attempt that got no answer, the first may have been
            // stored: the outcome is unknown, not "refused".
            Ok(Err(_)) if asked_again => break,
            Ok(Err(e)) if e.kind() != jetstream::context::PublishErrorKind::TimedOut => {
                return Err(unavailable(&format!(
                    "the cluster at {} refused the write: {e}; nothing was written",
                    shared.config.display_urls()
                )));
            }
            // No answer: ask again, once, under the same id.
            _ if !asked_again => asked_again = true,
            _ => break,
        }
    }
    Err(StoreError::ClusterOutcomeUnknown(
        "the cluster did not acknowledge the write (no quorum, or unreachable)".into(),
    ))
}

/// How long an admin write on a node that has just started waits for it
/// to reach its fleet before it is refused.
const JOIN_WAIT: Duration = Duration::from_secs(5);

/// A node's replica before it has reached the fleet: it serves what it
/// has, and takes no admin writes (they could not be ordered). A write that
/// arrives while the node is still joining waits for it ([`JOIN_WAIT`]).
pub(super) struct NotYet {
    slot: Arc<std::sync::OnceLock<Arc<Shared>>>,
}

impl NotYet {
    /// A placeholder until `slot` holds the fleet.
    pub(super) fn new(slot: Arc<std::sync::OnceLock<Arc<Shared>>>) -> Self {
        Self { slot }
    }
}

impl Replication for NotYet {
    fn ready(&self) {
        let deadline = std::time::Instant::now() + JOIN_WAIT;
        while self.slot.get().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn propose(&self, _: u64, _: &ChangeSet) -> Result<Proposal, StoreError> {
        Err(unavailable(
            "this node has not reached the cluster since it started (it serves its local replica); nothing was written",
        ))
    }

    fn await_newer(&self, _: u64) -> Result<(), StoreError> {
        Ok(())
    }
}
