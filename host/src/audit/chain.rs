//! The chain that makes the audit trail tamper-evident.
//!
//! The trail is stored as rows. A row holds one record, or a run of up to
//! [`MAX_RECORDS_PER_ROW`] records of one kind about the same function and
//! secret that were written in the same batch (the node's writer stores
//! its function records that way, in the compact form of [`super::run`]:
//! one database row per run rather than per record, saying the shared part
//! once, is most of what keeps auditing every secret call cheap). Records
//! are numbered 1, 2, 3, … without gaps; a row is numbered by its last
//! record. Row `n` stores `mac_n = HMAC-SHA256(key, mac_prev || n ||
//! body_n)` next to `mac_prev`, the MAC of the row before it (all zeros
//! for the first). Changing a record breaks its row's MAC; deleting,
//! inserting or moving a row breaks the link of the row after it (or the
//! numbering); and without the key nobody can recompute the chain to hide
//! it. The store also keeps a MAC of the head (last sequence number and
//! MAC), so cutting rows off the end shows too — unless the head is rolled
//! back with them: compare the head `keyhole audit verify` prints with one
//! kept elsewhere to rule that out.
//!
//! Retention removes a prefix of the chain and leaves a [`Checkpoint`] in
//! its place: the sequence number and MAC of the last removed row, and the
//! number and MAC of the `audit.prune` record that authorised the pruning
//! (written before anything was removed), all MAC'd under the same key.
//! Verification then starts from the checkpoint rather than from the
//! genesis and requires that record further on, so a pruned trail still
//! proves that nothing after the checkpoint was edited, deleted, inserted
//! or reordered; forging a checkpoint (to hide deleted records as
//! "pruned") needs the key, an older checkpoint put back leaves the records
//! after it missing, and a checkpoint made in a copy of the store (same
//! key) names a pruning record this trail does not have. Pruning first
//! verifies the rows it removes and that the head matches the last row, so
//! retention never launders tampering away; and an append that finds the
//! head does not match the last row writes an [`Event::Cut`] record first,
//! so a cut-off tail stays on the record instead of being papered over.

use super::{CutEvent, Entry, Event, Millis, Pruned, Tampered, Verification};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Length of a MAC in the chain.
pub const MAC_LEN: usize = 32;
/// The "previous MAC" of the first record.
pub const GENESIS: [u8; MAC_LEN] = [0; MAC_LEN];
/// The most records one row holds: bounds the size of a row (and of what
/// reading one back costs) however long a run of like records is.
pub const MAX_RECORDS_PER_ROW: usize = 1024;

/// The key the chain is computed with: random per store, kept sealed under
/// the master key, never printed.
pub struct ChainKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey([REDACTED])")
    }
}

impl ChainKey {
    /// A key from exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(Self(Zeroizing::new(bytes.try_into().ok()?)))
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(self.0.as_ref()).expect("HMAC takes any key length")
    }

    /// The MAC of the row whose last record is `seq`, with `body`,
    /// following `prev`.
    pub fn link(&self, prev: &[u8], seq: u64, body: &str) -> [u8; MAC_LEN] {
        let mut mac = self.mac();
        mac.update(prev);
        mac.update(&seq.to_be_bytes());
        mac.update(body.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// A key for another purpose, derived from this one (so it is as secret
    /// and survives master-key rotations likewise): the compiled-module
    /// cache authenticates its entries with one.
    pub fn derive(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        let mut mac = self.mac();
        mac.update(b"keyhole derived key\0");
        mac.update(purpose.as_bytes());
        Zeroizing::new(mac.finalize().into_bytes().into())
    }

    /// Whether `other` is the same key (compared in constant time).
    pub fn same_as(&self, other: &ChainKey) -> bool {
        use subtle::ConstantTimeEq as _;
        self.0.ct_eq(&*other.0).into()
    }

    /// The key sealed under `wrapping` with `aad`: how a fleet's node hands
    /// its chain key to whoever verifies the fleet's trail (see
    /// `store::fleet::audit`), without the key's bytes leaving this type.
    pub fn sealed_under(&self, wrapping: &crate::crypto::AesKey, aad: &[u8]) -> Vec<u8> {
        wrapping.seal(self.0.as_ref(), aad)
    }

    /// A key [`ChainKey::sealed_under`] sealed, if `sealed` opens under
    /// `wrapping` with `aad`.
    pub fn open_sealed(
        wrapping: &crate::crypto::AesKey,
        sealed: &[u8],
        aad: &[u8],
    ) -> Option<Self> {
        let plain = wrapping.open(sealed, aad).ok()?;
        Self::from_slice(&plain)
    }

    /// The MAC of a retention checkpoint (see [`Checkpoint`]).
    pub fn checkpoint(
        &self,
        at: &CheckpointAt<'_>,
        through_ms: Millis,
        pruned_at_ms: Millis,
    ) -> [u8; MAC_LEN] {
        let mut mac = self.mac();
        mac.update(b"keyhole audit checkpoint v1");
        mac.update(&at.seq.to_be_bytes());
        mac.update(at.mac);
        mac.update(&at.by_seq.to_be_bytes());
        mac.update(at.by_mac);
        mac.update(&through_ms.to_be_bytes());
        mac.update(&pruned_at_ms.to_be_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The MAC of the chain's head: its last sequence number and MAC.
    pub fn head(&self, seq: u64, last: &[u8]) -> [u8; MAC_LEN] {
        let mut mac = self.mac();
        mac.update(b"keyhole audit head");
        mac.update(&seq.to_be_bytes());
        mac.update(last);
        mac.finalize().into_bytes().into()
    }
}

/// Where a pruned chain now starts: the last removed row's sequence number
/// and MAC, with when pruning removed it and how recent the newest removed
/// record was. MAC'd as a whole under the chain key ([`ChainKey::checkpoint`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The last removed record's sequence number.
    pub seq: u64,
    /// The last removed row's MAC (hex): the next row's `prev`.
    pub mac: String,
    /// The newest removed record's time.
    pub through_ms: Millis,
    /// When the last pruning ran.
    pub pruned_at_ms: Millis,
    /// The sequence number of that pruning's own `audit.prune` record,
    /// which the chain after the checkpoint must hold.
    pub by_seq: u64,
    /// That record's row MAC (hex).
    pub by_mac: String,
    /// [`ChainKey::checkpoint`] over the fields above (hex).
    pub seal: String,
}

/// Where a checkpoint's removed rows end and who removed them.
pub struct CheckpointAt<'a> {
    /// The last removed row's sequence number.
    pub seq: u64,
    /// Its MAC.
    pub mac: &'a [u8],
    /// The pruning's own record's sequence number.
    pub by_seq: u64,
    /// Its MAC.
    pub by_mac: &'a [u8],
}

impl Checkpoint {
    /// A sealed checkpoint at `at`.
    pub fn new(
        key: &ChainKey,
        at: &CheckpointAt<'_>,
        through_ms: Millis,
        pruned_at_ms: Millis,
    ) -> Self {
        Self {
            seq: at.seq,
            mac: hex::encode(at.mac),
            through_ms,
            pruned_at_ms,
            by_seq: at.by_seq,
            by_mac: hex::encode(at.by_mac),
            seal: hex::encode(key.checkpoint(at, through_ms, pruned_at_ms)),
        }
    }

    /// What it says was removed.
    pub fn pruned(&self) -> Pruned {
        Pruned {
            through_seq: self.seq,
            through_ms: self.through_ms,
            pruned_at_ms: self.pruned_at_ms,
        }
    }

    /// The last removed row's MAC and the pruning record's MAC, if the
    /// checkpoint's seal holds under `key`.
    pub fn verified_macs(&self, key: &ChainKey) -> Option<(Vec<u8>, Vec<u8>)> {
        let mac = hex::decode(&self.mac).ok().filter(|m| m.len() == MAC_LEN)?;
        let by_mac = hex::decode(&self.by_mac)
            .ok()
            .filter(|m| m.len() == MAC_LEN)?;
        let seal = hex::decode(&self.seal).ok()?;
        let at = CheckpointAt {
            seq: self.seq,
            mac: &mac,
            by_seq: self.by_seq,
            by_mac: &by_mac,
        };
        let expected = key.checkpoint(&at, self.through_ms, self.pruned_at_ms);
        (self.seq >= 1 && self.by_seq > self.seq && seal == expected).then_some((mac, by_mac))
    }
}

/// [`Body`] borrowing its event: what the writer encodes, without copying
/// the event. Encodes exactly as [`Body`] does.
#[derive(serde::Serialize)]
pub struct BodyRef<'a> {
    /// When it happened.
    pub at_ms: Millis,
    /// What happened.
    pub event: &'a Event,
}

/// What a record's MAC covers besides its place: its time and event.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Body {
    /// When it happened.
    pub at_ms: Millis,
    /// What happened.
    pub event: Event,
}

/// One row exactly as the database holds it: one record, or a run of them.
#[derive(Debug, Clone)]
pub struct Row {
    /// Sequence number of its (last) record.
    pub seq: u64,
    /// Time column: the latest of its records' times (must agree with the
    /// body), so a query for records since a time finds every row that
    /// holds one.
    pub at_ms: Millis,
    /// Kind column (must agree with the body).
    pub kind: String,
    /// Function column (must agree with the body).
    pub function: Option<String>,
    /// Secret column (must agree with the body).
    pub secret: Option<String>,
    /// The MAC'd JSON body: a [`Body`], a compact run of function records
    /// ([`super::run`]), or (in rows written before that form) an array of
    /// [`Body`].
    pub body: String,
    /// The previous row's MAC, as stored.
    pub prev: Vec<u8>,
    /// This row's MAC, as stored.
    pub mac: Vec<u8>,
}

impl Row {
    /// The records it holds, as listed, if its body parses.
    pub fn entries(&self) -> Option<Vec<Entry>> {
        let bodies = parse_bodies(&self.body)?;
        let first = first_seq(self.seq, bodies.len())?;
        Some(
            bodies
                .into_iter()
                .zip(first..)
                .map(|(body, seq)| Entry {
                    seq,
                    at_ms: body.at_ms,
                    node: None,
                    event: body.event,
                })
                .collect(),
        )
    }
}

/// The records a row's body holds: one [`Body`], a compact run, or a
/// non-empty array of [`Body`].
fn parse_bodies(body: &str) -> Option<Vec<Body>> {
    if body.trim_start().starts_with('[') {
        let run: Vec<Body> = serde_json::from_str(body).ok()?;
        return (!run.is_empty()).then_some(run);
    }
    // A single record's body has no `run` field, so this fails at once on
    // a compact run.
    if let Ok(one) = serde_json::from_str::<Body>(body) {
        return Some(vec![one]);
    }
    let run = super::run::decode(body)?;
    Some(
        run.into_iter()
            .map(|(at_ms, event)| Body { at_ms, event })
            .collect(),
    )
}

/// The sequence number of the first of `count` records in a row numbered
/// `last`, if the numbering leaves room for them.
fn first_seq(last: u64, count: usize) -> Option<u64> {
    last.checked_sub(count as u64 - 1)
        .filter(|first| *first >= 1)
}

/// Walks the chain in sequence order and stops at the first bad record.
pub struct Verifier<'k> {
    key: &'k ChainKey,
    next_seq: u64,
    prev: Vec<u8>,
    count: u64,
    pruned: Option<Pruned>,
    /// The pruning record the checkpoint names, until it is found.
    pruning_record: Option<(u64, Vec<u8>)>,
}

impl<'k> Verifier<'k> {
    /// A verifier starting at the first record.
    pub fn new(key: &'k ChainKey) -> Self {
        Self {
            key,
            next_seq: 1,
            prev: GENESIS.to_vec(),
            count: 0,
            pruned: None,
            pruning_record: None,
        }
    }

    /// A verifier starting after `checkpoint` (at the first record without
    /// one), or the first bad record if the checkpoint itself does not
    /// verify.
    pub fn after(key: &'k ChainKey, checkpoint: Option<&Checkpoint>) -> Result<Self, Tampered> {
        let Some(checkpoint) = checkpoint else {
            return Ok(Self::new(key));
        };
        let (prev, by_mac) = checkpoint.verified_macs(key).ok_or_else(|| Tampered {
            seq: checkpoint.seq,
            problem: "the retention checkpoint does not match its MAC (forged or edited)".into(),
        })?;
        Ok(Self {
            key,
            next_seq: checkpoint.seq + 1,
            prev,
            count: 0,
            pruned: Some(checkpoint.pruned()),
            pruning_record: Some((checkpoint.by_seq, by_mac)),
        })
    }

    /// Whether `row` stands where the chain's next row would: it begins
    /// with the next record's number and follows the last row's MAC.
    pub fn expects(&self, row: &Row) -> bool {
        let count = parse_bodies(&row.body).map_or(1, |b| b.len());
        first_seq(row.seq, count) == Some(self.next_seq) && row.prev == self.prev
    }

    /// The record number the next row must begin with.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Checks the next row in sequence order.
    pub fn check(&mut self, row: &Row) -> Result<(), Tampered> {
        let bad = |problem: String| Tampered {
            seq: row.seq,
            problem,
        };
        let bodies = parse_bodies(&row.body);
        let count = bodies.as_ref().map_or(1, Vec::len);
        let first = first_seq(row.seq, count);
        if first != Some(self.next_seq) {
            let found = first.unwrap_or(0);
            let missing = if found > self.next_seq {
                format!(
                    "records {}..{} are missing (deleted)",
                    self.next_seq,
                    found - 1
                )
            } else if found < self.next_seq && self.count == 0 && self.next_seq > 1 {
                "it lies at or before the retention checkpoint (inserted after pruning)".to_owned()
            } else {
                "its sequence number repeats or goes back".to_owned()
            };
            return Err(bad(format!(
                "expected record {} next but found {found}: {missing}",
                self.next_seq
            )));
        }
        let own_link_holds = self.key.link(&row.prev, row.seq, &row.body)[..] == row.mac[..];
        if !own_link_holds {
            return Err(bad(
                "its content does not match its MAC (edited, or moved from another position)"
                    .into(),
            ));
        }
        if row.prev != self.prev {
            return Err(bad(format!(
                "it does not follow record {} (a record before it was deleted, inserted or reordered)",
                self.next_seq - 1
            )));
        }
        let cut = bodies.as_ref().and_then(|bodies| {
            bodies.iter().find_map(|body| match &body.event {
                Event::Cut(CutEvent { after_seq }) => Some(*after_seq),
                _ => None,
            })
        });
        let consistent = bodies.is_some_and(|bodies| {
            bodies.iter().map(|body| body.at_ms).max() == Some(row.at_ms)
                && bodies.iter().all(|body| {
                    body.event.kind() == row.kind
                        && body.event.function() == row.function.as_deref()
                        && body.event.secret() == row.secret.as_deref()
                })
        });
        if !consistent {
            return Err(bad(
                "its indexed columns (time, kind, function, secret) disagree with its MAC'd content (edited)"
                    .into(),
            ));
        }
        if let Some((by_seq, by_mac)) = &self.pruning_record
            && row.seq >= *by_seq
        {
            if row.seq != *by_seq || row.mac != *by_mac {
                return Err(bad(format!(
                    "the retention checkpoint names pruning record {by_seq}, which this trail does not hold (a checkpoint from another copy of the store?)"
                )));
            }
            self.pruning_record = None;
        }
        if let Some(after_seq) = cut {
            return Err(bad(format!(
                "records after {after_seq} were cut off the end (or the head was edited) before this record was written"
            )));
        }
        self.prev.clone_from(&row.mac);
        self.next_seq = row.seq + 1;
        self.count += count as u64;
        Ok(())
    }

    /// The result after the last record, given the stored head MAC.
    pub fn finish(self, stored_head: Option<&[u8]>) -> Verification {
        let last_seq = self.next_seq - 1;
        let head = (self.count > 0).then(|| (last_seq, hex::encode(&self.prev)));
        let expected = self.key.head(last_seq, &self.prev);
        if let Some((by_seq, _)) = &self.pruning_record {
            let problem = if self.count == 0 {
                "every record after the retention checkpoint is gone (pruning always keeps the newest)".to_owned()
            } else {
                format!(
                    "the retention checkpoint names pruning record {by_seq}, which this trail does not hold (deleted, or a checkpoint from another copy of the store)"
                )
            };
            return Verification {
                records: self.count,
                head: None,
                first_bad: Some(Tampered {
                    seq: last_seq + 1,
                    problem,
                }),
                pruned: self.pruned,
                nodes: Vec::new(),
            };
        }
        let first_bad = match stored_head {
            Some(mac) if mac == expected => None,
            None if self.count == 0 => None,
            _ => Some(Tampered {
                seq: last_seq + 1,
                problem: format!(
                    "the chain ends at record {last_seq} but the store's head says otherwise (records were cut off the end)"
                ),
            }),
        };
        Verification {
            records: self.count,
            head,
            first_bad,
            pruned: self.pruned,
            nodes: Vec::new(),
        }
    }

    /// The result after the last record of a copy of the chain that has no
    /// stored head to compare with (a fleet's stream, which cannot be cut
    /// short: its messages cannot be deleted).
    pub fn finish_unanchored(self) -> Verification {
        let expected = self.key.head(self.next_seq - 1, &self.prev);
        self.finish(Some(&expected))
    }

    /// Stops early with `problem`.
    pub fn fail(self, problem: Tampered) -> Verification {
        Verification {
            records: self.count,
            head: None,
            first_bad: Some(problem),
            pruned: self.pruned,
            nodes: Vec::new(),
        }
    }
}
