//! Authentication of the rows that decide what is served and who may act.
//!
//! Invariant: a row of `secrets`, `secret_versions`, `functions`, `routes`,
//! `grants` or `tokens` that Keyhole did not write, or wrote earlier and
//! has since changed, is refused. Ciphertexts already bind a value to its
//! secret and version; this covers the state around them — which version
//! is current, grace windows, grants, deployments, tokens — that someone
//! with write access to the database but not the master key could
//! otherwise forge (insert a `reveal` grant, an admin token with a known
//! hash, a grace window that never ends) or roll back (a rotated-out value
//! made current again, a revoked token or grant restored).
//!
//! - Each row carries `mac`: HMAC-SHA256, under a key derived from the
//!   store's secret chain key (so it survives master-key rotations), over
//!   the table's name and every column but the component bytes (their
//!   SHA-256 is a column, and is checked when the component is read) and a
//!   version's wrapped key and ciphertext (AES-GCM already binds those to
//!   their secret and version, and a damaged one fails alone, as before).
//!   A forged row fails its MAC and is named.
//! - The store's `state` is an HMAC over a generation number and every
//!   row's MAC in order: a row deleted, or replaced by an older copy of
//!   itself (whose own MAC is valid), changes the state. The generation
//!   goes up with every write.
//! - Every write verifies all of this before it changes anything, and
//!   seals what it changed after (every row whose MAC no longer matches:
//!   after verification, only rows the write itself changed). So a write
//!   never legitimises a forgery, and a store that fails verification
//!   takes no writes until an operator has looked (`keyhole check`).
//! - The schema (every table, index, trigger and view, with its SQL) is
//!   part of the state, and Keyhole's connection runs no trigger or view:
//!   the file could otherwise carry code that changes rows inside
//!   Keyhole's own write, between verification and sealing.
//! - The generation is also written to an anchor file outside the
//!   database (by default beside it; `KEYHOLE_ANCHOR` puts it elsewhere),
//!   so a whole database file replaced by an older valid copy is refused:
//!   its generation is behind the anchor's. An anchor that can be rolled
//!   back (or deleted) with the database detects nothing: keep it where
//!   whoever can write the data directory cannot.

use super::super::StoreError;
use hmac::{Hmac, Mac};
use rusqlite::Transaction;
use rusqlite::types::ValueRef;
use sha2::Sha256;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

/// The authenticated tables: name, the columns a MAC covers (in order),
/// and how many of them (from the first) form the primary key.
const TABLES: &[(&str, &[&str], usize)] = &[
    (
        "secrets",
        &[
            "name",
            "current_version",
            "created_at",
            "updated_at",
            "max_age",
        ],
        1,
    ),
    (
        "secret_versions",
        &["name", "version", "created_at", "kind", "grace_until"],
        2,
    ),
    (
        "functions",
        &[
            "name",
            "routes",
            "memory_mib",
            "timeout_ms",
            "bindings",
            "component_sha256",
            "deployed_at",
            "outbound",
            "approved_outbound",
        ],
        1,
    ),
    ("routes", &["route", "function"], 1),
    (
        "grants",
        &[
            "function",
            "binding",
            "secret",
            "allow",
            "egress",
            "digest",
            "follow_redeploys",
        ],
        2,
    ),
    (
        "tokens",
        &[
            "id",
            "name",
            "role",
            "functions",
            "routes",
            "secret_hash",
            "created_at",
            "expires_at",
            "revoked_at",
            "created_by",
        ],
        1,
    ),
];

/// Columns added to an authenticated table after version 5, by table: a
/// MAC covers each only when it is not NULL (tagged with its place, so no
/// two rows encode alike), so rows written before it existed keep their
/// MACs and an upgrade need not rewrite them.
const LATER_COLUMNS: &[(&str, &[&str])] = &[("functions", &["max_concurrency", "config"])];

/// The columns added later to `table` ([`LATER_COLUMNS`]).
fn later_columns(table: &str) -> &'static [&'static str] {
    LATER_COLUMNS
        .iter()
        .find(|(t, _)| *t == table)
        .map_or(&[], |(_, columns)| columns)
}

/// Whether `table` has `column` (a store at an older schema may not).
fn has_column(tx: &Transaction<'_>, table: &str, column: &str) -> Result<bool, StoreError> {
    Ok(tx.query_row(
        "SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = ?2",
        [table, column],
        |r| r.get::<_, i64>(0),
    )? > 0)
}

/// Schema changes that add authentication (part of version 5).
pub(super) fn migration() -> String {
    TABLES
        .iter()
        .map(|(table, _, _)| format!("ALTER TABLE {table} ADD COLUMN mac BLOB;\n"))
        .collect()
}

/// The key rows are authenticated with.
pub(super) struct RowKey(Zeroizing<[u8; 32]>);

impl RowKey {
    /// The key derived from the store's chain key.
    pub(super) fn new(key: Zeroizing<[u8; 32]>) -> Self {
        Self(key)
    }

    fn mac(&self, domain: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(self.0.as_ref()).expect("any key length");
        mac.update(domain);
        mac
    }
}

/// Appends one SQL value to a MAC, typed and length-prefixed so no two
/// rows encode alike.
fn update_value(mac: &mut HmacSha256, value: ValueRef<'_>) {
    let (tag, bytes): (u8, std::borrow::Cow<'_, [u8]>) = match value {
        ValueRef::Null => (0, (&[][..]).into()),
        ValueRef::Integer(i) => (1, i.to_be_bytes().to_vec().into()),
        ValueRef::Real(r) => (2, r.to_be_bytes().to_vec().into()),
        ValueRef::Text(t) => (3, t.into()),
        ValueRef::Blob(b) => (4, b.into()),
    };
    mac.update(&[tag]);
    mac.update(&(bytes.len() as u64).to_be_bytes());
    mac.update(&bytes);
}

/// One row as stored: its rowid, the MAC it carries, the MAC it should
/// carry, and its primary key for messages.
struct Row {
    rowid: i64,
    stored: Option<Vec<u8>>,
    expected: [u8; 32],
    key: String,
}

fn rows(
    tx: &Transaction<'_>,
    key: &RowKey,
    table: &str,
    columns: &[&str],
    pk: usize,
) -> Result<Vec<Row>, StoreError> {
    // A store being upgraded is verified before the later columns exist.
    let mut later = Vec::new();
    for &column in later_columns(table) {
        if has_column(tx, table, column)? {
            later.push(column);
        }
    }
    let later = later.as_slice();
    let sql = format!(
        "SELECT rowid, mac, {} FROM {table} ORDER BY rowid",
        columns
            .iter()
            .chain(later)
            .copied()
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut stmt = tx.prepare(&sql)?;
    let mut query = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = query.next()? {
        let mut mac = key.mac(b"keyhole/v1/row\0");
        mac.update(table.as_bytes());
        mac.update(&[0]);
        let mut names = Vec::new();
        for i in 0..columns.len() {
            let value = r.get_ref(i + 2)?;
            update_value(&mut mac, value);
            if i < pk {
                names.push(match value {
                    ValueRef::Text(t) => String::from_utf8_lossy(t).escape_debug().to_string(),
                    ValueRef::Integer(n) => n.to_string(),
                    _ => "?".into(),
                });
            }
        }
        for i in 0..later.len() {
            let value = r.get_ref(columns.len() + 2 + i)?;
            if value != ValueRef::Null {
                mac.update(&[0xff, i as u8]);
                update_value(&mut mac, value);
            }
        }
        out.push(Row {
            rowid: r.get(0)?,
            stored: r.get(1)?,
            expected: mac.finalize().into_bytes().into(),
            key: format!("{table}/{}", names.join("/")),
        });
    }
    Ok(out)
}

/// What verification found wrong.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Findings {
    /// Rows whose MAC is missing or wrong, as `table/key`.
    pub forged: Vec<String>,
    /// Why the store's state as a whole does not verify, if it does not.
    pub state: Option<String>,
}

impl Findings {
    /// Whether everything verified.
    pub fn is_clean(&self) -> bool {
        self.forged.is_empty() && self.state.is_none()
    }

    /// The refusal these findings mean.
    pub fn error(&self) -> StoreError {
        StoreError::Tampered {
            forged: self.forged.clone(),
            state: self.state.clone(),
        }
    }
}

/// The database's schema as SQLite keeps it: every table, index, view and
/// trigger with its SQL. It is part of the state, since the file holds
/// code too: a trigger someone added would run inside Keyhole's own next
/// write, after the rows were verified and before they are sealed.
fn schema(tx: &Transaction<'_>) -> Result<Vec<u8>, StoreError> {
    let mut stmt =
        tx.prepare("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        for i in 0..4 {
            let value = r.get_ref(i)?;
            let bytes: &[u8] = match value {
                ValueRef::Text(t) | ValueRef::Blob(t) => t,
                _ => b"",
            };
            out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
            out.extend_from_slice(bytes);
        }
    }
    Ok(out)
}

/// The state MAC over `generation`, the schema, the fleet this store is a
/// replica of and the last entry it applied (for a replica only, so a
/// single node's state MAC is what it always was), and each table's row
/// MACs in order.
fn state_mac(
    key: &RowKey,
    generation: i64,
    schema: &[u8],
    fleet: Option<&(String, i64)>,
    macs: &[(&str, Vec<[u8; 32]>)],
) -> [u8; 32] {
    let mut mac = key.mac(b"keyhole/v1/state\0");
    mac.update(&generation.to_be_bytes());
    mac.update(&(schema.len() as u64).to_be_bytes());
    mac.update(schema);
    if let Some((fleet, applied)) = fleet {
        mac.update(b"fleet\0");
        mac.update(&(fleet.len() as u64).to_be_bytes());
        mac.update(fleet.as_bytes());
        mac.update(&applied.to_be_bytes());
    }
    for (table, rows) in macs {
        mac.update(table.as_bytes());
        mac.update(&(rows.len() as u64).to_be_bytes());
        for row in rows {
            mac.update(row);
        }
    }
    mac.finalize().into_bytes().into()
}

fn meta_i64(tx: &Transaction<'_>, key: &str) -> Result<Option<i64>, StoreError> {
    use rusqlite::OptionalExtension as _;
    Ok(tx
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

/// The fleet this store is a replica of and the last entry it applied, if
/// it is one: sealed with the rows, so neither can be moved behind the
/// store's back (an entry skipped by raising the mark, a replica handed to
/// another fleet).
fn fleet(tx: &Transaction<'_>) -> Result<Option<(String, i64)>, StoreError> {
    Ok(match super::replica::fleet_id(tx)? {
        Some(id) => Some((id, super::replica::applied(tx)? as i64)),
        None => None,
    })
}

/// The store's generation, if it was ever sealed.
pub(super) fn generation(tx: &Transaction<'_>) -> Result<Option<i64>, StoreError> {
    meta_i64(tx, "generation")
}

/// Checks every authenticated row and the state; says what is wrong.
pub(super) fn verify(tx: &Transaction<'_>, key: &RowKey) -> Result<Findings, StoreError> {
    use rusqlite::OptionalExtension as _;
    let mut findings = Findings::default();
    let mut macs = Vec::new();
    for (table, columns, pk) in TABLES {
        let rows = rows(tx, key, table, columns, *pk)?;
        let mut stored_macs = Vec::with_capacity(rows.len());
        for row in rows {
            let ok = row.stored.as_deref().is_some_and(|stored| {
                subtle::ConstantTimeEq::ct_eq(stored, &row.expected[..]).into()
            });
            if !ok {
                findings.forged.push(row.key);
            }
            stored_macs.push(row.expected);
        }
        macs.push((*table, stored_macs));
    }
    let generation = generation(tx)?;
    let stored: Option<Vec<u8>> = tx
        .query_row("SELECT value FROM meta WHERE key = 'state'", [], |r| {
            r.get(0)
        })
        .optional()?;
    match (generation, stored) {
        (Some(generation), Some(stored)) => {
            let expected = state_mac(key, generation, &schema(tx)?, fleet(tx)?.as_ref(), &macs);
            if !bool::from(subtle::ConstantTimeEq::ct_eq(&stored[..], &expected[..])) {
                findings.state = Some(format!(
                    "the set of rows is not the one Keyhole last wrote (generation {generation}): rows were deleted, added, or replaced by older copies, or the schema (tables, triggers) was changed"
                ));
            }
        }
        _ => findings.state = Some("the store's sealed state is missing".into()),
    }
    Ok(findings)
}

/// Seals rows without a MAC (those written since the last seal), moves the
/// generation on and seals the state; returns the new generation. Only to
/// be called after [`verify`] found the store clean in this transaction.
pub(super) fn seal(tx: &Transaction<'_>, key: &RowKey) -> Result<i64, StoreError> {
    let mut macs = Vec::new();
    for (table, columns, pk) in TABLES {
        let rows = rows(tx, key, table, columns, *pk)?;
        let mut all = Vec::with_capacity(rows.len());
        for row in rows {
            if row.stored.as_deref() != Some(&row.expected[..]) {
                tx.execute(
                    &format!("UPDATE {table} SET mac = ?2 WHERE rowid = ?1"),
                    rusqlite::params![row.rowid, &row.expected[..]],
                )?;
            }
            all.push(row.expected);
        }
        macs.push((*table, all));
    }
    let generation = generation(tx)?.unwrap_or(0) + 1;
    let state = state_mac(key, generation, &schema(tx)?, fleet(tx)?.as_ref(), &macs);
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('generation', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [generation],
    )?;
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('state', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [&state[..]],
    )?;
    Ok(generation)
}

/// The file that keeps the generation outside the database.
#[derive(Debug, Clone)]
pub(super) struct Anchor(PathBuf);

impl Anchor {
    /// `KEYHOLE_ANCHOR` if set, else `keyhole.anchor` beside the database.
    pub(super) fn for_store(database: &Path) -> Self {
        match std::env::var_os(ANCHOR_ENV) {
            Some(path) if !path.is_empty() => Self(PathBuf::from(path)),
            _ => Self(database.with_extension("anchor")),
        }
    }

    fn tag(key: &RowKey, generation: i64) -> String {
        let mut mac = key.mac(b"keyhole/v1/anchor\0");
        mac.update(&generation.to_be_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The generation the anchor holds: `None` when there is no anchor.
    pub(super) fn read(&self, key: &RowKey) -> Result<Option<i64>, StoreError> {
        let text = match std::fs::read_to_string(&self.0) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Io {
                    path: self.0.clone(),
                    source,
                });
            }
        };
        let damaged = || {
            StoreError::Corrupt(format!(
                "the anchor {} is damaged or was not written by this store",
                self.0.display()
            ))
        };
        let (generation, tag) = text.trim().split_once(' ').ok_or_else(damaged)?;
        let generation: i64 = generation.parse().map_err(|_| damaged())?;
        let expected = Self::tag(key, generation);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            tag.as_bytes(),
            expected.as_bytes(),
        )) {
            return Err(damaged());
        }
        Ok(Some(generation))
    }

    /// Records `generation`, unless the anchor already holds a later one
    /// (another process wrote after this one).
    pub(super) fn advance(&self, key: &RowKey, generation: i64) -> Result<(), StoreError> {
        if self
            .read(key)
            .ok()
            .flatten()
            .is_some_and(|held| held >= generation)
        {
            return Ok(());
        }
        let io = |source| StoreError::Io {
            path: self.0.clone(),
            source,
        };
        // A name of this write's own: processes and threads do not share it.
        let pending = self.0.with_extension(format!(
            "anchor-pending-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        {
            use std::io::Write as _;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&pending).map_err(io)?;
            writeln!(file, "{generation} {}", Self::tag(key, generation)).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        std::fs::rename(&pending, &self.0).map_err(|e| {
            let _ = std::fs::remove_file(&pending);
            io(e)
        })
    }

    /// Where the anchor lives.
    pub(super) fn path(&self) -> &Path {
        &self.0
    }

    /// Whether there is an anchor file.
    pub(super) fn exists(&self) -> bool {
        self.0.exists()
    }
}

/// The environment variable naming the anchor file.
pub const ANCHOR_ENV: &str = "KEYHOLE_ANCHOR";
