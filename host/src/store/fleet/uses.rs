//! Last uses across the fleet: each node shares what it recorded of a
//! binding's uses, so `secret dependents` answers "who still uses this?"
//! for every node, not only the one asked.
//!
//! Invariant: the stream `KEYHOLE_USES` keeps, per node and binding, the
//! node's latest whole record of that binding (one message per subject),
//! authenticated under the fleet's newest entry key (`keyed`): a mark whose
//! MAC does not hold, or that only a retired master key vouches for, is
//! ignored, so whoever can only publish to NATS cannot forge a use.
//! They can put back an older authentic mark of the same node and binding
//! (its last use then looks older, until the node's next use sends the
//! newer one again). Marks are best effort — published without waiting
//! after the node records them, sent again at the binding's next use — and
//! never decide what is served.

use super::{ACK_TIMEOUT, Shared, keyed};
use crate::store::{Dependent, LastUse, StoreError, UseRecord};
use async_nats::jetstream;
use sha2::Digest as _;
use std::sync::Arc;

/// The stream of use marks.
pub(super) const USES_STREAM: &str = "KEYHOLE_USES";
/// Its subjects: `keyhole.uses.<node>.<binding's digest>`.
pub(super) const USES_SUBJECTS: &str = "keyhole.uses.>";
const USES: &str = "keyhole.uses";
/// What marks' MACs are computed for.
const PURPOSE: &str = "use marks";

/// The subject of `node`'s mark for a binding: names may hold dots, so the
/// binding is named by a digest.
fn subject(node: &str, mark: &UseRecord) -> String {
    let digest = sha2::Sha256::new()
        .chain_update(mark.function.as_bytes())
        .chain_update([0])
        .chain_update(mark.binding.as_bytes())
        .finalize();
    format!("{USES}.{node}.{}", hex::encode(&digest[..16]))
}

/// Publishes `marks`, each replacing this node's earlier one for its
/// binding. Failures are logged, not retried: the next use sends it again.
pub(super) async fn share(shared: Arc<Shared>, marks: Vec<UseRecord>) {
    if let Err(why) = keyed::may_publish(&shared).await {
        tracing::debug!("cluster: use marks are not shared now: {why}");
        return;
    }
    for mark in marks {
        let subject = subject(&shared.audit.node, &mark);
        let payload = serde_json::to_vec(&mark).expect("plain data");
        let mac = keyed::header(&shared, PURPOSE, &subject, &payload);
        let message = jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .header(keyed::HEADER, mac.as_str());
        let published = tokio::time::timeout(ACK_TIMEOUT, async {
            shared.js.send_publish(subject, message).await?.await
        })
        .await;
        if !matches!(published, Ok(Ok(_))) {
            tracing::debug!(
                "cluster: a use mark did not reach {USES_STREAM}; it is sent again at the next use"
            );
            return;
        }
    }
}

/// Every node's latest marks for bindings of secret `secret`.
pub(super) async fn of_secret(
    shared: &Arc<Shared>,
    secret: &str,
) -> Result<Vec<UseRecord>, StoreError> {
    let unavailable =
        |e: &dyn std::fmt::Display| StoreError::ClusterUnavailable(format!("{USES_STREAM}: {e}"));
    let stream = shared
        .js
        .get_stream_no_info(USES_STREAM)
        .await
        .map_err(|e| unavailable(&e))?;
    let messages = super::read::all_messages(
        &stream,
        jetstream::consumer::pull::OrderedConfig {
            filter_subject: USES_SUBJECTS.into(),
            deliver_policy: jetstream::consumer::DeliverPolicy::LastPerSubject,
            ..Default::default()
        },
        None,
    )
    .await
    .map_err(|e| unavailable(&e))?;
    let mut marks = Vec::new();
    for message in messages {
        // A mark always carried a MAC: one without it is nobody's.
        let authentic = message
            .headers
            .as_ref()
            .is_some_and(|h| h.get(keyed::HEADER).is_some())
            && keyed::judge_message(shared, PURPOSE, &message).is_ok();
        match serde_json::from_slice::<UseRecord>(&message.payload) {
            Ok(mark) if authentic && mark.secret == secret => marks.push(mark),
            Ok(_) if authentic => {}
            _ => tracing::warn!(
                "cluster: a use mark in {USES_STREAM} ({}) fails its authentication: ignored",
                message.subject
            ),
        }
    }
    Ok(marks)
}

/// `dependents` with each binding's last uses made the latest any node
/// recorded.
pub fn merge(dependents: &mut [Dependent], marks: &[UseRecord]) {
    fn later(a: Option<LastUse>, b: Option<LastUse>) -> Option<LastUse> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.at > a.at { b } else { a }),
            (a, b) => a.or(b),
        }
    }
    for dependent in dependents {
        let grant = &dependent.grant;
        for mark in marks.iter().filter(|m| {
            m.function == grant.function && m.binding == grant.binding && m.secret == grant.secret
        }) {
            dependent.last_use = later(dependent.last_use, mark.last_use);
            dependent.last_grace_use = later(dependent.last_grace_use, mark.last_grace_use);
        }
    }
}
