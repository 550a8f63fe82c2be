//! The audit trail in the store's database: appending to the chain,
//! querying it, verifying it, pruning it under a signed checkpoint, and
//! recording an admin action in the same transaction as the change it made.

use super::{SqliteStore, corrupt};
use crate::audit::chain::{
    BodyRef, ChainKey, Checkpoint, CheckpointAt, GENESIS, MAX_RECORDS_PER_ROW, Row, Verifier,
};
use crate::audit::{
    Entry, Event, MAX_QUERY_RECORDS, Millis, PruneReport, Query, Timed, Verification, now_ms,
};
use crate::crypto::AesKey;
use crate::store::{AdminRecord, AuditLog, StoreError};
use rusqlite::{OptionalExtension, Transaction, params};
use std::collections::HashMap;
use std::sync::Arc;

const CHAIN_KEY_AAD: &[u8] = b"keyhole/v1/audit-chain-key";

/// Rows one pruning transaction removes at most, so pruning a long trail
/// never holds the writer for long.
const PRUNE_ROWS_PER_TRANSACTION: usize = 2_000;
/// Records one pruning transaction removes at most (a row holds up to
/// 1 024): what bounds the verification work done under the write lock.
const PRUNE_RECORDS_PER_TRANSACTION: u64 = 50_000;

/// Opens the store's chain key, creating it on a store that has none.
pub(super) fn load_or_create_chain_key(
    tx: &Transaction<'_>,
    master: &AesKey,
) -> Result<ChainKey, StoreError> {
    let sealed: Option<Vec<u8>> = tx
        .query_row("SELECT value FROM meta WHERE key = 'audit_key'", [], |r| {
            r.get(0)
        })
        .optional()?;
    match sealed {
        Some(sealed) => {
            let plain = master
                .open(&sealed, CHAIN_KEY_AAD)
                .map_err(|_| corrupt("the audit trail's key does not open (tampered with)"))?;
            ChainKey::from_slice(&plain).ok_or_else(|| corrupt("the audit trail's key is damaged"))
        }
        None => {
            let fresh = AesKey::generate();
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('audit_key', ?1)",
                [master.seal(fresh.expose(), CHAIN_KEY_AAD)],
            )?;
            Ok(ChainKey::from_slice(fresh.expose()).expect("32 bytes"))
        }
    }
}

/// Re-seals the chain key under `new` (master-key rotation).
pub(super) fn rewrap_chain_key(
    tx: &Transaction<'_>,
    old: &AesKey,
    new: &AesKey,
) -> Result<(), StoreError> {
    let sealed: Vec<u8> =
        tx.query_row("SELECT value FROM meta WHERE key = 'audit_key'", [], |r| {
            r.get(0)
        })?;
    let plain = old
        .open(&sealed, CHAIN_KEY_AAD)
        .map_err(|_| corrupt("the audit trail's key does not open (tampered with)"))?;
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'audit_key'",
        [new.seal(&plain, CHAIN_KEY_AAD)],
    )?;
    Ok(())
}

/// Appends the admin action's `record` inside `tx`, the transaction of the
/// change it describes.
pub(super) fn append_admin_record(
    store: &SqliteStore,
    tx: &Transaction<'_>,
    record: &AdminRecord,
) -> Result<(), StoreError> {
    append_in(
        tx,
        &*store.chain_key()?,
        std::slice::from_ref(record.timed()),
    )
}

/// Appends `batch` to the chain inside `tx`, and moves the head. Records
/// of one kind about the same function and secret go into one row per
/// [`MAX_RECORDS_PER_ROW`] (in batch order within the run; runs in the
/// order they first appear), so a batch of function records costs a few
/// rows rather than one per record; function records in the compact form
/// of [`crate::audit::run`], anything else as JSON objects.
fn append_in(tx: &Transaction<'_>, key: &ChainKey, batch: &[Timed]) -> Result<(), StoreError> {
    let last = last_row(tx)?;
    let head = match read_meta_blob(tx, "audit_head") {
        // A head of the wrong type matches nothing: recorded as a cut.
        Err(StoreError::Corrupt(_)) => Some(Vec::new()),
        other => other?,
    };
    let (seq, prev) = match last {
        Some(last) => last,
        // Pruning always keeps the newest row, so an empty table after a
        // checkpoint was emptied by someone else: go on from the
        // checkpoint, and the head check below records the cut.
        None => {
            match read_checkpoint(tx)? {
                Some(checkpoint) => {
                    let (mac, _) = checkpoint.verified_macs(key).ok_or_else(|| {
                    corrupt("the audit trail's retention checkpoint does not verify (tampered with)")
                })?;
                    (checkpoint.seq, mac)
                }
                None => (0, GENESIS.to_vec()),
            }
        }
    };
    let intact = match &head {
        Some(head) => *head == key.head(seq, &prev),
        None => seq == 0,
    };
    if intact {
        return append_rows(tx, key, seq, prev, batch);
    }
    // The head does not match the last row: records were cut off the end.
    // Say so in the chain before going on, rather than cover it up.
    let cut = Timed {
        at_ms: now_ms(),
        event: Event::Cut(crate::audit::CutEvent { after_seq: seq }),
    };
    let mut with_cut = Vec::with_capacity(batch.len() + 1);
    with_cut.push(cut);
    with_cut.extend_from_slice(batch);
    append_rows(tx, key, seq, prev, &with_cut)
}

/// The sequence number and MAC of the trail's newest row, if it has one.
fn last_row(tx: &Transaction<'_>) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
    Ok(tx
        .query_row(
            "SELECT seq, mac FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// A `meta` value that must be a blob; anything else is tampering.
fn read_meta_blob(tx: &Transaction<'_>, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let value: Option<rusqlite::types::Value> = tx
        .query_row("SELECT value FROM meta WHERE key = ?1", [name], |r| {
            r.get(0)
        })
        .optional()?;
    match value {
        None => Ok(None),
        Some(rusqlite::types::Value::Blob(bytes)) => Ok(Some(bytes)),
        Some(_) => Err(corrupt(format!(
            "the audit trail's {name} has the wrong type (tampered with)"
        ))),
    }
}

/// Appends `batch` after the row `seq` with MAC `prev`, and moves the head.
fn append_rows(
    tx: &Transaction<'_>,
    key: &ChainKey,
    mut seq: u64,
    mut prev: Vec<u8>,
    batch: &[Timed],
) -> Result<(), StoreError> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO audit (seq, at_ms, kind, function, secret, body, prev, mac)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for run in runs(batch) {
        for records in run.chunks(MAX_RECORDS_PER_ROW) {
            seq += records.len() as u64;
            let event = &records[0].event;
            let at_ms = records
                .iter()
                .fold(records[0].at_ms, |t, timed| t.max(timed.at_ms));
            let body = match crate::audit::run::encode(records) {
                Some(run) => Ok(run),
                None => match records {
                    [one] => serde_json::to_string(&body_of(one)),
                    many => serde_json::to_string(&many.iter().map(body_of).collect::<Vec<_>>()),
                },
            }
            .map_err(|e| corrupt(format!("cannot encode an audit record: {e}")))?;
            let mac = key.link(&prev, seq, &body);
            insert.execute(params![
                seq,
                at_ms,
                event.kind(),
                event.function(),
                event.secret(),
                body,
                prev,
                &mac[..],
            ])?;
            prev = mac.to_vec();
        }
    }
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('audit_head', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [&key.head(seq, &prev)[..]],
    )?;
    Ok(())
}

/// The retention checkpoint, if the trail was ever pruned.
fn read_checkpoint(tx: &Transaction<'_>) -> Result<Option<Checkpoint>, StoreError> {
    read_meta_blob(tx, "audit_checkpoint")?
        .map(|bytes| {
            serde_json::from_slice(&bytes).map_err(|_| {
                corrupt("the audit trail's retention checkpoint cannot be read (tampered with)")
            })
        })
        .transpose()
}

/// What a row's records share: kind, function and secret.
type Columns<'a> = (&'a str, Option<&'a str>, Option<&'a str>);

/// `batch` split into runs of records that share a row's columns (kind,
/// function, secret), each in batch order, in order of first appearance.
fn runs(batch: &[Timed]) -> Vec<Vec<&Timed>> {
    let mut runs: Vec<Vec<&Timed>> = Vec::new();
    let mut index: HashMap<Columns<'_>, usize> = HashMap::new();
    // A record usually belongs to the same run as the one before it.
    let mut last: Option<(Columns<'_>, usize)> = None;
    for timed in batch {
        let event = &timed.event;
        let columns = (event.kind(), event.function(), event.secret());
        let run = match last {
            Some((previous, run)) if previous == columns => run,
            _ => *index.entry(columns).or_insert_with(|| {
                runs.push(Vec::new());
                runs.len() - 1
            }),
        };
        last = Some((columns, run));
        runs[run].push(timed);
    }
    runs
}

fn body_of<'a>(timed: &&'a Timed) -> BodyRef<'a> {
    BodyRef {
        at_ms: timed.at_ms,
        event: &timed.event,
    }
}

impl SqliteStore {
    /// The key this store's audit chain is computed with.
    pub(crate) fn chain_key(&self) -> Result<Arc<ChainKey>, StoreError> {
        self.chain_key
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| corrupt("the audit trail's key is not loaded"))
    }

    /// Up to `limit` rows of the chain after record `seq`, in order, exactly
    /// as stored: what a fleet's node ships to the fleet's audit stream.
    pub(crate) fn audit_rows_after(&self, seq: u64, limit: usize) -> Result<Vec<Row>, StoreError> {
        self.read_audit(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT seq, at_ms, kind, function, secret, body, prev, mac FROM audit
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            stmt.query_map(params![seq, limit as i64], to_row)?
                .collect::<Result<_, _>>()
                .map_err(|_| {
                    corrupt("an audit record has a column of the wrong type (see `keyhole audit verify`)")
                })
        })
    }

    /// The chain's retention checkpoint, if it was ever pruned.
    pub(crate) fn audit_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        self.read_audit(read_checkpoint)
    }

    /// Notes that the fleet's audit stream holds this store's chain through
    /// record `seq`: retention never removes a record the fleet lacks.
    pub(crate) fn mark_audit_shipped(&self, seq: u64) -> Result<(), StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('audit_shipped', ?1)
             ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
            [seq as i64],
        )?;
        Ok(())
    }

    /// In a fleet's replica, how many records of its chain the fleet's
    /// audit stream does not hold yet (as last noted; 0 elsewhere).
    pub fn audit_waiting(&self) -> Result<u64, StoreError> {
        self.read(|tx| {
            let Some(shipped) = shipped_through(tx)? else {
                return Ok(0);
            };
            let last: Option<i64> = tx.query_row("SELECT MAX(seq) FROM audit", [], |r| r.get(0))?;
            Ok((last.unwrap_or(0).max(0) as u64).saturating_sub(shipped))
        })
    }

    /// This store's name in its fleet's audit stream: made once, from the
    /// machine's host name and a random suffix (two nodes on one machine,
    /// or a node and an operator's command, get two names), and kept.
    pub(crate) fn audit_node_id(&self) -> Result<String, StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let known: Option<String> = tx
            .query_row("SELECT value FROM meta WHERE key = 'node_id'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|_| corrupt("the node's id in the store has the wrong type"))?;
        if let Some(id) = known {
            return Ok(id);
        }
        let id = new_node_id();
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('node_id', ?1)",
            [&id],
        )?;
        tx.commit()?;
        Ok(id)
    }
}

/// A fresh node id: the host name's letters, digits and dashes (at most
/// 40), a dash, and 8 random hex digits.
fn new_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let mut name: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    name = name.trim_matches('-').to_owned();
    if name.is_empty() {
        name = "node".into();
    }
    format!("{name}-{:08x}", rand::random::<u32>())
}

/// In a fleet's replica, the last record the fleet's audit stream holds
/// (retention keeps everything after it); `None` elsewhere.
fn shipped_through(tx: &Transaction<'_>) -> Result<Option<u64>, StoreError> {
    if super::replica::fleet_id(tx)?.is_none() {
        return Ok(None);
    }
    let shipped: Option<i64> = tx
        .query_row(
            "SELECT value FROM meta WHERE key = 'audit_shipped'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(|_| corrupt("the audit trail's shipped mark has the wrong type"))?;
    Ok(Some(shipped.unwrap_or(0).max(0) as u64))
}

impl SqliteStore {
    /// One pruning transaction.
    fn prune_step(
        &self,
        before_ms: Millis,
        record: &AdminRecord,
        pruning_record: &mut Option<(u64, Vec<u8>)>,
    ) -> Result<Step, StoreError> {
        let key = self.chain_key()?;
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let first = pruning_record.is_none();
        if first {
            append_admin_record(self, &tx, record)?;
            let newest = last_row(&tx)?
                .ok_or_else(|| corrupt("the pruning's own audit record was not written"))?;
            *pruning_record = Some(newest);
        }
        let (by_seq, by_mac) = pruning_record.clone().expect("set above");
        let checkpoint = read_checkpoint(&tx)?;
        let mut verifier = Verifier::after(&key, checkpoint.as_ref()).map_err(refusal)?;
        let floor = checkpoint.as_ref().map_or(0, |c| c.seq);
        let rows: Vec<Row> = {
            let mut stmt = tx.prepare_cached(
                "SELECT seq, at_ms, kind, function, secret, body, prev, mac FROM audit
                 WHERE seq > ?1 AND seq < ?2 ORDER BY seq LIMIT ?3",
            )?;
            stmt.query_map(
                params![floor, by_seq, PRUNE_ROWS_PER_TRANSACTION as i64],
                to_row,
            )?
            .collect::<Result<_, _>>()
            .map_err(|_| {
                corrupt(
                    "an audit record has a column of the wrong type (see `keyhole audit verify`)",
                )
            })?
        };
        let keep_after = shipped_through(&tx)?.unwrap_or(u64::MAX);
        let mut through: Option<(&Row, Millis)> = None;
        let mut records = 0u64;
        let mut reached_new = rows.len() < PRUNE_ROWS_PER_TRANSACTION;
        for row in &rows {
            // A fleet's node keeps what its fleet does not hold yet.
            if row.at_ms >= before_ms || row.seq > keep_after {
                reached_new = true;
                break;
            }
            verifier.check(row).map_err(refusal)?;
            records = row.seq - floor;
            let newest = through.map_or(row.at_ms, |(_, t)| t.max(row.at_ms));
            through = Some((row, newest));
            if records >= PRUNE_RECORDS_PER_TRANSACTION {
                break;
            }
        }
        let Some((row, newest)) = through else {
            tx.commit()?;
            if first {
                record.mark_written();
            }
            return Ok(Step::Done(checkpoint.map(|c| c.pruned())));
        };
        tx.execute(
            "DELETE FROM audit WHERE seq > ?1 AND seq <= ?2",
            params![floor, row.seq],
        )?;
        let through_ms = checkpoint
            .as_ref()
            .map_or(newest, |c| c.through_ms.max(newest));
        let at = CheckpointAt {
            seq: row.seq,
            mac: &row.mac,
            by_seq,
            by_mac: &by_mac,
        };
        let next = Checkpoint::new(&key, &at, through_ms, now_ms());
        let encoded = serde_json::to_vec(&next)
            .map_err(|e| corrupt(format!("cannot encode the retention checkpoint: {e}")))?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('audit_checkpoint', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [encoded],
        )?;
        tx.commit()?;
        if first {
            record.mark_written();
        }
        if reached_new {
            // Removed and done: report both in one step.
            return Ok(Step::RemovedAndDone(records, next.pruned()));
        }
        Ok(Step::Removed(records))
    }
}

/// What one pruning transaction did.
enum Step {
    /// Removed this many records; more may be old enough.
    Removed(u64),
    /// Removed this many records and reached the records to keep.
    RemovedAndDone(u64, crate::audit::Pruned),
    /// Nothing (more) to remove; what was removed so far.
    Done(Option<crate::audit::Pruned>),
}

/// A pruning refused because the rows it would remove do not verify.
fn refusal(bad: crate::audit::Tampered) -> StoreError {
    corrupt(format!(
        "the audit trail does not verify at record {} ({}), so it is not pruned: pruning would destroy the evidence; see `keyhole audit verify`",
        bad.seq, bad.problem
    ))
}

fn to_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        seq: r.get(0)?,
        at_ms: r.get(1)?,
        kind: r.get(2)?,
        function: r.get(3)?,
        secret: r.get(4)?,
        body: r.get(5)?,
        prev: r.get(6)?,
        mac: r.get(7)?,
    })
}
impl AuditLog for SqliteStore {
    /// Appends records to the audit trail in one transaction (not a change
    /// to what nodes serve: the revision stays).
    fn append_audit(&self, batch: &[Timed]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let key = self.chain_key()?;
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        append_in(&tx, &key, batch)?;
        tx.commit()?;
        Ok(())
    }

    /// Records matching `query`, oldest first (the most recent `limit`).
    fn audit_entries(&self, query: &Query) -> Result<Vec<Entry>, StoreError> {
        let limit = query
            .limit
            .unwrap_or(MAX_QUERY_RECORDS)
            .min(MAX_QUERY_RECORDS);
        // Only the filters given, so SQLite can use the matching index.
        let mut conditions = Vec::new();
        let mut values: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(function) = &query.function {
            conditions.push("function = ?");
            values.push(function.clone().into());
        }
        if let Some(secret) = &query.secret {
            conditions.push("secret = ?");
            values.push(secret.clone().into());
        }
        if let Some(since) = query.since_ms {
            conditions.push("at_ms >= ?");
            values.push(since.into());
        }
        values.push(i64::from(limit).into());
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        self.read_audit(|tx| {
            // A row holds at least one matching record (its time is its
            // latest record's), so `limit` rows hold at least `limit`.
            let mut stmt = tx.prepare(&format!(
                "SELECT seq, at_ms, kind, function, secret, body, prev, mac FROM audit
                 {filter} ORDER BY seq DESC LIMIT ?"
            ))?;
            let rows = stmt.query_map(rusqlite::params_from_iter(values), to_row)?;
            let mut entries = Vec::new();
            'rows: for row in rows {
                let row = row?;
                let records = row.entries().ok_or_else(|| {
                    corrupt(format!(
                        "audit record {} cannot be read (see `keyhole audit verify`)",
                        row.seq
                    ))
                })?;
                for entry in records.into_iter().rev() {
                    if entries.len() == limit as usize {
                        break 'rows;
                    }
                    if query.since_ms.is_none_or(|since| entry.at_ms >= since) {
                        entries.push(entry);
                    }
                }
            }
            entries.reverse();
            Ok(entries)
        })
    }

    /// Walks the whole chain and reports the first record that fails.
    fn verify_audit(&self) -> Result<Verification, StoreError> {
        let key = self.chain_key()?;
        self.read_audit(|tx| {
            let head = match read_meta_blob(tx, "audit_head") {
                Err(StoreError::Corrupt(problem)) => {
                    return Ok(Verifier::new(&key).fail(crate::audit::Tampered { seq: 0, problem }));
                }
                other => other?,
            };
            let mut stmt = tx.prepare(
                "SELECT seq, at_ms, kind, function, secret, body, prev, mac FROM audit ORDER BY seq",
            )?;
            let mut rows = stmt.query_map([], to_row)?;
            let checkpoint = match read_checkpoint(tx) {
                Ok(checkpoint) => checkpoint,
                Err(StoreError::Corrupt(problem)) => {
                    return Ok(Verifier::new(&key).fail(crate::audit::Tampered { seq: 0, problem }));
                }
                Err(e) => return Err(e),
            };
            let mut verifier = match Verifier::after(&key, checkpoint.as_ref()) {
                Ok(verifier) => verifier,
                Err(bad) => return Ok(Verifier::new(&key).fail(bad)),
            };
            for row in rows.by_ref() {
                let row = match row {
                    Ok(row) => row,
                    // A column of the wrong type is an edit too.
                    Err(rusqlite::Error::FromSqlConversionFailure(..))
                    | Err(rusqlite::Error::InvalidColumnType(..))
                    | Err(rusqlite::Error::IntegralValueOutOfRange(..)) => {
                        return Ok(verifier.fail(crate::audit::Tampered {
                            seq: 0,
                            problem: "a record has a column of the wrong type (edited)".into(),
                        }));
                    }
                    Err(e) => return Err(e.into()),
                };
                if let Err(bad) = verifier.check(&row) {
                    return Ok(verifier.fail(bad));
                }
            }
            Ok(verifier.finish(head.as_deref()))
        })
    }

    /// Whether [`SqliteStore::prune_audit`] would remove anything for
    /// `before_ms`: the oldest row after the checkpoint is older than that
    /// and is not the last row (cheap: one indexed look-up).
    fn audit_prunable(&self, before_ms: Millis) -> Result<bool, StoreError> {
        self.read(|tx| {
            let floor = read_checkpoint(tx)?.map_or(0, |c| c.seq);
            let oldest: Option<(u64, Millis)> = tx
                .query_row(
                    "SELECT seq, at_ms FROM audit WHERE seq > ?1 ORDER BY seq LIMIT 1",
                    [floor],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let last: Option<u64> = tx
                .query_row("SELECT MAX(seq) FROM audit", [], |r| r.get(0))
                .optional()?
                .flatten();
            let keep_after = shipped_through(tx)?.unwrap_or(u64::MAX);
            Ok(
                matches!((oldest, last), (Some((seq, at)), Some(last)) if at < before_ms && seq < last && seq <= keep_after),
            )
        })
    }

    /// Removes the oldest records, up to the first row that holds one from
    /// `before_ms` or later, and leaves a signed [`Checkpoint`] from which
    /// `keyhole audit verify` goes on. The newest row always stays (the
    /// chain's head continues from it). Rows are verified before they go:
    /// rows that do not verify are not removed (that would destroy the
    /// evidence), and the error names the first bad record. `record`, the
    /// pruning's admin record, is written in the
    /// first transaction, before anything is removed, and the checkpoint
    /// names it, so a checkpoint cannot be carried over from a copy of the
    /// store. Works in transactions of at most 50 000 records
    /// (`PRUNE_RECORDS_PER_TRANSACTION`), so pruning a long trail
    /// never holds the writer for long; if a later one fails, what was
    /// removed stays removed (each transaction leaves a valid checkpoint)
    /// and a `failed` record says so.
    fn prune_audit(
        &self,
        before_ms: Millis,
        record: &AdminRecord,
    ) -> Result<PruneReport, StoreError> {
        if record.written() {
            return Err(corrupt(
                "pruning the audit trail must be an admin action of its own (its record was already written)",
            ));
        }
        let mut removed = 0u64;
        let mut pruning_record: Option<(u64, Vec<u8>)> = None;
        loop {
            match self.prune_step(before_ms, record, &mut pruning_record) {
                Ok(Step::Removed(records)) => removed += records,
                Ok(Step::RemovedAndDone(records, pruned)) => {
                    return Ok(PruneReport {
                        removed: removed + records,
                        pruned: Some(pruned),
                    });
                }
                Ok(Step::Done(pruned)) => return Ok(PruneReport { removed, pruned }),
                Err(e) => {
                    if record.written() {
                        // The record went in with the first transaction
                        // as `ok`: add what happened since. (A first step
                        // that failed committed nothing, and `audited`
                        // records the failure once.)
                        let mut failed = record
                            .failed(format!("stopped after removing {removed} record(s): {e}"));
                        failed.at_ms = now_ms();
                        let _ = self.append_audit(std::slice::from_ref(&failed));
                    }
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use crate::store::audited;

    /// Issue 24 §3: an auditor's `audit verify` walked the whole trail
    /// holding the store's only connection, so reloads (a revocation
    /// reaching the node), writes and admin logins waited for it.
    #[test]
    fn reading_the_audit_trail_never_holds_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open(dir.path()));
        put(&store, "before", b"v");
        let written = store
            .read_audit(|_| {
                // Mid-read, on another thread: a write and a read of what
                // nodes serve.
                let writer = Arc::clone(&store);
                let (done, finished) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    put(&writer, "during", b"v");
                    let listed = writer.list_secrets().unwrap().len();
                    done.send(listed).unwrap();
                });
                Ok(finished.recv_timeout(std::time::Duration::from_secs(5)))
            })
            .unwrap();
        assert_eq!(written, Ok(2), "the write waited for the audit read");
    }

    fn outcomes(store: &SqliteStore) -> Vec<(String, String)> {
        store
            .audit_entries(&crate::audit::Query::default())
            .unwrap()
            .into_iter()
            .map(|e| match e.event {
                crate::audit::Event::Admin(a) => (a.action, a.outcome),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn an_admin_record_lands_with_its_change_or_after_a_refusal_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let value = SecretValue::new(b"value-a-1".to_vec());
        let done = audited(&store, admin_event("secret.put"), |record| {
            store.put_secret("a", &version(&value, KeyKind::Opaque), record)
        })
        .unwrap();
        assert_eq!(done.unwrap().version, 1);
        let refused = audited(&store, admin_event("secret.rollback"), |record| {
            store.rollback("a", 7, None, record)
        })
        .unwrap();
        assert!(matches!(refused, Err(StoreError::UnknownVersion { .. })));
        let read = audited(&store, admin_event("secret.list"), |_| store.list_secrets()).unwrap();
        assert_eq!(read.unwrap().len(), 1);
        assert_eq!(
            outcomes(&store),
            [
                ("secret.put".to_owned(), "ok".to_owned()),
                ("secret.rollback".to_owned(), "failed".to_owned()),
                ("secret.list".to_owned(), "ok".to_owned()),
            ]
        );
        // An action that writes twice is recorded once, with its first write.
        let value_b = SecretValue::new(b"value-b-1".to_vec());
        audited(&store, admin_event("secret.put-twice"), |record| {
            store.put_secret("b", &version(&value_b, KeyKind::Opaque), record)?;
            store.put_secret("b", &version(&value_b, KeyKind::Opaque), record)
        })
        .unwrap()
        .unwrap();
        assert_eq!(outcomes(&store).len(), 4);
        assert_eq!(outcomes(&store)[3].0, "secret.put-twice");
        assert_eq!(store.verify_audit().unwrap().first_bad, None);
    }

    #[test]
    fn a_refused_prune_is_recorded_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        for action in ["one", "two", "three"] {
            audited(&store, admin_event(action), |_| Ok::<_, StoreError>(()))
                .unwrap()
                .unwrap();
        }
        // An edited record: pruning verifies what it removes, and refuses.
        tamper(
            &store,
            "UPDATE audit SET body = replace(body, '\"two\"', '\"owt\"') WHERE seq = 2",
        );
        let refused = audited(&store, admin_event("audit.prune"), |record| {
            store.prune_audit(i64::MAX, record)
        })
        .unwrap();
        assert!(refused.is_err(), "{refused:?}");
        let prunes: Vec<_> = outcomes(&store)
            .into_iter()
            .filter(|(action, _)| action == "audit.prune")
            .collect();
        assert_eq!(prunes, [("audit.prune".to_owned(), "failed".to_owned())]);
    }

    /// Issue 26 §6: a fleet's replica is the spool of its records until
    /// the fleet's trail holds them, so retention keeps them till then.
    #[test]
    fn a_fleet_replica_prunes_only_what_its_fleet_holds() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.bind_fleet("fleet-1").unwrap();
        for action in ["one", "two", "three", "four"] {
            audited(&store, admin_event(action), |_| Ok::<_, StoreError>(()))
                .unwrap()
                .unwrap();
        }
        assert_eq!(store.audit_waiting().unwrap(), 4);
        let prune = |store: &SqliteStore| {
            audited(store, admin_event("audit.prune"), |record| {
                store.prune_audit(i64::MAX, record)
            })
            .unwrap()
            .unwrap()
        };
        assert!(!store.audit_prunable(i64::MAX).unwrap());
        assert_eq!(prune(&store).removed, 0, "nothing shipped, nothing pruned");

        store.mark_audit_shipped(2).unwrap();
        store.mark_audit_shipped(1).unwrap();
        assert!(store.audit_prunable(i64::MAX).unwrap());
        let report = prune(&store);
        assert_eq!(report.removed, 2, "only what the fleet holds");
        let left: Vec<u64> = store
            .audit_rows_after(0, 100)
            .unwrap()
            .iter()
            .map(|row| row.seq)
            .collect();
        assert_eq!(left, [3, 4, 5, 6], "the unshipped rows and the prunes' own");
        assert_eq!(store.verify_audit().unwrap().first_bad, None);
        assert!(store.audit_node_id().unwrap() == store.audit_node_id().unwrap());
    }

    #[test]
    fn a_change_whose_record_cannot_be_written_is_not_made() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        // A trail that refuses writes: gone from the schema (sealed, so only
        // the trail fails).
        sealed_change(&store, "DROP TABLE audit;");
        let value = SecretValue::new(b"value-a-1".to_vec());
        let outcome = audited(&store, admin_event("secret.put"), |record| {
            store.put_secret("a", &version(&value, KeyKind::Opaque), record)
        });
        assert!(outcome.is_err(), "no success without its record");
        assert!(store.list_secrets().unwrap().is_empty(), "and no change");
    }

    #[test]
    fn the_chain_outlives_a_master_key_rotation_and_catches_an_edit() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        for action in ["one", "two", "three"] {
            audited(&store, admin_event(action), |_| Ok::<_, StoreError>(()))
                .unwrap()
                .unwrap();
        }
        let new = AesKey::generate();
        let copy = AesKey::from_slice(new.expose()).unwrap();
        store.rotate_master_key(new, &rec()).unwrap();
        drop(store);
        let store = SqliteStore::open(dir.path(), copy).unwrap();
        let verified = store.verify_audit().unwrap();
        // The three actions and the rotation's own record.
        assert_eq!((verified.records, verified.first_bad), (4, None));
        tamper(
            &store,
            "UPDATE audit SET body = replace(body, '\"two\"', '\"owt\"') WHERE seq = 2",
        );
        let bad = store.verify_audit().unwrap().first_bad.expect("caught");
        assert_eq!(bad.seq, 2);
    }

    fn function_record(
        function: &str,
        secret: Option<&str>,
        request: u64,
        at_ms: i64,
    ) -> crate::audit::Timed {
        crate::audit::Timed {
            at_ms,
            event: crate::audit::Event::Function(crate::audit::FunctionEvent {
                function: function.into(),
                request,
                binding: "KEY".into(),
                secret: secret.map(Into::into),
                version: Some(1),
                operation: "get".into(),
                outcome: crate::audit::OpOutcome::Allowed,
                destination: None,
                reason: None,
                digest: None,
            }),
        }
    }

    fn requests(entries: &[crate::audit::Entry]) -> Vec<(u64, u64)> {
        entries
            .iter()
            .map(|e| match &e.event {
                crate::audit::Event::Function(f) => (e.seq, f.request),
                crate::audit::Event::Admin(_) => (e.seq, 0),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    /// A store holding an admin record, a batch of interleaved function
    /// records (a/s1 ×3, b/s2 ×2, a without a secret, and a run of c/s3
    /// longer than one row holds), and another admin record; and the
    /// length of the long run.
    fn store_with_runs(dir: &Path) -> (SqliteStore, u64) {
        let store = open(dir);
        audited(&store, admin_event("before"), |_| Ok::<_, StoreError>(()))
            .unwrap()
            .unwrap();
        let mut batch = vec![
            function_record("a", Some("s1"), 1, 1000),
            function_record("b", Some("s2"), 2, 1001),
            function_record("a", Some("s1"), 3, 1002),
            function_record("a", None, 4, 1003),
            function_record("b", Some("s2"), 5, 1004),
            function_record("a", Some("s1"), 6, 1005),
        ];
        let long = crate::audit::chain::MAX_RECORDS_PER_ROW as u64 + 5;
        batch.extend((0..long).map(|i| function_record("c", Some("s3"), 100 + i, 2000 + i as i64)));
        store.append_audit(&batch).unwrap();
        audited(&store, admin_event("after"), |_| Ok::<_, StoreError>(()))
            .unwrap()
            .unwrap();
        (store, long)
    }

    #[test]
    fn a_batch_is_stored_as_runs_and_read_back_record_by_record() {
        let dir = tempfile::tempdir().unwrap();
        let (store, long) = store_with_runs(dir.path());
        let total = 2 + 6 + long;

        // Rows: admin, a/s1, b/s2, a/-, c ×2 (split), admin.
        let rows: Vec<(u64, String, Option<String>, i64)> = store
            .read(|tx| {
                let mut stmt =
                    tx.prepare("SELECT seq, kind, function, at_ms FROM audit ORDER BY seq")?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .unwrap();
        let last_c = 7 + long;
        assert_eq!(
            rows.iter().map(|r| (r.0, r.2.clone())).collect::<Vec<_>>(),
            vec![
                (1, None),
                (4, Some("a".into())),
                (6, Some("b".into())),
                (7, Some("a".into())),
                (
                    7 + crate::audit::chain::MAX_RECORDS_PER_ROW as u64,
                    Some("c".into())
                ),
                (last_c, Some("c".into())),
                (last_c + 1, None),
            ]
        );
        assert_eq!(
            rows[1].3, 1005,
            "a run's time column is its latest record's"
        );

        // Every record comes back, numbered without gaps.
        let all = store
            .audit_entries(&crate::audit::Query::default())
            .unwrap();
        assert_eq!(all.len() as u64, total);
        assert!(all.iter().map(|e| e.seq).eq(1..=total));
        assert_eq!(
            requests(&all[..7]),
            vec![(1, 0), (2, 1), (3, 3), (4, 6), (5, 2), (6, 5), (7, 4)]
        );

        // Filters and limits count records, not rows.
        let query = |function: Option<&str>, secret: Option<&str>, since_ms, limit| {
            store
                .audit_entries(&crate::audit::Query {
                    function: function.map(Into::into),
                    secret: secret.map(Into::into),
                    since_ms,
                    limit,
                })
                .unwrap()
        };
        assert_eq!(requests(&query(Some("a"), None, None, None)).len(), 4);
        assert_eq!(
            requests(&query(Some("a"), Some("s1"), None, Some(2))),
            vec![(3, 3), (4, 6)]
        );
        assert_eq!(
            requests(&query(None, Some("s1"), Some(1002), None)),
            vec![(3, 3), (4, 6)]
        );
        let c = query(Some("c"), None, None, Some(3));
        assert_eq!(
            c.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![last_c - 2, last_c - 1, last_c]
        );
        assert_eq!(
            query(Some("c"), None, Some(2000 + long as i64 - 10), None).len(),
            10
        );

        let verified = store.verify_audit().unwrap();
        assert_eq!((verified.records, verified.first_bad), (total, None));
        assert_eq!(verified.head.unwrap().0, total);

        // One record edited inside a run, a run's time or secret column
        // edited, a run renumbered: each is caught at that row.
        for (sql, needle) in [
            (
                "UPDATE audit SET body = replace(body, '[1000,1,', '[1000,9,') WHERE seq = 4",
                "record 4: its content does not match its MAC",
            ),
            (
                "UPDATE audit SET at_ms = 1000 WHERE seq = 4",
                "record 4: its indexed columns",
            ),
            (
                "UPDATE audit SET secret = 's9' WHERE seq = 6",
                "record 6: its indexed columns",
            ),
            (
                "UPDATE audit SET seq = 5 WHERE seq = 6",
                "record 5: expected record 5 next but found 4",
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let (store, _) = store_with_runs(dir.path());
            tamper(&store, sql);
            let bad = store.verify_audit().unwrap().first_bad.expect(sql);
            let shown = format!("record {}: {}", bad.seq, bad.problem);
            assert!(shown.contains(needle), "{sql}: {shown}");
        }
    }

    #[test]
    fn a_trail_begun_before_compact_runs_reads_and_verifies_across_both_forms() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let old: Vec<_> = [1, 3, 6]
            .into_iter()
            .map(|request| function_record("a", Some("s1"), request, 1000 + request as i64))
            .collect();
        store.append_audit(&old).unwrap();
        // Rewrite that row as a node before the compact form wrote it: an
        // array of one object per record, chained and headed the same way.
        let key = store.chain_key().unwrap();
        let legacy = serde_json::to_string(
            &old.iter()
                .map(|t| crate::audit::chain::BodyRef {
                    at_ms: t.at_ms,
                    event: &t.event,
                })
                .collect::<Vec<_>>(),
        )
        .unwrap();
        assert!(legacy.contains("\"request\":3,"), "{legacy}");
        let mac = key.link(&crate::audit::chain::GENESIS, 3, &legacy);
        {
            let conn = store.conn.lock().unwrap();
            conn.execute(
                "UPDATE audit SET body = ?1, mac = ?2 WHERE seq = 3",
                rusqlite::params![legacy, &mac[..]],
            )
            .unwrap();
            conn.execute(
                "UPDATE meta SET value = ?1 WHERE key = 'audit_head'",
                [&key.head(3, &mac)[..]],
            )
            .unwrap();
        }
        assert_eq!(store.verify_audit().unwrap().first_bad, None);

        // A newer node carries the chain on in the compact form.
        let new: Vec<_> = [7, 8]
            .into_iter()
            .map(|request| function_record("a", Some("s1"), request, 2000 + request as i64))
            .collect();
        store.append_audit(&new).unwrap();
        let compact: String = store
            .read(|tx| Ok(tx.query_row("SELECT body FROM audit WHERE seq = 5", [], |r| r.get(0))?))
            .unwrap();
        assert!(compact.starts_with("{\"run\":\"function\""), "{compact}");
        let verified = store.verify_audit().unwrap();
        assert_eq!((verified.records, verified.first_bad), (5, None));
        let all = store
            .audit_entries(&crate::audit::Query::default())
            .unwrap();
        assert_eq!(requests(&all), vec![(1, 1), (2, 3), (3, 6), (4, 7), (5, 8)]);
        assert_eq!(
            all.iter().map(|e| e.at_ms).collect::<Vec<_>>(),
            [1001, 1003, 1006, 2007, 2008]
        );

        // An edit inside the old row is still caught there.
        tamper(
            &store,
            "UPDATE audit SET body = replace(body, '\"request\":3,', '\"request\":9,') WHERE seq = 3",
        );
        let bad = store.verify_audit().unwrap().first_bad.expect("caught");
        assert_eq!(bad.seq, 3, "{}", bad.problem);
    }
}
