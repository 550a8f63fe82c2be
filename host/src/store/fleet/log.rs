//! The replica's side of the fleet's log: proposing an admin write as the
//! next entry ([`Replication`]).

use super::{ACK_TIMEOUT, STATE_SUBJECT, Shared, entry};
use crate::store::StoreError;
use crate::store::replication::{ChangeSet, Proposal, Replication};
use async_nats::jetstream;
use sha2::Digest as _;
use std::sync::Arc;
use std::time::Duration;

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

    /// Stores `component` in the object store under its SHA-256, unless it
    /// is there already.
    async fn upload(&self, component: &[u8]) -> Result<(), StoreError> {
        let name = hex::encode(sha2::Sha256::digest(component));
        if self.shared.components.info(&name).await.is_ok() {
            return Ok(());
        }
        let mut reader = component;
        self.shared
            .components
            .put(name.as_str(), &mut reader)
            .await
            .map_err(|e| unavailable(&format!("cannot store component {name}: {e}")))?;
        Ok(())
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
        let tag = shared.key.mac(&shared.fleet, applied + 1, &payload);
        shared.handle.block_on(async {
            for component in &components {
                self.upload(component).await?;
            }
            let publish = jetstream::message::PublishMessage::build()
                .payload(payload.into())
                .header(entry::MAC_HEADER, tag.as_str())
                .expected_last_sequence(applied);
            let acked = tokio::time::timeout(ACK_TIMEOUT, async {
                shared.js.send_publish(STATE_SUBJECT, publish).await?.await
            })
            .await;
            match acked {
                Ok(Ok(ack)) => Ok(Proposal::Accepted(ack.sequence)),
                Ok(Err(e)) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                    Ok(Proposal::Conflict)
                }
                Ok(Err(e)) if e.kind() == jetstream::context::PublishErrorKind::TimedOut => Err(unavailable(
                    "the cluster did not acknowledge the write in time (no quorum, or unreachable); it may have landed: check before retrying",
                )),
                Ok(Err(e)) => Err(unavailable(&format!(
                    "the cluster at {} refused the write: {e}",
                    shared.config.display_urls()
                ))),
                Err(_) => Err(unavailable(
                    "the cluster did not acknowledge the write in time (no quorum, or unreachable); it may have landed: check before retrying",
                )),
            }
        })
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
                "this replica is not receiving the cluster's entries, so the write cannot be decided on the latest state",
            ))
        }
    }
}

/// A node's replica before it has reached the fleet: it serves what it
/// has, and takes no admin writes (they could not be ordered).
pub(super) struct NotYet;

impl Replication for NotYet {
    fn propose(&self, _: u64, _: &ChangeSet) -> Result<Proposal, StoreError> {
        Err(unavailable(
            "this node has not reached the cluster since it started (it serves its local replica)",
        ))
    }

    fn await_newer(&self, _: u64) -> Result<(), StoreError> {
        Ok(())
    }
}
