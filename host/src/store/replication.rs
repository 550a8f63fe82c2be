//! Replication: how a store becomes one replica of a fleet's state.
//!
//! Invariant: a replica changes only by applying the fleet's entries in
//! order, each exactly once, and an admin write on a replica lands only
//! if the fleet accepted it as the entry right after the last one that
//! replica applied. So every replica passes through the same states in
//! the same order, and two writes decided on the same state can never
//! both land: the second is refused as a [`Proposal::Conflict`], the
//! replica catches up, and the write is decided again on the newer state
//! (two concurrent rotations of one secret make versions n+1 and n+2).
//!
//! Why one sequence for the whole state, not a compare-and-swap per key:
//! some rules span entities (a secret is not removed while a grant names
//! it; a grant names a secret that exists), and no per-key swap keeps
//! those when the two writes touch different keys. Admin writes are rare;
//! ordering all of them costs a retry when two race, nothing on the
//! request path, which reads only the local replica.
//!
//! A [`ChangeSet`] carries rows as the backend stores them: secret values
//! only as ciphertext and wrapped keys, token secrets only as hashes.
//! Never touches: any particular transport (the fleet's lives in
//! `store::fleet`).

use serde::{Deserialize, Serialize};

/// One column's value, as the backend stores it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", content = "v")]
pub enum Value {
    /// SQL NULL.
    #[serde(rename = "n")]
    Null,
    /// A whole number.
    #[serde(rename = "i")]
    Integer(i64),
    /// A real number.
    #[serde(rename = "r")]
    Real(f64),
    /// Text.
    #[serde(rename = "s")]
    Text(String),
    /// Bytes (ciphertext, wrapped keys, hashes, components), base64 on the wire.
    #[serde(rename = "b", with = "base64_bytes")]
    Blob(Vec<u8>),
}

/// One row's change: its new columns, or its deletion.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct RowChange {
    /// The table.
    pub table: String,
    /// The primary key's values, in the key's column order.
    pub key: Vec<Value>,
    /// Every column with its new value; `None` when the row was deleted.
    pub row: Option<Vec<(String, Value)>>,
}

/// Everything one admin write changed in the replicated state: the unit
/// a fleet orders and every replica applies whole.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChangeSet {
    /// The rows changed, deletions first (children before parents), then
    /// inserts and updates (parents before children).
    pub rows: Vec<RowChange>,
}

impl ChangeSet {
    /// Whether the write changed nothing (then nothing is proposed).
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

// Row values are ciphertext and hashes, but a change set is still never
// printed whole: its debug form names tables and row counts only.
impl std::fmt::Debug for ChangeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut tables: Vec<(&str, usize)> = Vec::new();
        for row in &self.rows {
            match tables.iter_mut().find(|(t, _)| *t == row.table) {
                Some((_, n)) => *n += 1,
                None => tables.push((&row.table, 1)),
            }
        }
        f.debug_struct("ChangeSet").field("rows", &tables).finish()
    }
}

/// What the fleet said to a proposed entry.
#[derive(Debug)]
pub enum Proposal {
    /// Accepted (and replicated as the fleet promises) as entry `seq`.
    Accepted(u64),
    /// Another entry came first: the proposal was decided on a state that
    /// is no longer the latest. Catch up and decide again.
    Conflict,
}

/// Where a replica sends its admin writes: the fleet's ordered log.
/// Implemented by `store::fleet`; a store without one writes alone.
pub trait Replication: Send + Sync {
    /// Waits (bounded) until this replication can take proposals, if it
    /// is still being set up (a node that has just started, joining its
    /// fleet). Called before a write takes the store's lock, since joining
    /// needs it.
    fn ready(&self) {}

    /// Proposes `change` as the entry right after `applied` (the last
    /// entry this replica applied). Blocks until the fleet answers.
    ///
    /// Fails with [`super::StoreError::ClusterUnavailable`] when the fleet
    /// cannot take writes (unreachable, no quorum); then nothing was
    /// written.
    fn propose(&self, applied: u64, change: &ChangeSet) -> Result<Proposal, super::StoreError>;

    /// Proposes a master-key rotation as the entry right after `applied`:
    /// `change` re-wraps every data key under `new`, and `key_check` is the
    /// store's key check sealed under it (how every replica knows whether a
    /// key it was given is the new one). Like [`Replication::propose`];
    /// a fleet that cannot rotate its master key refuses.
    fn propose_master_key(
        &self,
        _applied: u64,
        _change: &ChangeSet,
        _key_check: &[u8],
        _new: &crate::crypto::AesKey,
    ) -> Result<Proposal, super::StoreError> {
        Err(super::StoreError::ClusterUnavailable(
            "this replica cannot rotate the fleet's master key now; nothing was written".into(),
        ))
    }

    /// After a conflict: waits (bounded) until this replica has applied
    /// an entry after `applied`.
    fn await_newer(&self, applied: u64) -> Result<(), super::StoreError>;

    /// Shares what this replica recorded of some bindings' uses (whole
    /// rows, as it holds them now) with the fleet, without waiting: what
    /// `secret dependents` shows across nodes. Best effort: a mark the
    /// fleet misses is sent again at the binding's next use.
    fn share_uses(&self, _uses: Vec<super::UseRecord>) {}
}

mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_set_round_trips_through_json_and_its_debug_form_shows_no_values() {
        let set = ChangeSet {
            rows: vec![
                RowChange {
                    table: "secret_versions".into(),
                    key: vec![Value::Text("API".into()), Value::Integer(2)],
                    row: Some(vec![
                        ("ciphertext".into(), Value::Blob(b"sealed-bytes".to_vec())),
                        ("grace_until".into(), Value::Null),
                        ("weight".into(), Value::Real(0.5)),
                    ]),
                },
                RowChange {
                    table: "grants".into(),
                    key: vec![Value::Text("f".into()), Value::Text("B".into())],
                    row: None,
                },
            ],
        };
        let json = serde_json::to_string(&set).unwrap();
        assert!(!json.contains("sealed-bytes"), "blobs travel as base64");
        let back: ChangeSet = serde_json::from_str(&json).unwrap();
        assert!(back == set);
        let debug = format!("{set:?}");
        assert!(!debug.contains("sealed"), "{debug}");
        assert!(debug.contains("secret_versions"), "{debug}");
    }
}
