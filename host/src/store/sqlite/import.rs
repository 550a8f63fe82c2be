//! Moving a single node's store into an empty fleet (`keyhole cluster
//! import`).
//!
//! Invariant: an import is one admin write on a fleet's replica, so one
//! entry of the fleet's log: the fleet gets the whole store — secrets with
//! every version, functions with their routes and components, grants,
//! tokens — or nothing. It goes only into a fleet that holds none of these
//! yet (checked in the write's own transaction, so a write racing it from
//! another replica is never merged over), and only from a store that
//! verifies whole: every row's MAC, every version's decryption. Secret
//! values stay in their ciphertexts; only the data keys are re-wrapped,
//! and only when the source's master key is not the fleet's.

use super::{SqliteStore, corrupt};
use crate::crypto;
use crate::store::{AdminRecord, KeyCustody as _, StoreError};
use rusqlite::types::Value;
use rusqlite::{Transaction, params_from_iter};

/// The tables an import copies, parents before children.
const COPIED: &[&str] = &[
    "secrets",
    "secret_versions",
    "functions",
    "routes",
    "grants",
    "tokens",
];

/// What an import copied.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImportReport {
    /// Secrets copied.
    pub secrets: usize,
    /// Their versions, every one (retired ones too).
    pub versions: usize,
    /// Functions deployed.
    pub functions: usize,
    /// Grants.
    pub grants: usize,
    /// Admin tokens (as their hashes).
    pub tokens: usize,
}

/// One table's rows, every column but the row MAC (each store
/// authenticates its own rows).
struct TableRows {
    table: &'static str,
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
}

impl SqliteStore {
    /// Copies `source`, a single node's store that verifies whole, into this
    /// replica's fleet, which must hold no secret, function or token yet:
    /// one admin write, recorded by `record`.
    pub fn import_state(
        &self,
        source: &SqliteStore,
        record: &AdminRecord,
    ) -> Result<ImportReport, StoreError> {
        self.check_importable(source)?;
        let tables: Vec<TableRows> =
            source.read(|tx| COPIED.iter().map(|t| read_table(tx, t)).collect())?;
        let (from, to) = (source.master(), self.master());
        let rewrap = from.expose() != to.expose();
        self.write(record, |tx| {
            refuse_unless_empty(tx)?;
            let mut report = ImportReport::default();
            for table in &tables {
                copy_in(tx, table, rewrap.then_some((&*from, &*to)))?;
                let n = table.rows.len();
                match table.table {
                    "secrets" => report.secrets = n,
                    "secret_versions" => report.versions = n,
                    "functions" => report.functions = n,
                    "grants" => report.grants = n,
                    "tokens" => report.tokens = n,
                    _ => {}
                }
            }
            Ok(report)
        })
    }

    /// Fails, naming why, when `source` cannot be imported into this
    /// replica's fleet now: what [`SqliteStore::import_state`] checks first,
    /// so a command can refuse before it ships anything (the fleet's
    /// emptiness is checked again inside the import's write).
    pub fn check_importable(&self, source: &SqliteStore) -> Result<(), StoreError> {
        if self.replication().is_none() {
            return Err(StoreError::Cluster(
                "an import goes into a fleet: run it with --cluster".into(),
            ));
        }
        if let Some(fleet) = source.fleet()? {
            return Err(StoreError::Cluster(format!(
                "{} is a replica of fleet {fleet}, not a single node's store",
                source.data_dir().display()
            )));
        }
        source.verify_integrity()?;
        let check = source.check_all()?;
        if let Some((name, version)) = check.failed.first() {
            return Err(StoreError::Integrity {
                name: name.clone(),
                version: *version,
            });
        }
        self.read(refuse_unless_empty)
    }
}

/// Every row of `table`, without its MAC.
fn read_table(tx: &Transaction<'_>, table: &'static str) -> Result<TableRows, StoreError> {
    let mut stmt = tx.prepare(&format!("SELECT * FROM {table}"))?;
    let all: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
    let keep: Vec<usize> = (0..all.len()).filter(|&i| all[i] != "mac").collect();
    let rows = stmt
        .query_map([], |r| {
            keep.iter()
                .map(|&i| r.get::<_, Value>(i))
                .collect::<Result<Vec<_>, _>>()
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TableRows {
        table,
        columns: keep.iter().map(|&i| all[i].clone()).collect(),
        rows,
    })
}

/// Refuses an import into a fleet that holds anything of its own.
fn refuse_unless_empty(tx: &Transaction<'_>) -> Result<(), StoreError> {
    let (secrets, functions, tokens): (i64, i64, i64) = tx.query_row(
        "SELECT (SELECT COUNT(*) FROM secrets), (SELECT COUNT(*) FROM functions), (SELECT COUNT(*) FROM tokens)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    if secrets + functions + tokens > 0 {
        return Err(StoreError::Cluster(format!(
            "the fleet is not empty ({secrets} secrets, {functions} functions, {tokens} tokens): an import only goes into an empty fleet, so nothing is merged over what it holds"
        )));
    }
    Ok(())
}

/// Inserts `table`'s rows; with `rewrap` (from, to), secret versions' data
/// keys are re-wrapped from the source's master key to the fleet's.
fn copy_in(
    tx: &Transaction<'_>,
    table: &TableRows,
    rewrap: Option<(&crypto::AesKey, &crypto::AesKey)>,
) -> Result<(), StoreError> {
    let placeholders = vec!["?"; table.columns.len()].join(", ");
    let mut insert = tx.prepare(&format!(
        "INSERT INTO {} ({}) VALUES ({placeholders})",
        table.table,
        table.columns.join(", ")
    ))?;
    let column = |name: &str| table.columns.iter().position(|c| c == name);
    let wrapped_at = (table.table == "secret_versions")
        .then(|| (column("name"), column("version"), column("wrapped_key")));
    for row in &table.rows {
        let mut row = row.clone();
        if let (Some((from, to)), Some((Some(n), Some(v), Some(w)))) = (rewrap, wrapped_at) {
            let (Value::Text(name), Value::Integer(version), Value::Blob(wrapped)) =
                (&row[n], &row[v], &row[w])
            else {
                return Err(corrupt(
                    "a secret version's row has columns of the wrong type",
                ));
            };
            let version = u32::try_from(*version)
                .map_err(|_| corrupt("a secret version's number is out of range"))?;
            let rewrapped =
                crypto::rewrap_data_key(from, to, name, version, wrapped).map_err(|_| {
                    StoreError::Integrity {
                        name: name.clone(),
                        version,
                    }
                })?;
            row[w] = Value::Blob(rewrapped);
        }
        insert.execute(params_from_iter(row))?;
    }
    Ok(())
}
