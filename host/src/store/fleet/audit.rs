//! The fleet's audit trail: every node's chain, in one JetStream stream.
//!
//! Invariant: the stream `KEYHOLE_AUDIT` holds each node's chain exactly as
//! that node's replica holds it — row by row, in order, each row once — so
//! it verifies with the same chain MACs, node by node, wherever it is read.
//!
//! - **The replica is the spool.** A node writes its records to its own
//!   chain first, as a single node does, and a shipper publishes the rows
//!   the stream lacks whenever the cluster answers. Nothing is lost while
//!   it does not: retention never removes a row the stream lacks
//!   (`mark_audit_shipped`).
//! - **None doubled.** Rows travel in batches, one message each (a JSON
//!   array of rows, at most [`MAX_MESSAGE_BYTES`]: one replicated message
//!   per pass rather than one per row, which a busy node's records would
//!   otherwise cost the cluster), published with the message id
//!   `<node>:<entry key's first entry>:<first>-<last>:<last row's MAC>`,
//!   which JetStream de-duplicates, and with the stream sequence of the node's previous
//!   message as the expected last one on its subject, so two processes
//!   shipping one replica (a node and a command on its data directory)
//!   never interleave or repeat a row. After any doubt (no answer, a
//!   conflict) the shipper reads where the stream's copy ends and goes on
//!   from there. A message holding one row alone (as nodes shipped before
//!   batches) reads the same.
//! - **Verifiable by the master key's holders only.** Each node publishes
//!   its chain key once, sealed under a key derived from the fleet's entry
//!   key (itself sealed under the master key): whoever holds the master key
//!   verifies every node's chain; whoever can merely publish to NATS
//!   cannot write a record that verifies. Every message also carries a MAC
//!   under the fleet's newest entry key (`keyed`), so whoever kept a
//!   retired master key cannot add to the trail after its rotation. Listing
//!   shows only rows whose MACs hold (each once); `audit verify` names the
//!   node and record where a chain breaks. Message ids carry the row's
//!   MAC, so nobody without the chain key can take a row's id first and
//!   have it dropped as a duplicate; a shipper passes over what others published on its
//!   subject. What this does not give: every node holds the master key, so
//!   a node's operator could write rows in another node's name; and the
//!   records (names, request ids, refusal reasons — never a value) are
//!   readable by whoever may subscribe to the stream.

use super::{ACK_TIMEOUT, Shared, keyed};
use crate::audit::chain::{ChainKey, Checkpoint, Row, Verifier};
use crate::audit::{Entry, MAX_QUERY_RECORDS, NodeVerification, Query, Tampered};
use crate::store::{SqliteStore, StoreError};
use async_nats::jetstream;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The stream holding every node's chain.
pub(super) const AUDIT_STREAM: &str = "KEYHOLE_AUDIT";
/// Its subjects.
pub(super) const AUDIT_SUBJECTS: &str = "keyhole.audit.>";
/// A node's rows go to `<ROWS>.<node>`.
const ROWS: &str = "keyhole.audit.rows";
/// A node's sealed chain key goes to `<KEYS>.<node>`.
const KEYS: &str = "keyhole.audit.key";
/// The retention checkpoint a chain starts after, if it was pruned before
/// it was first shipped (an imported store's), goes to `<CHECKPOINTS>.<node>`.
const CHECKPOINTS: &str = "keyhole.audit.checkpoint";
/// Rows one pass reads from the replica and publishes.
const BATCH_ROWS: usize = 256;
/// The most a message of rows holds, in bytes (NATS's default limit is
/// 1 MiB); a pass's rows go in as few messages as fit.
const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// How often the shipper looks for new rows when nothing woke it.
const SHIP_INTERVAL: Duration = Duration::from_millis(200);
/// How long a shipper that found another's row where it expected its own
/// last one waits before it reads where the stream's copy ends again.
const CONFLICT_PAUSE: Duration = Duration::from_millis(50);
/// What the key that seals chain keys is derived for.
const WRAPPING_PURPOSE: &str = "audit chain keys";
/// What the MAC every message carries is computed for (`keyed`).
const MESSAGE_PURPOSE: &str = "audit messages";

/// A node's shipping state, shared by its background shipper and explicit
/// deliveries (a command's, before it exits).
pub(super) struct Shipping {
    /// This replica's node id (its subjects' last token).
    pub(super) node: String,
    /// Where the stream's copy of this node's chain ends, once read: the
    /// last row's record and stream sequence. Held across a pass, so one
    /// process ships one pass at a time.
    cursor: tokio::sync::Mutex<Option<Cursor>>,
    key_published: AtomicBool,
    /// The entry key (its first entry) the last pass keyed its messages
    /// under.
    keyed_from: AtomicU64,
    /// The last record the stream is known to hold.
    pub(super) shipped: AtomicU64,
}

#[derive(Clone, Copy)]
struct Cursor {
    seq: u64,
    stream_seq: u64,
}

impl Shipping {
    pub(super) fn new(node: String) -> Self {
        Self {
            node,
            cursor: tokio::sync::Mutex::new(None),
            key_published: AtomicBool::new(false),
            keyed_from: AtomicU64::new(0),
            shipped: AtomicU64::new(0),
        }
    }
}

/// One chain row as it travels: exactly the columns the replica stores.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRow {
    seq: u64,
    at_ms: i64,
    kind: String,
    function: Option<String>,
    secret: Option<String>,
    body: String,
    prev: String,
    mac: String,
}

impl WireRow {
    fn from_row(row: &Row) -> Self {
        Self {
            seq: row.seq,
            at_ms: row.at_ms,
            kind: row.kind.clone(),
            function: row.function.clone(),
            secret: row.secret.clone(),
            body: row.body.clone(),
            prev: hex::encode(&row.prev),
            mac: hex::encode(&row.mac),
        }
    }

    fn into_row(self) -> Option<Row> {
        Some(Row {
            seq: self.seq,
            at_ms: self.at_ms,
            kind: self.kind,
            function: self.function,
            secret: self.secret,
            body: self.body,
            prev: hex::decode(self.prev).ok()?,
            mac: hex::decode(self.mac).ok()?,
        })
    }
}

/// The rows a message carries: a batch (a JSON array), or one row alone.
fn wire_rows(payload: &[u8]) -> Result<Vec<WireRow>, String> {
    let rows = if payload.first() == Some(&b'[') {
        serde_json::from_slice::<Vec<WireRow>>(payload).map_err(|e| e.to_string())?
    } else {
        vec![serde_json::from_slice::<WireRow>(payload).map_err(|e| e.to_string())?]
    };
    if rows.is_empty() {
        return Err("it holds no row".into());
    }
    Ok(rows)
}

/// `rows` as messages of at most [`MAX_MESSAGE_BYTES`] (a row larger than
/// that alone in its own): each payload with the indexes of its first and
/// last row.
fn batches(rows: &[Row]) -> Vec<(Vec<u8>, usize, usize)> {
    let mut out = Vec::new();
    let mut payload = vec![b'['];
    let mut first = 0;
    for (i, row) in rows.iter().enumerate() {
        let wire = serde_json::to_vec(&WireRow::from_row(row)).expect("plain data");
        if i > first && payload.len() + wire.len() + 1 > MAX_MESSAGE_BYTES {
            payload.push(b']');
            out.push((std::mem::replace(&mut payload, vec![b'[']), first, i - 1));
            first = i;
        }
        if i > first {
            payload.push(b',');
        }
        payload.extend_from_slice(&wire);
    }
    if !rows.is_empty() {
        payload.push(b']');
        out.push((payload, first, rows.len() - 1));
    }
    out
}

fn unavailable(what: impl std::fmt::Display) -> StoreError {
    StoreError::ClusterUnavailable(format!("the fleet's audit stream: {what}"))
}

/// What a node's sealed chain key is bound to: the fleet and the node, so
/// one node's key cannot be passed off as another's.
fn key_aad(fleet: &str, node: &str) -> Vec<u8> {
    [
        b"keyhole/v1/fleet-audit-chain-key\0",
        fleet.as_bytes(),
        b"\0",
        node.as_bytes(),
    ]
    .concat()
}

/// Ships this replica's rows until the process ends: woken every
/// [`SHIP_INTERVAL`]; says once when records start to wait, and when they
/// flow again.
pub(super) async fn ship(shared: Arc<Shared>) {
    let mut waiting = false;
    loop {
        match deliver_pending(&shared).await {
            Ok(()) => {
                if waiting {
                    tracing::info!("cluster: audit records are delivered to {AUDIT_STREAM} again");
                    waiting = false;
                }
            }
            Err(e) => {
                if !waiting {
                    tracing::warn!(
                        "cluster: audit records wait in the local trail until the cluster takes them: {e}"
                    );
                    waiting = true;
                }
            }
        }
        tokio::time::sleep(SHIP_INTERVAL).await;
    }
}

/// Publishes every row of this replica's chain the stream lacks.
pub(super) async fn deliver_pending(shared: &Arc<Shared>) -> Result<(), StoreError> {
    deliver_chain(shared, &shared.audit, &shared.replica, true).await
}

/// Publishes every row of `store`'s chain the stream lacks, as node
/// `shipping.node`; with `mark`, notes in `store` how far the stream holds
/// it (so retention keeps the rest).
pub(super) async fn deliver_chain(
    shared: &Arc<Shared>,
    shipping: &Shipping,
    store: &Arc<SqliteStore>,
    mark: bool,
) -> Result<(), StoreError> {
    loop {
        if !deliver_batch(shared, shipping, store, mark).await? {
            return Ok(());
        }
    }
}

/// Publishes up to [`BATCH_ROWS`] rows; whether there may be more.
async fn deliver_batch(
    shared: &Arc<Shared>,
    shipping: &Shipping,
    store: &Arc<SqliteStore>,
    mark: bool,
) -> Result<bool, StoreError> {
    let mut held = shipping.cursor.lock().await;
    // Checked before each batch: a node that stops following the fleet
    // while it drains a backlog stops publishing there.
    keyed::may_publish(shared).await.map_err(unavailable)?;
    // Under a new entry key, where the stream's copy ends is read again:
    // a batch an earlier pass sent that was stored only after the grace
    // (queued by the client while cut off) does not count, and is shipped
    // again under the new key.
    let from = shared
        .keys
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .newest()
        .0;
    if shipping.keyed_from.swap(from, Ordering::Relaxed) != from {
        *held = None;
        shipping.key_published.store(false, Ordering::Relaxed);
    }
    publish_key(shared, shipping, store).await?;
    let mut cursor = match *held {
        Some(cursor) => cursor,
        None => stream_end(shared, &shipping.node, store).await?,
    };
    if cursor.seq == 0 {
        // A chain pruned before it was first shipped starts after its
        // checkpoint, which goes first so the chain verifies from it.
        publish_checkpoint(shared, shipping, store).await?;
    }
    *held = Some(cursor);
    let source = Arc::clone(store);
    let after = cursor.seq;
    let rows = shared
        .handle
        .spawn_blocking(move || source.audit_rows_after(after, BATCH_ROWS))
        .await
        .map_err(|e| StoreError::Cluster(e.to_string()))??;
    if rows.is_empty() {
        return Ok(false);
    }
    let subject = format!("{ROWS}.{}", shipping.node);
    for (payload, first, last) in batches(&rows) {
        let row = &rows[last];
        let mac = keyed::header(shared, MESSAGE_PURPOSE, &subject, &payload);
        let message = jetstream::message::PublishMessage::build()
            .header(keyed::HEADER, mac.as_str())
            .payload(payload.into())
            // The last row's MAC in its id: nobody without the chain key
            // can take the id first and have the batch dropped as a
            // duplicate. The entry key's first entry too: the same rows
            // shipped again under a new key are not dropped either.
            .message_id(format!(
                "{}:{from}:{}-{}:{}",
                shipping.node,
                rows[first].seq,
                row.seq,
                hex::encode(&row.mac[..8])
            ))
            .expected_last_subject_sequence(cursor.stream_seq);
        let acked = tokio::time::timeout(ACK_TIMEOUT, async {
            shared
                .js
                .send_publish(subject.clone(), message)
                .await?
                .await
        })
        .await;
        match acked {
            Ok(Ok(ack)) => {
                cursor = Cursor {
                    seq: row.seq,
                    stream_seq: ack.sequence,
                };
                *held = Some(cursor);
            }
            // Another process shipped this chain's rows meanwhile: read
            // where the stream's copy ends now, and go on from there.
            Ok(Err(e)) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                *held = None;
                tokio::time::sleep(CONFLICT_PAUSE).await;
                return Ok(true);
            }
            Ok(Err(e)) => {
                *held = None;
                return Err(unavailable(e));
            }
            Err(_) => {
                *held = None;
                return Err(unavailable(
                    "no acknowledgement (no quorum, or unreachable)",
                ));
            }
        }
    }
    drop(held);
    shipping.shipped.store(cursor.seq, Ordering::Relaxed);
    if mark {
        let store = Arc::clone(store);
        shared
            .handle
            .spawn_blocking(move || store.mark_audit_shipped(cursor.seq))
            .await
            .map_err(|e| StoreError::Cluster(e.to_string()))??;
    }
    Ok(rows.len() == BATCH_ROWS)
}

/// The stream's last message on `subject`, if it has one.
async fn last_on(
    shared: &Arc<Shared>,
    subject: &str,
) -> Result<Option<jetstream::message::StreamMessage>, StoreError> {
    let stream = shared
        .js
        .get_stream_no_info(AUDIT_STREAM)
        .await
        .map_err(unavailable)?;
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => Ok(Some(message)),
        Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {
            Ok(None)
        }
        Err(e) => Err(unavailable(e)),
    }
}

/// Publishes `message` on `subject` and waits for the stream to store it.
async fn publish_acked(
    shared: &Arc<Shared>,
    subject: &str,
    message: jetstream::message::PublishMessage,
) -> Result<(), StoreError> {
    tokio::time::timeout(ACK_TIMEOUT, async {
        shared
            .js
            .send_publish(subject.to_owned(), message)
            .await?
            .await
    })
    .await
    .map_err(|_| unavailable("no acknowledgement (no quorum, or unreachable)"))?
    .map_err(unavailable)?;
    Ok(())
}

/// Publishes the node's sealed chain key, unless the stream's last key
/// message for the node is it (anything else there, someone else's, does
/// not count).
async fn publish_key(
    shared: &Arc<Shared>,
    shipping: &Shipping,
    store: &SqliteStore,
) -> Result<(), StoreError> {
    if shipping.key_published.load(Ordering::Relaxed) {
        return Ok(());
    }
    let subject = format!("{KEYS}.{}", shipping.node);
    let chain_key = store.chain_key()?;
    let wrapping = shared.origin.derive(WRAPPING_PURPOSE);
    let aad = key_aad(&shared.fleet, &shipping.node);
    let there = last_on(shared, &subject).await?.is_some_and(|message| {
        counts(shared, &message)
            && ChainKey::open_sealed(&wrapping, &message.payload, &aad)
                .is_some_and(|key| key.same_as(&chain_key))
    });
    if !there {
        let sealed = chain_key.sealed_under(&wrapping, &aad);
        let mac = keyed::header(shared, MESSAGE_PURPOSE, &subject, &sealed);
        let id = {
            use sha2::Digest as _;
            hex::encode(&sha2::Sha256::digest(&sealed)[..8])
        };
        let message = jetstream::message::PublishMessage::build()
            .header(keyed::HEADER, mac.as_str())
            .payload(sealed.into())
            .message_id(format!("{}:key:{id}", shipping.node));
        publish_acked(shared, &subject, message).await?;
    }
    shipping.key_published.store(true, Ordering::Relaxed);
    Ok(())
}

/// Publishes the chain's retention checkpoint, if it has one and the
/// stream's last checkpoint for the node is not it (one whose seal does not
/// hold under the chain key, someone else's, does not count).
async fn publish_checkpoint(
    shared: &Arc<Shared>,
    shipping: &Shipping,
    store: &Arc<SqliteStore>,
) -> Result<(), StoreError> {
    // Off the runtime's thread: the read may wait for a long verification
    // holding the trail's reader, and the follower runs on this runtime.
    let reader = Arc::clone(store);
    let checkpoint = shared
        .handle
        .spawn_blocking(move || reader.audit_checkpoint())
        .await
        .map_err(|e| StoreError::Cluster(e.to_string()))??;
    let Some(checkpoint) = checkpoint else {
        return Ok(());
    };
    let subject = format!("{CHECKPOINTS}.{}", shipping.node);
    let there = last_on(shared, &subject).await?.is_some_and(|message| {
        counts(shared, &message)
            && serde_json::from_slice::<Checkpoint>(&message.payload).is_ok_and(|c| c == checkpoint)
    });
    if there {
        return Ok(());
    }
    let payload = serde_json::to_vec(&checkpoint).expect("plain data");
    let mac = keyed::header(shared, MESSAGE_PURPOSE, &subject, &payload);
    let message = jetstream::message::PublishMessage::build()
        .header(keyed::HEADER, mac.as_str())
        .payload(payload.into())
        .message_id(format!("{}:checkpoint:{}", shipping.node, checkpoint.seal));
    publish_acked(shared, &subject, message).await
}

/// Fails when the stream's configuration lets records be removed (someone
/// with JetStream's API changed it): a verification could not vouch for
/// a trail that can be cut short.
async fn check_retention(shared: &Arc<Shared>) -> Result<(), StoreError> {
    let mut stream = shared
        .js
        .get_stream(AUDIT_STREAM)
        .await
        .map_err(unavailable)?;
    let config = &stream.info().await.map_err(unavailable)?.config;
    let mut lets = Vec::new();
    if !config.deny_delete {
        lets.push("deleting messages");
    }
    if !config.deny_purge {
        lets.push("purging");
    }
    if !config.max_age.is_zero() {
        lets.push("an age limit");
    }
    if config.max_messages > 0 || config.max_bytes > 0 || config.max_messages_per_subject > 0 {
        lets.push("a size limit");
    }
    if lets.is_empty() {
        return Ok(());
    }
    Err(StoreError::Corrupt(format!(
        "the fleet's audit stream {AUDIT_STREAM} allows {}: its configuration was changed, so records may have been removed; restore deny_delete and deny_purge without limits before relying on it",
        lets.join(", ")
    )))
}

/// Where the stream's copy of `store`'s chain, as node `node`, ends: its
/// last row that `store`'s chain key verifies. Anything else on the
/// subject was published by someone else and is passed over (logged;
/// `verify` names it). Fails when that row is not the one `store` holds
/// at its place: the data directory was restored from a backup or copied
/// from another node, and shipping on would fork the node's chain.
async fn stream_end(
    shared: &Arc<Shared>,
    node: &str,
    store: &Arc<SqliteStore>,
) -> Result<Cursor, StoreError> {
    let subject = format!("{ROWS}.{node}");
    let key = store.chain_key()?;
    // The last row of a message that the chain key verifies.
    let ours = |payload: &[u8]| -> Option<Row> {
        wire_rows(payload)
            .ok()?
            .into_iter()
            .filter_map(WireRow::into_row)
            .filter(|row| key.link(&row.prev, row.seq, &row.body)[..] == row.mac[..])
            .max_by_key(|row| row.seq)
    };
    let Some(last) = last_on(shared, &subject).await? else {
        return Ok(Cursor {
            seq: 0,
            stream_seq: 0,
        });
    };
    let end = match counts(shared, &last).then(|| ours(&last.payload)).flatten() {
        Some(row) => Some(row),
        None => {
            tracing::warn!(
                "cluster: stream message {} on {subject} is not one of this node's records (someone else published there): shipping goes on after it; `keyhole audit verify` names it",
                last.sequence
            );
            read_stream(shared, &subject, None)
                .await?
                .iter()
                .filter(|m| judged(shared, m).is_ok())
                .filter_map(|m| ours(&m.payload))
                .max_by_key(|row| row.seq)
        }
    };
    let Some(end) = end else {
        return Ok(Cursor {
            seq: 0,
            stream_seq: last.sequence,
        });
    };
    let (local, checkpoint) = {
        let store = Arc::clone(store);
        let after = end.seq - 1;
        shared
            .handle
            .spawn_blocking(move || {
                Ok::<_, StoreError>((store.audit_rows_after(after, 1)?, store.audit_checkpoint()?))
            })
            .await
            .map_err(|e| StoreError::Cluster(e.to_string()))??
    };
    let same = match (local.first(), checkpoint) {
        (Some(row), _) if row.seq == end.seq => row.mac == end.mac,
        // Pruned here since it was shipped: its checkpoint still says
        // which row it was.
        (_, Some(c)) if c.seq == end.seq => hex::decode(&c.mac).is_ok_and(|mac| mac == end.mac),
        (_, Some(c)) => c.seq > end.seq,
        _ => false,
    };
    if !same {
        return Err(StoreError::Cluster(format!(
            "the fleet's audit trail holds record {} of node {node}, and this data directory's chain does not (restored from a backup, or copied from another node's data directory?): its records are not shipped, so as not to fork the node's chain; give it a fresh data directory",
            end.seq
        )));
    }
    Ok(Cursor {
        seq: end.seq,
        stream_seq: last.sequence,
    })
}

/// How far before `--since` a listing starts reading the stream: a row is
/// stored after its records were made, by the stream's clock, while their
/// times are the node's; this covers clocks that far apart.
const CLOCK_SKEW_MARGIN_MS: i64 = 10 * 60 * 1000;

/// The stream's messages on `filter`, from the first (or the first stored
/// at or after `start_ms`, by the stream's clock) to the last there was
/// when reading began.
async fn read_stream(
    shared: &Arc<Shared>,
    filter: &str,
    start_ms: Option<i64>,
) -> Result<Vec<jetstream::Message>, StoreError> {
    let mut stream = shared
        .js
        .get_stream(AUDIT_STREAM)
        .await
        .map_err(unavailable)?;
    let last = stream
        .info()
        .await
        .map_err(unavailable)?
        .state
        .last_sequence;
    if last == 0 {
        return Ok(Vec::new());
    }
    let deliver_policy = match start_ms.and_then(|ms| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
    }) {
        Some(start_time) => jetstream::consumer::DeliverPolicy::ByStartTime { start_time },
        None => jetstream::consumer::DeliverPolicy::All,
    };
    super::read::all_messages(
        &stream,
        jetstream::consumer::pull::OrderedConfig {
            filter_subject: filter.into(),
            deliver_policy,
            ..Default::default()
        },
        Some(last),
    )
    .await
    .map_err(unavailable)
}

/// The stream's messages, sorted out by node: each node's chain keys (the
/// sealed bytes) and rows (stream sequence, payload), in stream order.
/// Messages that do not count (`keyed`) are set apart, with why.
#[derive(Default)]
struct ByNode {
    keys: Vec<bytes::Bytes>,
    checkpoints: Vec<bytes::Bytes>,
    rows: Vec<(u64, bytes::Bytes)>,
    foreign: Vec<Foreign>,
}

/// A message that does not count: its place in the stream, why, and what
/// it holds.
struct Foreign {
    stream_seq: u64,
    why: String,
    payload: bytes::Bytes,
}

impl ByNode {
    /// The messages that do not count and hold something the ones that do
    /// count lack. What they repeat is no harm: a batch an honest node
    /// shipped again under the new key after the client had queued it
    /// while cut off, and the stream stored it only after the grace.
    fn adding(&self) -> impl Iterator<Item = &Foreign> {
        let counted: std::collections::HashSet<(u64, Vec<u8>)> = self
            .rows
            .iter()
            .filter_map(|(_, payload)| wire_rows(payload).ok())
            .flatten()
            .filter_map(WireRow::into_row)
            .map(|row| (row.seq, row.mac))
            .collect();
        self.foreign.iter().filter(move |message| {
            let repeats_rows = wire_rows(&message.payload).is_ok_and(|rows| {
                !rows.is_empty()
                    && rows.into_iter().all(|row| {
                        row.into_row()
                            .is_some_and(|row| counted.contains(&(row.seq, row.mac)))
                    })
            });
            let repeats_other = self
                .keys
                .iter()
                .chain(&self.checkpoints)
                .any(|payload| *payload == message.payload);
            !(repeats_rows || repeats_other)
        })
    }
}

fn by_node(shared: &Shared, messages: Vec<jetstream::Message>) -> BTreeMap<String, ByNode> {
    let mut nodes: BTreeMap<String, ByNode> = BTreeMap::new();
    for message in messages {
        let seq = message.info().map_or(0, |i| i.stream_sequence);
        let subject = message.subject.as_str();
        let node = [ROWS, KEYS, CHECKPOINTS]
            .iter()
            .find_map(|prefix| subject.strip_prefix(prefix)?.strip_prefix('.'));
        if let (Some(node), Err(why)) = (node, judged(shared, &message)) {
            nodes
                .entry(node.to_owned())
                .or_default()
                .foreign
                .push(Foreign {
                    stream_seq: seq,
                    why,
                    payload: message.payload.clone(),
                });
            continue;
        }
        if let Some(node) = subject.strip_prefix(ROWS).and_then(|s| s.strip_prefix('.')) {
            let node = nodes.entry(node.to_owned()).or_default();
            node.rows.push((seq, message.payload.clone()));
        } else if let Some(node) = subject.strip_prefix(KEYS).and_then(|s| s.strip_prefix('.')) {
            nodes
                .entry(node.to_owned())
                .or_default()
                .keys
                .push(message.payload.clone());
        } else if let Some(node) = subject
            .strip_prefix(CHECKPOINTS)
            .and_then(|s| s.strip_prefix('.'))
        {
            nodes
                .entry(node.to_owned())
                .or_default()
                .checkpoints
                .push(message.payload.clone());
        }
    }
    nodes
}

/// Whether a message read from the stream counts (`keyed`); if not, why.
fn judged(shared: &Shared, message: &jetstream::Message) -> Result<(), String> {
    keyed::judge_message(shared, MESSAGE_PURPOSE, message)
}

/// Whether a message fetched by subject counts (`keyed`).
fn counts(shared: &Shared, message: &jetstream::message::StreamMessage) -> bool {
    let header = message.headers.get(keyed::HEADER).map(|v| v.as_str());
    keyed::judge(
        shared,
        MESSAGE_PURPOSE,
        message.subject.as_str(),
        &message.payload,
        header,
        message.time,
    )
    .is_ok()
}

/// The first of a node's published chain keys that opens.
fn chain_key_of(shared: &Shared, node: &str, keys: &[bytes::Bytes]) -> Option<ChainKey> {
    let wrapping = shared.origin.derive(WRAPPING_PURPOSE);
    let aad = key_aad(&shared.fleet, node);
    keys.iter()
        .find_map(|sealed| ChainKey::open_sealed(&wrapping, sealed, &aad))
}

/// Every node's records matching `query`, merged by time (then node and
/// place in its chain), each with its node. Rows whose MAC does not hold
/// under their node's key are left out (and counted in the log): `audit
/// verify` names them.
pub(super) async fn entries(shared: &Arc<Shared>, query: &Query) -> Result<Vec<Entry>, StoreError> {
    let limit = query
        .limit
        .unwrap_or(MAX_QUERY_RECORDS)
        .min(MAX_QUERY_RECORDS) as usize;
    // Keys were published once, when each node first shipped: read them
    // whole, whatever the start of the rows read.
    let keys = by_node(
        shared,
        read_stream(shared, &format!("{KEYS}.>"), None).await?,
    );
    let start = query
        .since_ms
        .map(|since| since.saturating_sub(CLOCK_SKEW_MARGIN_MS));
    let nodes = by_node(
        shared,
        read_stream(shared, &format!("{ROWS}.>"), start).await?,
    );
    let mut entries = Vec::new();
    let mut unverified = 0usize;
    for (node, messages) in nodes {
        unverified += messages.foreign.len();
        let key = keys
            .get(&node)
            .and_then(|k| chain_key_of(shared, &node, &k.keys));
        // A row repeated in the stream (replayed by someone who can
        // publish there) is listed once; `verify` names the repeat.
        let mut seen = std::collections::HashSet::new();
        let rows = messages
            .rows
            .iter()
            .flat_map(|(_, payload)| match wire_rows(payload) {
                Ok(rows) => rows.into_iter().map(WireRow::into_row).collect(),
                Err(_) => vec![None],
            });
        for row in rows {
            let Some((row, key)) = row.zip(key.as_ref()) else {
                unverified += 1;
                continue;
            };
            if key.link(&row.prev, row.seq, &row.body)[..] != row.mac[..] {
                unverified += 1;
                continue;
            }
            if !seen.insert(row.seq) {
                continue;
            }
            let Some(records) = row.entries() else {
                unverified += 1;
                continue;
            };
            // Filtered on the MAC'd records, not on the row's columns.
            entries.extend(
                records
                    .into_iter()
                    .filter(|e| query.since_ms.is_none_or(|since| e.at_ms >= since))
                    .filter(|e| {
                        query
                            .function
                            .as_deref()
                            .is_none_or(|f| e.event.function() == Some(f))
                            && query
                                .secret
                                .as_deref()
                                .is_none_or(|s| e.event.secret() == Some(s))
                    })
                    .map(|mut e| {
                        e.node = Some(node.clone());
                        e
                    }),
            );
        }
    }
    if unverified > 0 {
        tracing::warn!(
            "cluster: {unverified} message(s) in {AUDIT_STREAM} are not records their node's chain key verifies: left out; `keyhole audit verify` names them"
        );
    }
    entries.sort_by(|a, b| (a.at_ms, &a.node, a.seq).cmp(&(b.at_ms, &b.node, b.seq)));
    let keep_from = entries.len().saturating_sub(limit);
    entries.drain(..keep_from);
    Ok(entries)
}

/// Each node's chain as the stream holds it, verified apart.
pub(super) async fn verify(shared: &Arc<Shared>) -> Result<Vec<NodeVerification>, StoreError> {
    check_retention(shared).await?;
    let nodes = by_node(shared, read_stream(shared, AUDIT_SUBJECTS, None).await?);
    Ok(nodes
        .into_iter()
        .map(|(node, messages)| {
            // What counts of this node's messages is verified; the first
            // that does not is named, unless something worse is.
            let foreign = messages.adding().next().map(|f| {
                // The record it would be: its first row's, if it has rows.
                let seq = wire_rows(&f.payload)
                    .ok()
                    .and_then(|rows| rows.first().map(|row| row.seq));
                (seq, format!("stream message {} {}", f.stream_seq, f.why))
            });
            let mut verification = match chain_key_of(shared, &node, &messages.keys) {
                Some(key) => {
                    // The first checkpoint its seal holds for (a forged one
                    // is no checkpoint).
                    let checkpoint = messages.checkpoints.iter().find_map(|payload| {
                        serde_json::from_slice::<Checkpoint>(payload)
                            .ok()
                            .filter(|c| c.verified_macs(&key).is_some())
                    });
                    verify_chain(&key, checkpoint.as_ref(), &messages.rows)
                }
                None => crate::audit::Verification {
                    records: 0,
                    head: None,
                    first_bad: Some(Tampered {
                        seq: 1,
                        problem: match &foreign {
                            Some((_, foreign)) => format!("the stream holds no chain key for this node that counts: {foreign}"),
                            None => "the stream holds no chain key for this node that the fleet's key opens (its records were not shipped by a node of this fleet)".into(),
                        },
                    }),
                    pruned: None,
                    nodes: Vec::new(),
                },
            };
            if let (None, Some((seq, problem))) = (&verification.first_bad, foreign) {
                let next = verification.head.as_ref().map_or(1, |(head, _)| head + 1);
                verification.first_bad = Some(Tampered {
                    seq: seq.unwrap_or(next),
                    problem,
                });
            }
            NodeVerification { node, verification }
        })
        .collect())
}

/// Verifies one node's rows, in stream order, from its first record (or
/// from `checkpoint`). A message that is no row of this chain — it does
/// not parse, or fails the chain key's MAC without standing where the
/// chain's next row would — was published by someone without the key: it
/// is passed over, so it cannot hide what comes after it, and named at the
/// end if nothing worse is found. A row that stands in the chain's next
/// place and fails its MAC was edited, and is named as such.
fn verify_chain(
    key: &ChainKey,
    checkpoint: Option<&Checkpoint>,
    rows: &[(u64, bytes::Bytes)],
) -> crate::audit::Verification {
    let mut verifier = match Verifier::after(key, checkpoint) {
        Ok(verifier) => verifier,
        Err(bad) => return Verifier::new(key).fail(bad),
    };
    let mut foreign: Option<Tampered> = None;
    let rows = rows.iter().flat_map(|(stream_seq, payload)| {
        let rows: Vec<Result<Row, String>> = match wire_rows(payload) {
            Ok(rows) => rows
                .into_iter()
                .map(|w| w.into_row().ok_or_else(|| "a MAC is not hex".to_owned()))
                .collect(),
            Err(e) => vec![Err(e)],
        };
        rows.into_iter().map(move |row| (stream_seq, row))
    });
    for (stream_seq, row) in rows {
        let row = match row {
            Ok(row) if key.link(&row.prev, row.seq, &row.body)[..] == row.mac[..] => row,
            Ok(row) if verifier.expects(&row) => row,
            other => {
                let why = match other {
                    Err(e) => format!("is not an audit record ({e})"),
                    Ok(_) => "is not a record of this node's chain (its MAC does not hold under the node's key: published by someone without it)".to_owned(),
                };
                foreign.get_or_insert(Tampered {
                    seq: verifier.next_seq(),
                    problem: format!("stream message {stream_seq} {why}"),
                });
                continue;
            }
        };
        if let Err(mut bad) = verifier.check(&row) {
            bad.problem = format!("{} (stream message {stream_seq})", bad.problem);
            return verifier.fail(bad);
        }
    }
    let mut verification = verifier.finish_unanchored();
    if verification.first_bad.is_none() {
        verification.first_bad = foreign;
    }
    verification
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::{BodyRef, GENESIS};
    use crate::audit::{Event, FunctionEvent};

    fn key(byte: u8) -> ChainKey {
        ChainKey::from_slice(&[byte; 32]).unwrap()
    }

    /// A chain of `n` function records under `key`, as the stream holds
    /// them: (stream sequence, payload).
    fn chain(key: &ChainKey, n: u64) -> Vec<(u64, bytes::Bytes)> {
        let mut prev = GENESIS.to_vec();
        (1..=n)
            .map(|seq| {
                let event = Event::Function(FunctionEvent::example("f", seq));
                let at_ms = 1_000 + seq as i64;
                let body = serde_json::to_string(&BodyRef {
                    at_ms,
                    event: &event,
                })
                .unwrap();
                let mac = key.link(&prev, seq, &body);
                let row = Row {
                    seq,
                    at_ms,
                    kind: "function".into(),
                    function: Some("f".into()),
                    secret: None,
                    body,
                    prev: std::mem::replace(&mut prev, mac.to_vec()),
                    mac: mac.to_vec(),
                };
                let wire = serde_json::to_vec(&WireRow::from_row(&row)).unwrap();
                (10 + seq, wire.into())
            })
            .collect()
    }

    fn first_bad(rows: &[(u64, bytes::Bytes)]) -> Option<Tampered> {
        verify_chain(&key(1), None, rows).first_bad
    }

    #[test]
    fn a_message_that_does_not_count_is_named_only_if_it_adds_something() {
        let rows = chain(&key(1), 3);
        let foreign = |payload: &bytes::Bytes| Foreign {
            stream_seq: 99,
            why: "is keyed under a retired master key's entry key".into(),
            payload: payload.clone(),
        };
        let node = ByNode {
            keys: vec![bytes::Bytes::from_static(b"sealed key")],
            rows: rows[..2].to_vec(),
            // Row 2 again (shipped late under the old key), row 3 (only
            // there), and the node's key again.
            foreign: vec![
                foreign(&rows[1].1),
                foreign(&rows[2].1),
                foreign(&bytes::Bytes::from_static(b"sealed key")),
                foreign(&bytes::Bytes::from_static(b"another key")),
            ],
            ..ByNode::default()
        };
        let adding: Vec<&bytes::Bytes> = node.adding().map(|f| &f.payload).collect();
        assert_eq!(
            adding,
            vec![&rows[2].1, &bytes::Bytes::from_static(b"another key")]
        );
    }

    #[test]
    fn a_chain_shipped_whole_verifies_with_its_head() {
        let rows = chain(&key(1), 3);
        let verified = verify_chain(&key(1), None, &rows);
        assert_eq!(verified.first_bad, None);
        assert_eq!(verified.records, 3);
        assert_eq!(verified.head.map(|(seq, _)| seq), Some(3));
    }

    #[test]
    fn a_doubled_a_missing_and_a_forged_row_are_each_named() {
        let rows = chain(&key(1), 3);

        let doubled = [rows[0].clone(), rows[1].clone(), rows[1].clone()];
        let bad = first_bad(&doubled).unwrap();
        assert_eq!(bad.seq, 2);
        assert!(bad.problem.contains("repeats"), "{}", bad.problem);

        let missing = [rows[0].clone(), rows[2].clone()];
        let bad = first_bad(&missing).unwrap();
        assert!(bad.problem.contains("missing"), "{}", bad.problem);

        // Written under another key (someone who can publish to NATS but
        // holds no chain key), in the right place.
        let forged = chain(&key(2), 3);
        let mixed = [rows[0].clone(), forged[1].clone()];
        let bad = first_bad(&mixed).unwrap();
        assert_eq!(bad.seq, 2);
        assert!(
            bad.problem
                .contains("stream message 12 is not a record of this node"),
            "{}",
            bad.problem
        );
        // An authentic row in its place, edited: named as an edit.
        let mut edited: WireRow = serde_json::from_slice(&rows[1].1).unwrap();
        edited.body.push(' ');
        let edited = (12, serde_json::to_vec(&edited).unwrap().into());
        let bad = first_bad(&[rows[0].clone(), edited, rows[2].clone()]).unwrap();
        assert_eq!(bad.seq, 2);
        assert!(
            bad.problem.contains("does not match its MAC"),
            "{}",
            bad.problem
        );
    }

    /// `rows` (single-row messages, as [`chain`] makes them) as batches
    /// of `per` rows each, numbered from stream sequence 100.
    fn batched(rows: &[(u64, bytes::Bytes)], per: usize) -> Vec<(u64, bytes::Bytes)> {
        rows.chunks(per)
            .enumerate()
            .map(|(i, chunk)| {
                let wires: Vec<WireRow> = chunk
                    .iter()
                    .map(|(_, payload)| serde_json::from_slice(payload).unwrap())
                    .collect();
                (100 + i as u64, serde_json::to_vec(&wires).unwrap().into())
            })
            .collect()
    }

    #[test]
    fn a_chain_shipped_in_batches_verifies_and_an_edit_inside_one_is_named() {
        let single = chain(&key(1), 7);
        let rows = batched(&single, 3);
        assert_eq!(rows.len(), 3);
        let verified = verify_chain(&key(1), None, &rows);
        assert_eq!((verified.first_bad, verified.records), (None, 7));
        // Batches and single rows mix (a stream from before batches).
        let mut mixed = single[..2].to_vec();
        mixed.extend(batched(&single[2..], 4));
        assert_eq!(verify_chain(&key(1), None, &mixed).records, 7);

        let mut edited: Vec<WireRow> = serde_json::from_slice(&rows[1].1).unwrap();
        edited[1].body.push(' ');
        let mut tampered = rows.clone();
        tampered[1].1 = serde_json::to_vec(&edited).unwrap().into();
        let bad = verify_chain(&key(1), None, &tampered).first_bad.unwrap();
        assert_eq!(bad.seq, 5);
        assert!(
            bad.problem.contains("does not match its MAC"),
            "{}",
            bad.problem
        );
        assert!(
            bad.problem.contains("stream message 101"),
            "{}",
            bad.problem
        );

        // An empty batch is no record.
        let mut empty = rows.clone();
        empty.insert(1, (150, bytes::Bytes::from_static(b"[]")));
        let bad = verify_chain(&key(1), None, &empty).first_bad.unwrap();
        assert!(
            bad.problem
                .contains("stream message 150 is not an audit record"),
            "{}",
            bad.problem
        );
    }

    #[test]
    fn a_passs_rows_go_in_as_few_messages_as_fit() {
        let rows: Vec<Row> = chain(&key(1), 40)
            .iter()
            .map(|(_, payload)| {
                serde_json::from_slice::<WireRow>(payload)
                    .unwrap()
                    .into_row()
                    .unwrap()
            })
            .collect();
        let one = batches(&rows);
        assert_eq!(one.len(), 1);
        assert_eq!((one[0].1, one[0].2), (0, 39));
        assert_eq!(wire_rows(&one[0].0).unwrap().len(), 40);
        // Rows too large to share a message are split, each batch whole.
        let mut large = rows.clone();
        for row in &mut large {
            row.body = "x".repeat(MAX_MESSAGE_BYTES / 3);
        }
        let split = batches(&large);
        assert!(split.len() > 1 && split.len() <= 20, "{}", split.len());
        let mut next = 0;
        for (payload, first, last) in &split {
            assert!(payload.len() <= MAX_MESSAGE_BYTES, "{}", payload.len());
            assert_eq!(*first, next);
            assert_eq!(wire_rows(payload).unwrap().len(), last - first + 1);
            next = last + 1;
        }
        assert_eq!(next, 40);
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn a_message_that_is_no_record_is_named_by_its_place_in_the_stream() {
        let mut rows = chain(&key(1), 2);
        rows.insert(1, (99, bytes::Bytes::from_static(b"{\"not\": \"a row\"}")));
        let verified = verify_chain(&key(1), None, &rows);
        // Passed over: the chain after it is still checked.
        assert_eq!(verified.records, 2);
        assert_eq!(verified.head.map(|(seq, _)| seq), Some(2));
        let bad = verified.first_bad.unwrap();
        assert_eq!(bad.seq, 2);
        assert!(
            bad.problem
                .contains("stream message 99 is not an audit record"),
            "{}",
            bad.problem
        );
    }

    #[test]
    fn a_chain_key_opens_for_its_own_fleet_and_node_only() {
        let wrapping = crate::crypto::AesKey::generate();
        let sealed = key(7).sealed_under(&wrapping, &key_aad("fleet-1", "node-a"));
        assert!(ChainKey::open_sealed(&wrapping, &sealed, &key_aad("fleet-1", "node-a")).is_some());
        assert!(ChainKey::open_sealed(&wrapping, &sealed, &key_aad("fleet-1", "node-b")).is_none());
        assert!(ChainKey::open_sealed(&wrapping, &sealed, &key_aad("fleet-2", "node-a")).is_none());
        let other = crate::crypto::AesKey::generate();
        assert!(ChainKey::open_sealed(&other, &sealed, &key_aad("fleet-1", "node-a")).is_none());
    }
}
