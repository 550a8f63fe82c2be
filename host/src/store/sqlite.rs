//! The embedded store: one SQLite file in the data directory.

use super::{
    Dependent, Deployment, FunctionInfo, Grant, LastUse, MaxAgeChange, NestPolicy, NewVersion,
    RemovedSecret, RequestedBinding, RolledBack, SecretInfo, Store, StoreError, Stored, Timestamp,
    UsableVersion, UsableVersions, UseRecord, VersionInfo, VersionState, now,
};
use crate::crypto::{self, AesKey, SealedVersion};
use crate::operations::OperationSet;
use crate::outbound::egress::EgressList;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

mod audit_log;
mod sealing;
mod tokens;

pub use sealing::ANCHOR_ENV;

pub use audit_log::AuditedError;

/// The database file's name inside the data directory.
pub const DATABASE_FILE: &str = "keyhole.db";
/// Version 2 added `secret_versions.kind` and `grants.egress`; version 3
/// grace windows, maximum ages and recorded uses; version 4 admin tokens
/// and the audit trail; version 5 route-scoped tokens, outbound hosts,
/// grants bound to a component digest, and operators' approvals; version 6
/// functions' own concurrency limits and an index for audit queries by
/// secret.
const SCHEMA_VERSION: i64 = 6;
const KEY_CHECK_PLAINTEXT: &[u8] = b"keyhole master key check";
const KEY_CHECK_AAD: &[u8] = b"keyhole/v1/key-check";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS secrets (
    name            TEXT PRIMARY KEY,
    current_version INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    max_age         INTEGER
);
CREATE TABLE IF NOT EXISTS secret_versions (
    name        TEXT NOT NULL REFERENCES secrets(name) ON DELETE CASCADE,
    version     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    wrapped_key BLOB NOT NULL,
    ciphertext  BLOB NOT NULL,
    kind        TEXT NOT NULL DEFAULT 'opaque',
    grace_until INTEGER,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS functions (
    name             TEXT PRIMARY KEY,
    routes           TEXT NOT NULL,
    memory_mib       INTEGER NOT NULL,
    timeout_ms       INTEGER NOT NULL,
    bindings         TEXT NOT NULL,
    component_sha256 TEXT NOT NULL,
    component        BLOB NOT NULL,
    deployed_at      INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS routes (
    route    TEXT PRIMARY KEY,
    function TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS grants (
    function TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    binding  TEXT NOT NULL,
    secret   TEXT NOT NULL,
    allow    TEXT NOT NULL,
    egress   TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (function, binding)
);
";

/// Uses of secrets recorded by nodes (since version 3): written in batches
/// off the request path, never part of a revision.
const SECRET_USES: &str = "
CREATE TABLE IF NOT EXISTS secret_uses (
    function      TEXT NOT NULL,
    binding       TEXT NOT NULL,
    secret        TEXT NOT NULL,
    version       INTEGER,
    used_at       INTEGER,
    grace_version INTEGER,
    grace_used_at INTEGER,
    PRIMARY KEY (function, binding)
);
";

/// Admin tokens and the audit trail (since version 4). Token secrets are
/// stored only as SHA-256 hashes; audit records carry a chained MAC.
const ADMIN_TABLES: &str = "
CREATE TABLE IF NOT EXISTS tokens (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL,
    functions   TEXT NOT NULL DEFAULT '[]',
    secret_hash BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER,
    created_by  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq      INTEGER PRIMARY KEY,
    at_ms    INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    function TEXT,
    secret   TEXT,
    body     TEXT NOT NULL,
    prev     BLOB NOT NULL,
    mac      BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at_ms);
CREATE INDEX IF NOT EXISTS audit_function ON audit (function, seq);
";

/// Brings a version-3 store to version 4 (tokens and the audit trail).
const MIGRATE_3_TO_4: &str = "UPDATE meta SET value = 4 WHERE key = 'schema';";

/// Brings a version-4 store to version 5 (with [`sealing::migration`]):
/// rows authenticated; route-scoped tokens, the hosts a
/// function asks to call and those an operator approved (kept across
/// redeploys: an approval is of hosts, not of code), and grants bound to
/// the component they were given for (existing grants to what is deployed
/// now, so an upgrade changes nothing that is served).
const MIGRATE_4_TO_5: &str = "
ALTER TABLE tokens ADD COLUMN routes TEXT NOT NULL DEFAULT '[]';
ALTER TABLE functions ADD COLUMN outbound TEXT NOT NULL DEFAULT '';
ALTER TABLE functions ADD COLUMN approved_outbound TEXT NOT NULL DEFAULT '';
ALTER TABLE grants ADD COLUMN digest TEXT NOT NULL DEFAULT '';
ALTER TABLE grants ADD COLUMN follow_redeploys INTEGER NOT NULL DEFAULT 0;
UPDATE grants SET digest = COALESCE((SELECT f.component_sha256 FROM functions f WHERE f.name = grants.function), '');
UPDATE meta SET value = 5 WHERE key = 'schema';
";

/// Brings a version-5 store to version 6: a function's concurrency limit
/// from its manifest (NULL: the node's share), and audit queries by secret
/// served from an index rather than a walk over the whole trail. The
/// schema is part of the sealed state, so this runs only between
/// verifying the store and sealing it again ([`SqliteStore::initialize`]).
const MIGRATE_5_TO_6: &str = "
ALTER TABLE functions ADD COLUMN max_concurrency INTEGER;
CREATE INDEX IF NOT EXISTS audit_secret ON audit (secret, seq);
UPDATE meta SET value = 6 WHERE key = 'schema';
";

/// Brings a version-1 store (before key kinds and egress lists) to version 2.
const MIGRATE_1_TO_2: &str = "
ALTER TABLE secret_versions ADD COLUMN kind TEXT NOT NULL DEFAULT 'opaque';
ALTER TABLE grants ADD COLUMN egress TEXT NOT NULL DEFAULT '';
UPDATE meta SET value = 2 WHERE key = 'schema';
";

/// Brings a version-2 store to version 3 (grace windows, maximum ages, uses).
const MIGRATE_2_TO_3: &str = "
ALTER TABLE secrets ADD COLUMN max_age INTEGER;
ALTER TABLE secret_versions ADD COLUMN grace_until INTEGER;
UPDATE meta SET value = 3 WHERE key = 'schema';
";

/// One secret's columns as listed, current version's kind included.
const SECRET_COLUMNS: &str = "
SELECT s.name, s.current_version,
       (SELECT COUNT(*) FROM secret_versions v WHERE v.name = s.name),
       s.created_at, s.updated_at, c.kind, c.created_at, s.max_age
FROM secrets s LEFT JOIN secret_versions c ON c.name = s.name AND c.version = s.current_version";

/// What [`SqliteStore::check_all`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// How many versions were decrypted.
    pub checked: usize,
    /// The versions that failed, as `(secret, version)`.
    pub failed: Vec<(String, u32)>,
    /// Rows that failed their authentication, as `table/key`.
    pub forged: Vec<String>,
    /// What is wrong with the rows' state as a whole (rollback, deletion),
    /// if anything.
    pub state: Option<String>,
}

/// Secrets, deployments and grants in one SQLite file, with every secret
/// version sealed under the master key (see [`crate::crypto`]).
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// A read-only connection of its own for reading and verifying the
    /// audit trail: an auditor walking the whole trail holds it, never the
    /// connection that reloads, authenticates and writes (WAL lets a
    /// reader and the writer work at once).
    audit_reader: Mutex<Option<Connection>>,
    master: RwLock<Arc<AesKey>>,
    /// The audit chain's key, opened once at start (it survives master-key
    /// rotations: only its wrapping changes).
    chain_key: RwLock<Option<Arc<crate::audit::chain::ChainKey>>>,
    /// The key that authenticates rows (see [`sealing`]), derived from the
    /// chain key once it is loaded.
    row_key: RwLock<Option<Arc<sealing::RowKey>>>,
    /// Where the generation is kept outside the database.
    anchor: sealing::Anchor,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A read-only connection to the database at `path`, running none of the
/// file's triggers or views (as the writer's).
fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    use rusqlite::OpenFlags;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch("PRAGMA trusted_schema = OFF;")?;
    run_no_code_from_the_file(&conn)?;
    Ok(conn)
}

/// The file may hold code someone else put there: no trigger or view of it
/// runs on `conn` (see `sealing`).
fn run_no_code_from_the_file(conn: &Connection) -> Result<(), StoreError> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER,
        false,
    )?;
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_VIEW,
        false,
    )?;
    Ok(())
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir` with `master`.
    ///
    /// Fails with [`StoreError::WrongMasterKey`] when the store was created
    /// under another key, before anything is read or written.
    pub fn open(data_dir: &Path, master: AesKey) -> Result<Self, StoreError> {
        super::private_dir(data_dir)?;
        let path = data_dir.join(DATABASE_FILE);
        super::private_file(&path)?;
        let conn = Connection::open(&path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::NotADatabase =>
                {
                    corrupt(format!("{} is not a SQLite database", path.display()))
                }
                other => other.into(),
            })?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(corrupt(format!(
                "could not enable WAL journal (got {mode})"
            )));
        }
        conn.execute_batch(
            "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; PRAGMA trusted_schema = OFF;",
        )?;
        run_no_code_from_the_file(&conn)?;
        let store = Self {
            conn: Mutex::new(conn),
            audit_reader: Mutex::new(None),
            master: RwLock::new(Arc::new(master)),
            chain_key: RwLock::new(None),
            row_key: RwLock::new(None),
            anchor: sealing::Anchor::for_store(&path),
            path,
        };
        store.initialize()?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the schema on first use and checks the schema version and the
    /// master key on every open.
    fn initialize(&self) -> Result<(), StoreError> {
        let sealed = std::cell::Cell::new(None);
        // Not `write`: a new file has no key check yet, and this is where
        // the key is checked (or the check created).
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Opening is not a change to what nodes serve: no revision bump, so
        // a CLI command does not make every running node reload.
        self.in_transaction(tx, false, |tx| {
            let schema: Option<i64> = match tx.query_row(
                "SELECT value FROM meta WHERE key = 'schema'",
                [],
                |r| r.get(0),
            ) {
                Ok(v) => Some(v),
                Err(rusqlite::Error::QueryReturnedNoRows) => None,
                // A fresh file has no tables yet.
                Err(rusqlite::Error::SqliteFailure(_, Some(m))) if m.starts_with("no such table") => None,
                Err(e) => return Err(e.into()),
            };
            match schema {
                None => {
                    tx.execute_batch(SCHEMA)?;
                    tx.execute_batch(SECRET_USES)?;
                    tx.execute_batch(ADMIN_TABLES)?;
                    // The version-4 shape, then the same steps an old store takes.
                    tx.execute("INSERT INTO meta (key, value) VALUES ('schema', 4)", [])?;
                    tx.execute("INSERT INTO meta (key, value) VALUES ('revision', 0)", [])?;
                    tx.execute_batch(MIGRATE_4_TO_5)?;
                }
                Some(1) => tx.execute_batch(&format!("{MIGRATE_1_TO_2}{MIGRATE_2_TO_3}{SECRET_USES}{ADMIN_TABLES}{MIGRATE_3_TO_4}{MIGRATE_4_TO_5}"))?,
                Some(2) => tx.execute_batch(&format!("{MIGRATE_2_TO_3}{SECRET_USES}{ADMIN_TABLES}{MIGRATE_3_TO_4}{MIGRATE_4_TO_5}"))?,
                Some(3) => tx.execute_batch(&format!("{ADMIN_TABLES}{MIGRATE_3_TO_4}{MIGRATE_4_TO_5}"))?,
                Some(4) => tx.execute_batch(MIGRATE_4_TO_5)?,
                Some(5) | Some(SCHEMA_VERSION) => {}
                Some(other) => {
                    return Err(corrupt(format!(
                        "schema version {other} is not supported by this keyhole (supports {SCHEMA_VERSION})"
                    )));
                }
            }
            let upgraded = schema != Some(SCHEMA_VERSION);
            // Rows were first authenticated in version 5.
            if schema.is_none_or(|v| v < 5) {
                tx.execute_batch(&sealing::migration())?;
            }
            let check: Option<Vec<u8>> = tx
                .query_row("SELECT value FROM meta WHERE key = 'key_check'", [], |r| r.get(0))
                .optional()?;
            let master = self.master();
            match check {
                Some(sealed) if opens_key_check(&master, &sealed) => {}
                Some(_) => return Err(StoreError::WrongMasterKey),
                None => {
                    let sealed = master.seal(KEY_CHECK_PLAINTEXT, KEY_CHECK_AAD);
                    tx.execute("INSERT INTO meta (key, value) VALUES ('key_check', ?1)", [sealed])?;
                }
            }
            let chain_key = audit_log::load_or_create_chain_key(tx, &master)?;
            let row_key = Arc::new(sealing::RowKey::new(chain_key.derive("row authentication")));
            *self.chain_key.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(chain_key));
            *self.row_key.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&row_key));
            if upgraded {
                // The last step changes the schema, which the seal covers:
                // verify first, and seal again only what verified.
                let sealed_before = sealing::generation(tx)?.is_some();
                let clean = sealed_before && self.verify_in(tx)?.is_clean();
                tx.execute_batch(MIGRATE_5_TO_6)?;
                if clean {
                    let generation = sealing::seal(tx, &row_key)?;
                    tracing::info!(store = %self.path.display(), "upgraded the store to schema version {SCHEMA_VERSION} and sealed it again (generation {generation})");
                    sealed.set(Some(generation));
                } else if sealed_before {
                    tracing::warn!(store = %self.path.display(), "upgraded the store to schema version {SCHEMA_VERSION} without sealing it again: it did not verify before (see `keyhole check`)");
                }
            }
            // A new store, or one from before rows were authenticated, is
            // sealed as it is now: trust on first use, said in the log. Not
            // a store that has an anchor, which was sealed before: its seal
            // went missing with whatever was changed with it, and sealing
            // again would adopt that.
            if upgraded
                && sealing::generation(tx)?.is_none()
                && (schema.is_none() || !self.anchor.exists())
            {
                let generation = sealing::seal(tx, &row_key)?;
                tracing::info!(store = %self.path.display(), "sealed the store's rows and state (generation {generation})");
                sealed.set(Some(generation));
            }
            Ok(())
        })?;
        if let Some(generation) = sealed.get() {
            let key = self.row_key()?;
            self.anchor.advance(&key, generation)?;
        }
        Ok(())
    }

    /// The key rows are authenticated with.
    fn row_key(&self) -> Result<Arc<sealing::RowKey>, StoreError> {
        self.row_key
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| corrupt("the store's row key is not loaded"))
    }

    /// Verifies in `tx` every authenticated row, the state they form, and
    /// the generation against the anchor outside the database.
    fn verify_in(&self, tx: &Transaction<'_>) -> Result<sealing::Findings, StoreError> {
        let key = self.row_key()?;
        let mut findings = sealing::verify(tx, &key)?;
        if findings.state.is_none() {
            let generation = sealing::generation(tx)?.unwrap_or(0);
            match self.anchor.read(&key) {
                Ok(Some(anchored)) if anchored > generation => {
                    findings.state = Some(format!(
                        "the database is at generation {generation} but its anchor {} says {anchored}: it was rolled back to an older copy",
                        self.anchor.path().display()
                    ));
                }
                Ok(_) => {}
                Err(e) => findings.state = Some(e.to_string()),
            }
        }
        Ok(findings)
    }

    /// What verifying the store's rows and state finds (for `keyhole
    /// check`): forged rows by name, and whether the state as a whole holds.
    pub fn integrity(&self) -> Result<sealing::Findings, StoreError> {
        self.read(|tx| self.verify_in(tx))
    }

    /// The key that authenticates this store's compiled-module cache
    /// ([`crate::engine::module_cache`]), derived from its secret audit-chain key.
    pub fn module_cache_key(&self) -> Result<zeroize::Zeroizing<[u8; 32]>, StoreError> {
        let chain_key = self.chain_key.read().unwrap_or_else(|p| p.into_inner());
        chain_key
            .as_ref()
            .map(|key| key.derive("compiled-module cache"))
            .ok_or_else(|| corrupt("the store's chain key is not loaded"))
    }

    /// The master key in use.
    fn master(&self) -> Arc<AesKey> {
        Arc::clone(&self.master.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The key check as stored: a known plaintext sealed under the master key.
    fn sealed_key_check(&self) -> Result<Vec<u8>, StoreError> {
        self.read(|tx| {
            Ok(
                tx.query_row("SELECT value FROM meta WHERE key = 'key_check'", [], |r| {
                    r.get(0)
                })?,
            )
        })
    }

    /// Switches to `key` if it is the one the store is sealed under now: a
    /// running node calls this when another process rotated the master key.
    pub fn rekey(&self, key: AesKey) -> Result<(), StoreError> {
        let sealed = self.sealed_key_check()?;
        if !opens_key_check(&key, &sealed) {
            return Err(StoreError::WrongMasterKey);
        }
        *self.master.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        Ok(())
    }

    /// Re-wraps every data key, and the key check, under `new` in one
    /// transaction, and switches to it. Secret ciphertexts stay as they
    /// are. Returns how many versions were re-wrapped. A version whose data
    /// key does not open refuses the whole rotation, changing nothing.
    pub fn rotate_master_key(&self, new: AesKey) -> Result<usize, StoreError> {
        let (count, mut master) = self.write(|tx| {
            // Held until the new key is in place, so no write in this
            // process seals under the old key after the commit.
            let master = self.master.write().unwrap_or_else(|p| p.into_inner());
            let rows: Vec<(String, u32, Vec<u8>)> = {
                let mut stmt =
                    tx.prepare("SELECT name, version, wrapped_key FROM secret_versions")?;
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, sealed_bytes(r, 2)?)))?
                    .collect::<Result<_, _>>()?
            };
            for (name, version, wrapped) in &rows {
                let rewrapped = crypto::rewrap_data_key(&master, &new, name, *version, wrapped)
                    .map_err(|_| StoreError::Integrity {
                        name: name.clone(),
                        version: *version,
                    })?;
                tx.execute(
                    "UPDATE secret_versions SET wrapped_key = ?3 WHERE name = ?1 AND version = ?2",
                    params![name, version, rewrapped],
                )?;
            }
            tx.execute(
                "UPDATE meta SET value = ?1 WHERE key = 'key_check'",
                [new.seal(KEY_CHECK_PLAINTEXT, KEY_CHECK_AAD)],
            )?;
            audit_log::rewrap_chain_key(tx, &master, &new)?;
            Ok((rows.len(), master))
        })?;
        *master = Arc::new(new);
        Ok(count)
    }

    /// Decrypts every stored version and reports which fail their
    /// integrity check, and which rows fail their authentication; values
    /// are dropped (wiped) at once.
    pub fn check_all(&self) -> Result<CheckReport, StoreError> {
        let rows: Vec<(String, u32, SealedVersion)> = self.read(|tx| {
            let mut stmt = tx.prepare(
                "SELECT name, version, wrapped_key, ciphertext FROM secret_versions ORDER BY name, version",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, SealedVersion { wrapped_key: sealed_bytes(r, 2)?, ciphertext: sealed_bytes(r, 3)? }))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })?;
        let master = self.master();
        let failed = rows
            .iter()
            .filter(|(name, version, sealed)| {
                crypto::open_version(&master, name, *version, sealed).is_err()
            })
            .map(|(name, version, _)| (name.clone(), *version))
            .collect();
        let integrity = self.integrity()?;
        Ok(CheckReport {
            checked: rows.len(),
            failed,
            forged: integrity.forged,
            state: integrity.state,
        })
    }

    /// Runs `f` in one immediate transaction, after checking that the master
    /// key in use still opens the store; commits only if it succeeds, and
    /// then bumps the store's revision.
    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.transact(true, f)
    }

    /// Runs `f` in one immediate transaction after checking the master key;
    /// commits only if it succeeds. With `bump`, the revision goes up too,
    /// so nodes reload.
    fn transact<T>(
        &self,
        bump: bool,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Another process may have rotated the master key since this one
        // opened the store: nothing is written under a key that no longer
        // opens it.
        let sealed: Vec<u8> =
            tx.query_row("SELECT value FROM meta WHERE key = 'key_check'", [], |r| {
                r.get(0)
            })?;
        if !opens_key_check(&self.master(), &sealed) {
            return Err(StoreError::WrongMasterKey);
        }
        // Nothing is written over rows someone else forged or rolled back:
        // sealing after this write would make them look like Keyhole's.
        let findings = self.verify_in(&tx)?;
        if !findings.is_clean() {
            let error = findings.error();
            tracing::error!("refusing to write: {error}");
            return Err(error);
        }
        let key = self.row_key()?;
        let generation = std::cell::Cell::new(0);
        let out = self
            .in_transaction(tx, bump, |tx| {
                let out = f(tx)?;
                // An admin action in progress on this thread is recorded in the
                // same transaction as its change: both land, or neither.
                audit_log::append_pending_admin(self, tx)?;
                generation.set(sealing::seal(tx, &key)?);
                Ok(out)
            })
            .inspect(|_| audit_log::committed_pending_admin())?;
        drop(conn);
        // Committed: a failure here only weakens rollback detection.
        if let Err(e) = self.anchor.advance(&key, generation.get()) {
            tracing::error!("cannot record the store's generation in its anchor: {e}");
        }
        Ok(out)
    }

    /// Runs `f` in the open transaction `tx` and commits if it succeeds.
    fn in_transaction<T>(
        &self,
        tx: Transaction<'_>,
        bump: bool,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let out = f(&tx)?;
        if bump {
            tx.execute(
                "UPDATE meta SET value = value + 1 WHERE key = 'revision'",
                [],
            )?;
        }
        tx.commit()?;
        Ok(out)
    }

    /// Runs `f` against a consistent read snapshot taken on the audit
    /// reader's connection (opened on first use), so that however long `f`
    /// takes, the writer's connection stays free.
    fn read_audit<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut reader = self.audit_reader.lock().unwrap_or_else(|p| p.into_inner());
        if reader.is_none() {
            *reader = Some(open_reader(&self.path)?);
        }
        let conn = reader.as_mut().expect("opened above");
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        f(&tx)
    }

    /// Runs `f` against a consistent read snapshot.
    fn read<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        f(&tx)
    }

    /// The current version of secret `name`, if it exists.
    fn current_version(tx: &Transaction<'_>, name: &str) -> Result<Option<u32>, StoreError> {
        Ok(tx
            .query_row(
                "SELECT current_version FROM secrets WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn secret_in(tx: &Transaction<'_>, name: &str) -> Result<SecretInfo, StoreError> {
        let row = tx
            .query_row(
                &format!("{SECRET_COLUMNS} WHERE s.name = ?1"),
                [name],
                |r| SecretRow::try_from(r),
            )
            .optional()?;
        to_secret(row.ok_or_else(|| StoreError::UnknownSecret(name.to_owned()))?)
    }

    fn grants_naming(tx: &Transaction<'_>, secret: &str) -> Result<Vec<Grant>, StoreError> {
        let mut stmt = tx.prepare(&format!(
            "{GRANT_COLUMNS} WHERE secret = ?1 ORDER BY function, binding"
        ))?;
        let rows = stmt.query_map([secret], |r| GrantRow::try_from(r))?;
        rows.map(|row| Self::to_grant(row?)).collect()
    }

    /// Seals and stores a new version and makes it current.
    fn add_version(
        &self,
        tx: &Transaction<'_>,
        name: &str,
        new: &NewVersion<'_>,
        must_exist: bool,
    ) -> Result<Stored, StoreError> {
        let current = Self::current_version(tx, name)?;
        if must_exist && current.is_none() {
            return Err(StoreError::UnknownSecret(name.to_owned()));
        }
        let latest: Option<u32> = tx.query_row(
            "SELECT MAX(version) FROM secret_versions WHERE name = ?1",
            [name],
            |r| r.get(0),
        )?;
        let version = latest.unwrap_or(0) + 1;
        let sealed = crypto::seal_version(&self.master(), name, version, new.value);
        let at = now();
        if current.is_none() {
            tx.execute(
                "INSERT INTO secrets (name, current_version, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
                params![name, version, at],
            )?;
        }
        tx.execute(
            "INSERT INTO secret_versions (name, version, created_at, wrapped_key, ciphertext, kind)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                name,
                version,
                at,
                sealed.wrapped_key,
                sealed.ciphertext,
                new.kind.as_str()
            ],
        )?;
        if let Some(from) = current {
            Self::make_current(
                tx,
                name,
                from,
                version,
                new.grace.map(|g| at.saturating_add(g)),
                at,
            )?;
        }
        match new.max_age {
            MaxAgeChange::Keep => {}
            MaxAgeChange::Set(secs) => {
                tx.execute(
                    "UPDATE secrets SET max_age = ?2 WHERE name = ?1",
                    params![name, secs],
                )?;
            }
            MaxAgeChange::Clear => {
                tx.execute("UPDATE secrets SET max_age = NULL WHERE name = ?1", [name])?;
            }
        }
        Ok(Stored {
            version,
            replaced: current,
        })
    }

    /// Makes `to` current in place of `from`, which is usable until
    /// `grace_until` for verification and decryption, or retires.
    fn make_current(
        tx: &Transaction<'_>,
        name: &str,
        from: u32,
        to: u32,
        grace_until: Option<Timestamp>,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        tx.execute(
            "UPDATE secret_versions SET grace_until = ?3 WHERE name = ?1 AND version = ?2",
            params![name, from, grace_until],
        )?;
        tx.execute(
            "UPDATE secret_versions SET grace_until = NULL WHERE name = ?1 AND version = ?2",
            params![name, to],
        )?;
        tx.execute(
            "UPDATE secrets SET current_version = ?2, updated_at = ?3 WHERE name = ?1",
            params![name, to, at],
        )?;
        Ok(())
    }

    fn function_exists(tx: &Transaction<'_>, name: &str) -> Result<bool, StoreError> {
        Ok(tx
            .query_row(
                "SELECT 1 FROM functions WHERE name = ?1",
                [name],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    fn to_grant(
        (function, binding, secret, allow, egress, digest, follow_redeploys): GrantRow,
    ) -> Result<Grant, StoreError> {
        let allow = OperationSet::parse_list(&allow).map_err(corrupt)?;
        let egress = EgressList::parse_list(&egress).map_err(corrupt)?;
        Ok(Grant {
            function,
            binding,
            secret,
            allow,
            egress,
            digest,
            follow_redeploys,
        })
    }
}

type GrantRow = (String, String, String, String, String, String, bool);

/// The columns [`SqliteStore::to_grant`] reads, in its order.
const GRANT_COLUMNS: &str =
    "SELECT function, binding, secret, allow, egress, digest, follow_redeploys FROM grants";

type FunctionRow = (
    String,
    String,
    u32,
    u32,
    String,
    String,
    u64,
    Timestamp,
    String,
    String,
    Option<u32>,
);

/// The columns [`to_function`] reads, in its order.
const FUNCTION_COLUMNS: &str = "SELECT name, routes, memory_mib, timeout_ms, bindings, component_sha256, length(component), deployed_at, outbound, approved_outbound, max_concurrency FROM functions";

fn to_function(
    (
        name,
        routes,
        memory_mib,
        timeout_ms,
        bindings,
        component_sha256,
        component_size,
        deployed_at,
        outbound,
        approved_outbound,
        max_concurrency,
    ): FunctionRow,
) -> Result<FunctionInfo, StoreError> {
    let outbound = EgressList::parse_list(&outbound).map_err(corrupt)?;
    let approved_outbound = EgressList::parse_list(&approved_outbound).map_err(corrupt)?;
    let routes: Vec<String> = serde_json::from_str(&routes).map_err(corrupt)?;
    let pairs: Vec<(String, String)> = serde_json::from_str(&bindings).map_err(corrupt)?;
    let bindings = pairs
        .into_iter()
        .map(|(binding, ops)| {
            Ok(RequestedBinding {
                binding,
                operations: OperationSet::parse_list(&ops).map_err(corrupt)?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(FunctionInfo {
        name,
        routes,
        memory_mib,
        timeout_ms,
        max_concurrency,
        bindings,
        component_sha256,
        component_size,
        deployed_at,
        outbound,
        approved_outbound,
    })
}

impl Store for SqliteStore {
    fn put_secret(&self, name: &str, new: &NewVersion<'_>) -> Result<Stored, StoreError> {
        self.write(|tx| self.add_version(tx, name, new, false))
    }

    fn rotate_secret(&self, name: &str, new: &NewVersion<'_>) -> Result<Stored, StoreError> {
        self.write(|tx| self.add_version(tx, name, new, true))
    }

    fn list_secrets(&self) -> Result<Vec<SecretInfo>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx.prepare(&format!("{SECRET_COLUMNS} ORDER BY s.name"))?;
            let rows = stmt.query_map([], |r| SecretRow::try_from(r))?;
            rows.map(|row| to_secret(row?)).collect()
        })
    }

    fn secret(&self, name: &str) -> Result<SecretInfo, StoreError> {
        self.read(|tx| Self::secret_in(tx, name))
    }

    fn versions(&self, name: &str) -> Result<Vec<VersionInfo>, StoreError> {
        let at = now();
        self.read(|tx| {
            let current = Self::current_version(tx, name)?
                .ok_or_else(|| StoreError::UnknownSecret(name.to_owned()))?;
            let mut stmt = tx.prepare(
                "SELECT version, created_at, kind, grace_until FROM secret_versions
                 WHERE name = ?1 ORDER BY version DESC",
            )?;
            let rows = stmt.query_map([name], |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<Timestamp>>(3)?,
                ))
            })?;
            rows.map(|row| {
                let (version, created_at, kind, grace_until) = row?;
                let state = match grace_until {
                    _ if version == current => VersionState::Current,
                    Some(until) if until > at => VersionState::Grace { until },
                    _ => VersionState::Retired,
                };
                Ok(VersionInfo {
                    version,
                    created_at,
                    kind: kind.parse().map_err(corrupt)?,
                    state,
                })
            })
            .collect()
        })
    }

    fn rollback(&self, name: &str, to: u32, grace: Option<i64>) -> Result<RolledBack, StoreError> {
        self.write(|tx| {
            let from = Self::current_version(tx, name)?
                .ok_or_else(|| StoreError::UnknownSecret(name.to_owned()))?;
            if from == to {
                return Err(StoreError::AlreadyCurrent {
                    name: name.to_owned(),
                    version: to,
                });
            }
            let exists = tx
                .query_row(
                    "SELECT 1 FROM secret_versions WHERE name = ?1 AND version = ?2",
                    params![name, to],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if !exists {
                return Err(StoreError::UnknownVersion {
                    name: name.to_owned(),
                    version: to,
                });
            }
            let at = now();
            Self::make_current(tx, name, from, to, grace.map(|g| at.saturating_add(g)), at)?;
            Ok(RolledBack { from, to })
        })
    }

    fn remove_secret(&self, name: &str, force: bool) -> Result<RemovedSecret, StoreError> {
        self.write(|tx| {
            let versions: u32 = tx.query_row(
                "SELECT COUNT(*) FROM secret_versions WHERE name = ?1",
                [name],
                |r| r.get(0),
            )?;
            let grants = Self::grants_naming(tx, name)?;
            if Self::current_version(tx, name)?.is_none() {
                return Err(StoreError::UnknownSecret(name.to_owned()));
            }
            if !grants.is_empty() && !force {
                return Err(StoreError::HasDependents {
                    secret: name.to_owned(),
                    grants,
                });
            }
            tx.execute("DELETE FROM secrets WHERE name = ?1", [name])?;
            // A later secret of the same name starts with no history.
            tx.execute("DELETE FROM secret_uses WHERE secret = ?1", [name])?;
            Ok(RemovedSecret {
                versions,
                dangling_grants: grants,
            })
        })
    }

    fn usable_versions(&self, name: &str) -> Result<Option<UsableVersions>, StoreError> {
        let at = now();
        let rows = self.read(|tx| {
            let Some(current) = Self::current_version(tx, name)? else {
                return Ok(None);
            };
            let mut stmt = tx.prepare(
                "SELECT version, wrapped_key, ciphertext, grace_until FROM secret_versions
                 WHERE name = ?1 AND (version = ?2 OR grace_until > ?3) ORDER BY version = ?2 DESC, version DESC",
            )?;
            let rows = stmt
                .query_map(params![name, current, at], |r| {
                    Ok((
                        r.get::<_, u32>(0)?,
                        SealedVersion { wrapped_key: sealed_bytes(r, 1)?, ciphertext: sealed_bytes(r, 2)? },
                        r.get::<_, Option<Timestamp>>(3)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some((current, rows)))
        })?;
        let Some((current, rows)) = rows else {
            return Ok(None);
        };
        let master = self.master();
        let open = |version: u32, sealed: &SealedVersion| {
            crypto::open_version(&master, name, version, sealed)
                .map(|value| UsableVersion { version, value })
                .map_err(|_| StoreError::Integrity {
                    name: name.to_owned(),
                    version,
                })
        };
        let mut rows = rows.into_iter();
        let current = match rows.next() {
            Some((version, sealed, _)) if version == current => open(version, &sealed)?,
            _ => {
                return Err(corrupt(format!(
                    "secret `{name}` has no row for its current version {current}"
                )));
            }
        };
        let mut grace = Vec::new();
        for (version, sealed, until) in rows {
            match open(version, &sealed) {
                Ok(usable) => grace.push((usable, until.unwrap_or(0))),
                // A damaged old version must not take the current one down with it.
                Err(e) => tracing::error!(secret = name, version, "grace version is unusable: {e}"),
            }
        }
        Ok(Some(UsableVersions { current, grace }))
    }

    fn dependents(&self, name: &str) -> Result<Vec<Dependent>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx.prepare(
                "SELECT g.function, g.binding, g.secret, g.allow, g.egress, g.digest, g.follow_redeploys,
                        u.version, u.used_at, u.grace_version, u.grace_used_at
                 FROM grants g LEFT JOIN secret_uses u
                   ON u.function = g.function AND u.binding = g.binding AND u.secret = g.secret
                 WHERE g.secret = ?1 ORDER BY g.function, g.binding",
            )?;
            let rows = stmt.query_map([name], |r| {
                let last = |v: usize, t: usize| -> rusqlite::Result<Option<LastUse>> {
                    Ok(
                        match (
                            r.get::<_, Option<u32>>(v)?,
                            r.get::<_, Option<Timestamp>>(t)?,
                        ) {
                            (Some(version), Some(at)) => Some(LastUse { at, version }),
                            _ => None,
                        },
                    )
                };
                Ok((GrantRow::try_from(r)?, last(7, 8)?, last(9, 10)?))
            })?;
            let dependents: Vec<Dependent> = rows
                .map(|row| {
                    let (grant, last_use, last_grace_use) = row?;
                    Ok(Dependent {
                        grant: Self::to_grant(grant)?,
                        last_use,
                        last_grace_use,
                    })
                })
                .collect::<Result<_, StoreError>>()?;
            if dependents.is_empty() && Self::current_version(tx, name)?.is_none() {
                return Err(StoreError::UnknownSecret(name.to_owned()));
            }
            Ok(dependents)
        })
    }

    fn record_uses(&self, uses: &[UseRecord]) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        self.transact(false, |tx| {
            let mut stmt = tx.prepare(
                "INSERT INTO secret_uses (function, binding, secret, version, used_at, grace_version, grace_used_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (function, binding) DO UPDATE SET
                   version = CASE WHEN secret_uses.secret = excluded.secret
                             THEN COALESCE(excluded.version, secret_uses.version) ELSE excluded.version END,
                   used_at = CASE WHEN secret_uses.secret = excluded.secret
                             THEN COALESCE(excluded.used_at, secret_uses.used_at) ELSE excluded.used_at END,
                   grace_version = CASE WHEN secret_uses.secret = excluded.secret
                             THEN COALESCE(excluded.grace_version, secret_uses.grace_version) ELSE excluded.grace_version END,
                   grace_used_at = CASE WHEN secret_uses.secret = excluded.secret
                             THEN COALESCE(excluded.grace_used_at, secret_uses.grace_used_at) ELSE excluded.grace_used_at END,
                   secret = excluded.secret",
            )?;
            for u in uses {
                stmt.execute(params![
                    u.function,
                    u.binding,
                    u.secret,
                    u.last_use.map(|l| l.version),
                    u.last_use.map(|l| l.at),
                    u.last_grace_use.map(|l| l.version),
                    u.last_grace_use.map(|l| l.at),
                ])?;
            }
            Ok(())
        })
    }

    fn deploy(&self, deployment: &Deployment, may_nest: &NestPolicy<'_>) -> Result<(), StoreError> {
        let info = &deployment.info;
        self.write(|tx| {
            let taken: Vec<(String, String)> = {
                let mut stmt = tx.prepare("SELECT route, function FROM routes WHERE function <> ?1 ORDER BY function, route")?;
                stmt.query_map([&info.name], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?
            };
            let held: Vec<String> = {
                let mut stmt = tx.prepare("SELECT route FROM routes WHERE function = ?1")?;
                stmt.query_map([&info.name], |r| r.get(0))?
                    .collect::<Result<_, _>>()?
            };
            super::check_routes(&info.name, &info.routes, &held, &taken, may_nest)?;
            let routes = serde_json::to_string(&info.routes).map_err(corrupt)?;
            let bindings: Vec<(String, String)> = info
                .bindings
                .iter()
                .map(|b| (b.binding.clone(), b.operations.iter().map(|o| o.as_str()).collect::<Vec<_>>().join(",")))
                .collect();
            let bindings = serde_json::to_string(&bindings).map_err(corrupt)?;
            tx.execute(
                "INSERT INTO functions (name, routes, memory_mib, timeout_ms, bindings, component_sha256, component, deployed_at, outbound, max_concurrency)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (name) DO UPDATE SET routes = excluded.routes, memory_mib = excluded.memory_mib,
                   timeout_ms = excluded.timeout_ms, bindings = excluded.bindings,
                   component_sha256 = excluded.component_sha256, component = excluded.component,
                   deployed_at = excluded.deployed_at, outbound = excluded.outbound,
                   max_concurrency = excluded.max_concurrency",
                params![
                    info.name,
                    routes,
                    info.memory_mib,
                    info.timeout_ms,
                    bindings,
                    info.component_sha256,
                    deployment.component,
                    info.deployed_at,
                    info.outbound.to_string_stored(),
                    info.max_concurrency
                ],
            )?;
            tx.execute("DELETE FROM routes WHERE function = ?1", [&info.name])?;
            for route in &info.routes {
                tx.execute("INSERT INTO routes (route, function) VALUES (?1, ?2)", params![route, info.name])?;
            }
            Ok(())
        })
    }

    fn undeploy(&self, name: &str) -> Result<usize, StoreError> {
        self.write(|tx| {
            let grants = tx.execute("DELETE FROM grants WHERE function = ?1", [name])?;
            tx.execute("DELETE FROM secret_uses WHERE function = ?1", [name])?;
            if tx.execute("DELETE FROM functions WHERE name = ?1", [name])? == 0 {
                return Err(StoreError::UnknownFunction(name.to_owned()));
            }
            Ok(grants)
        })
    }

    fn functions(&self) -> Result<Vec<FunctionInfo>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx.prepare(&format!("{FUNCTION_COLUMNS} ORDER BY name"))?;
            let rows = stmt.query_map([], |r| FunctionRow::try_from(r))?;
            rows.map(|row| to_function(row?)).collect()
        })
    }

    fn approve(&self, function: &str, digest: Option<&str>) -> Result<FunctionInfo, StoreError> {
        self.write(|tx| {
            let info = tx
                .query_row(
                    &format!("{FUNCTION_COLUMNS} WHERE name = ?1"),
                    [function],
                    |r| FunctionRow::try_from(r),
                )
                .optional()?
                .ok_or_else(|| StoreError::UnknownFunction(function.to_owned()))
                .and_then(to_function)?;
            if let Some(expected) = digest
                && (expected.len() < super::MIN_DIGEST_HEX
                    || !info
                        .component_sha256
                        .starts_with(&expected.to_ascii_lowercase()))
            {
                return Err(StoreError::DigestMismatch {
                    function: function.to_owned(),
                    expected: expected.to_owned(),
                    actual: info.component_sha256.clone(),
                });
            }
            tx.execute(
                "UPDATE functions SET approved_outbound = outbound WHERE name = ?1",
                [function],
            )?;
            tx.execute(
                "UPDATE grants SET digest = ?2 WHERE function = ?1",
                params![function, info.component_sha256],
            )?;
            Ok(FunctionInfo {
                approved_outbound: info.outbound.clone(),
                ..info
            })
        })
    }

    fn component(&self, name: &str) -> Result<(Vec<u8>, String), StoreError> {
        let (component, sha256): (Vec<u8>, String) = self.read(|tx| {
            tx.query_row(
                "SELECT component, component_sha256 FROM functions WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .ok_or_else(|| StoreError::UnknownFunction(name.to_owned()))
        })?;
        // The digest is in the row's MAC; the bytes are checked against it.
        use sha2::Digest as _;
        if hex::encode(sha2::Sha256::digest(&component)) != sha256 {
            return Err(StoreError::Tampered {
                forged: vec![format!("functions/{name} (component bytes)")],
                state: None,
            });
        }
        Ok((component, sha256))
    }

    fn verify_integrity(&self) -> Result<(), StoreError> {
        let findings = self.integrity()?;
        if findings.is_clean() {
            Ok(())
        } else {
            Err(findings.error())
        }
    }

    fn grant(&self, grant: &Grant) -> Result<(), StoreError> {
        self.write(|tx| {
            if !Self::function_exists(tx, &grant.function)? {
                return Err(StoreError::UnknownFunction(grant.function.clone()));
            }
            let secret_exists = tx
                .query_row("SELECT 1 FROM secrets WHERE name = ?1", [&grant.secret], |_| Ok(()))
                .optional()?
                .is_some();
            if !secret_exists {
                return Err(StoreError::UnknownSecret(grant.secret.clone()));
            }
            // Given for the component deployed now, which must be the one
            // the operator was shown.
            let deployed: String = tx.query_row(
                "SELECT component_sha256 FROM functions WHERE name = ?1",
                [&grant.function],
                |r| r.get(0),
            )?;
            if grant.digest != deployed {
                return Err(StoreError::DigestMismatch {
                    function: grant.function.clone(),
                    expected: grant.digest.clone(),
                    actual: deployed,
                });
            }
            tx.execute(
                "INSERT INTO grants (function, binding, secret, allow, egress, digest, follow_redeploys)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (function, binding) DO UPDATE
                 SET secret = excluded.secret, allow = excluded.allow, egress = excluded.egress,
                     digest = excluded.digest, follow_redeploys = excluded.follow_redeploys",
                params![
                    grant.function,
                    grant.binding,
                    grant.secret,
                    grant.allow.to_string(),
                    grant.egress.to_string_stored(),
                    grant.digest,
                    grant.follow_redeploys
                ],
            )?;
            Ok(())
        })
    }

    fn revoke(&self, function: &str, binding: &str) -> Result<Grant, StoreError> {
        self.write(|tx| {
            let row = tx
                .query_row(
                    &format!("{GRANT_COLUMNS} WHERE function = ?1 AND binding = ?2"),
                    [function, binding],
                    |r| GrantRow::try_from(r),
                )
                .optional()?;
            let Some(row) = row else {
                return Err(StoreError::UnknownGrant {
                    function: function.to_owned(),
                    binding: binding.to_owned(),
                });
            };
            tx.execute(
                "DELETE FROM grants WHERE function = ?1 AND binding = ?2",
                [function, binding],
            )?;
            Self::to_grant(row)
        })
    }

    fn grants(&self, function: Option<&str>) -> Result<Vec<Grant>, StoreError> {
        self.read(|tx| {
            if let Some(name) = function
                && !Self::function_exists(tx, name)?
            {
                return Err(StoreError::UnknownFunction(name.to_owned()));
            }
            let mut stmt = tx.prepare(&format!(
                "{GRANT_COLUMNS} WHERE ?1 IS NULL OR function = ?1 ORDER BY function, binding"
            ))?;
            let rows = stmt.query_map([function], |r| GrantRow::try_from(r))?;
            rows.map(|row| Self::to_grant(row?)).collect()
        })
    }

    fn check_master_key(&self) -> Result<(), StoreError> {
        let sealed = self.sealed_key_check()?;
        if opens_key_check(&self.master(), &sealed) {
            Ok(())
        } else {
            Err(StoreError::WrongMasterKey)
        }
    }

    fn revision(&self) -> Result<u64, StoreError> {
        self.read(|tx| {
            Ok(
                tx.query_row("SELECT value FROM meta WHERE key = 'revision'", [], |r| {
                    r.get(0)
                })?,
            )
        })
    }
}

type SecretRow = (
    String,
    u32,
    u32,
    Timestamp,
    Timestamp,
    Option<String>,
    Option<Timestamp>,
    Option<i64>,
);

fn to_secret(
    (name, current_version, versions, created_at, updated_at, kind, value_created_at, max_age): SecretRow,
) -> Result<SecretInfo, StoreError> {
    let kind = kind.ok_or_else(|| {
        corrupt(format!(
            "secret `{name}` has no row for its current version"
        ))
    })?;
    Ok(SecretInfo {
        kind: kind.parse().map_err(corrupt)?,
        value_created_at: value_created_at.unwrap_or(updated_at),
        name,
        current_version,
        versions,
        created_at,
        updated_at,
        max_age,
    })
}

/// A sealed column's bytes, whatever SQL type a tampered row gave it: a
/// wrong type then fails that version's integrity check, like any other
/// change, instead of failing every read that meets the row.
fn sealed_bytes(r: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Vec<u8>> {
    Ok(match r.get_ref(index)? {
        rusqlite::types::ValueRef::Blob(bytes) | rusqlite::types::ValueRef::Text(bytes) => {
            bytes.to_vec()
        }
        _ => Vec::new(),
    })
}

/// Whether `key` opens the store's sealed key check.
fn opens_key_check(key: &AesKey, sealed: &[u8]) -> bool {
    key.open(sealed, KEY_CHECK_AAD)
        .is_ok_and(|plain| plain.as_slice() == KEY_CHECK_PLAINTEXT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::KeyKind;
    use crate::crypto::secret_value::SecretValue;
    use crate::operations::Operation;

    fn open(dir: &Path) -> SqliteStore {
        SqliteStore::open(dir, AesKey::from_slice(&[9u8; 32]).unwrap()).unwrap()
    }

    fn version(value: &SecretValue, kind: KeyKind) -> NewVersion<'_> {
        NewVersion {
            value,
            kind,
            grace: None,
            max_age: MaxAgeChange::Keep,
        }
    }

    /// Changes the database behind the store's back, as a damaged disk, an
    /// older keyhole or an attacker would.
    fn tamper(store: &SqliteStore, sql: &str) {
        store.conn.lock().unwrap().execute_batch(sql).unwrap();
    }

    /// Changes the database and seals the change as Keyhole's own: time
    /// passing, for tests that cannot wait, or a stand-in for a failure.
    fn sealed_change(store: &SqliteStore, sql: &str) {
        let mut conn = store.conn.lock().unwrap();
        let tx = conn.transaction().unwrap();
        tx.execute_batch(sql).unwrap();
        sealing::seal(&tx, &store.row_key().unwrap()).unwrap();
        tx.commit().unwrap();
    }

    /// Takes a store back to schema version 5's shape, sealed, as a node of
    /// the previous release left it.
    fn downgrade_to_v5(store: &SqliteStore) {
        sealed_change(
            store,
            "ALTER TABLE functions DROP COLUMN max_concurrency;
             DROP INDEX audit_secret;
             UPDATE meta SET value = 5 WHERE key = 'schema';",
        );
    }

    #[test]
    fn a_sealed_version_5_store_is_upgraded_and_sealed_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        put(&store, "k", b"v");
        store.deploy(&deployment("f", "/f"), &|_, _| true).unwrap();
        downgrade_to_v5(&store);
        assert!(
            store.integrity().unwrap().is_clean(),
            "the v5 copy verifies"
        );
        drop(store);

        let store = open(dir.path());
        let schema: i64 = store
            .conn
            .lock()
            .unwrap()
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(schema, SCHEMA_VERSION);
        assert!(store.integrity().unwrap().is_clean());
        // A limit set since is authenticated like every other column.
        let mut limited = deployment("f", "/f");
        limited.info.max_concurrency = Some(3);
        store.deploy(&limited, &|_, _| true).unwrap();
        assert_eq!(store.functions().unwrap()[0].max_concurrency, Some(3));
        tamper(&store, "UPDATE functions SET max_concurrency = 300");
        assert_eq!(store.integrity().unwrap().forged, ["functions/f"]);
        tamper(&store, "UPDATE functions SET max_concurrency = NULL");
        assert_eq!(store.integrity().unwrap().forged, ["functions/f"]);
    }

    #[test]
    fn a_version_5_store_that_does_not_verify_is_not_sealed_by_the_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.deploy(&deployment("f", "/f"), &|_, _| true).unwrap();
        downgrade_to_v5(&store);
        tamper(&store, "UPDATE functions SET timeout_ms = 300000");
        drop(store);
        let store = open(dir.path());
        let findings = store.integrity().unwrap();
        assert_eq!(
            findings.forged,
            ["functions/f"],
            "the forgery is still named"
        );
    }

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

    fn put(store: &SqliteStore, name: &str, value: &[u8]) -> u32 {
        store
            .put_secret(
                name,
                &version(&SecretValue::new(value.to_vec()), KeyKind::Opaque),
            )
            .unwrap()
            .version
    }

    fn rotate(store: &SqliteStore, name: &str, value: &[u8], grace: Option<i64>) -> u32 {
        let value = SecretValue::new(value.to_vec());
        let new = NewVersion {
            grace,
            ..version(&value, KeyKind::Opaque)
        };
        store.rotate_secret(name, &new).unwrap().version
    }

    fn usable(store: &SqliteStore, name: &str) -> (u32, Vec<u32>) {
        let usable = store.usable_versions(name).unwrap().unwrap();
        (
            usable.current.version,
            usable.grace.iter().map(|(v, _)| v.version).collect(),
        )
    }

    fn deployment(name: &str, route: &str) -> Deployment {
        Deployment {
            info: FunctionInfo {
                name: name.into(),
                routes: vec![route.into()],
                memory_mib: 32,
                timeout_ms: 1000,
                max_concurrency: None,
                bindings: vec![RequestedBinding {
                    binding: "KEY".into(),
                    operations: OperationSet::EMPTY.with(Operation::Hmac),
                }],
                component_sha256: "00".into(),
                component_size: 3,
                deployed_at: 1,
                outbound: EgressList::default(),
                approved_outbound: EgressList::default(),
            },
            component: vec![1, 2, 3],
        }
    }

    #[test]
    fn versions_and_values_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        assert_eq!(
            store
                .put_secret(
                    "api",
                    &version(&SecretValue::new(b"one".to_vec()), KeyKind::Opaque)
                )
                .unwrap(),
            Stored {
                version: 1,
                replaced: None
            }
        );
        assert_eq!(
            store
                .put_secret(
                    "api",
                    &version(&SecretValue::new(b"two".to_vec()), KeyKind::Opaque)
                )
                .unwrap(),
            Stored {
                version: 2,
                replaced: Some(1)
            }
        );
        let usable = store.usable_versions("api").unwrap().unwrap();
        assert_eq!(
            (usable.current.version, usable.current.value.expose()),
            (2, &b"two"[..])
        );
        assert!(
            usable.grace.is_empty(),
            "put retires the version it replaces"
        );
        let list = store.list_secrets().unwrap();
        assert_eq!((list[0].current_version, list[0].versions), (2, 2));
        assert!(store.usable_versions("nope").unwrap().is_none());
    }

    #[test]
    fn file_holds_no_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store
            .put_secret(
                "api",
                &version(
                    &SecretValue::new(b"PLAINTEXT-MARKER-123".to_vec()),
                    KeyKind::Opaque,
                ),
            )
            .unwrap();
        drop(store);
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(!bytes.windows(20).any(|w| w == b"PLAINTEXT-MARKER-123"));
        }
    }

    #[test]
    fn wrong_master_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()));
        let err =
            SqliteStore::open(dir.path(), AesKey::from_slice(&[8u8; 32]).unwrap()).unwrap_err();
        assert!(matches!(err, StoreError::WrongMasterKey), "{err}");
    }

    #[test]
    fn grants_need_function_and_secret_and_go_with_undeploy() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let grant = Grant {
            function: "f".into(),
            binding: "KEY".into(),
            secret: "s".into(),
            allow: OperationSet::EMPTY
                .with(Operation::Hmac)
                .with(Operation::Inject),
            egress: EgressList::parse_list("api.example.com,*.stripe.com:8443").unwrap(),
            digest: "00".into(),
            follow_redeploys: false,
        };
        assert!(matches!(
            store.grant(&grant),
            Err(StoreError::UnknownFunction(_))
        ));
        store.deploy(&deployment("f", "/f"), &|_, _| true).unwrap();
        let before = store.revision().unwrap();
        assert!(matches!(
            store.grant(&grant),
            Err(StoreError::UnknownSecret(_))
        ));
        assert_eq!(
            store.revision().unwrap(),
            before,
            "a refused write changes nothing"
        );
        store
            .put_secret(
                "s",
                &version(&SecretValue::new(b"x".to_vec()), KeyKind::Opaque),
            )
            .unwrap();
        store.grant(&grant).unwrap();
        assert_eq!(store.grants(Some("f")).unwrap(), vec![grant.clone()]);
        assert_eq!(store.undeploy("f").unwrap(), 1);
        assert!(store.grants(None).unwrap().is_empty());
    }

    #[test]
    fn a_version_1_store_is_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path());
            store
                .put_secret(
                    "old",
                    &version(&SecretValue::new(b"kept".to_vec()), KeyKind::Opaque),
                )
                .unwrap();
            // Turn it back into what version 1 wrote.
            tamper(
                &store,
                "ALTER TABLE secrets DROP COLUMN mac; ALTER TABLE secret_versions DROP COLUMN mac;
                 ALTER TABLE functions DROP COLUMN mac; ALTER TABLE routes DROP COLUMN mac;
                 ALTER TABLE grants DROP COLUMN mac; ALTER TABLE tokens DROP COLUMN mac;
                 DELETE FROM meta WHERE key IN ('generation', 'state');
                 ALTER TABLE functions DROP COLUMN max_concurrency;
                 DROP INDEX audit_secret;
                 ALTER TABLE tokens DROP COLUMN routes;
                 ALTER TABLE functions DROP COLUMN outbound;
                 ALTER TABLE functions DROP COLUMN approved_outbound;
                 ALTER TABLE grants DROP COLUMN digest;
                 ALTER TABLE grants DROP COLUMN follow_redeploys;
                 ALTER TABLE secret_versions DROP COLUMN kind;
                 ALTER TABLE grants DROP COLUMN egress;
                 ALTER TABLE secrets DROP COLUMN max_age;
                 ALTER TABLE secret_versions DROP COLUMN grace_until;
                 DROP TABLE secret_uses;
                 UPDATE meta SET value = 1 WHERE key = 'schema';",
            );
        }
        // Stores of that version had no anchor either.
        std::fs::remove_file(dir.path().join("keyhole.anchor")).unwrap();
        let store = open(dir.path());
        let usable = store.usable_versions("old").unwrap().unwrap();
        assert_eq!(
            (usable.current.version, usable.current.value.expose()),
            (1, &b"kept"[..])
        );
        assert_eq!(store.list_secrets().unwrap()[0].kind, KeyKind::Opaque);
        store
            .put_secret(
                "aes",
                &version(&SecretValue::new(vec![1; 32]), KeyKind::Aes256),
            )
            .unwrap();
        assert_eq!(store.list_secrets().unwrap()[0].kind, KeyKind::Aes256);
        let revision = store.revision().unwrap();
        drop(store);
        // Reopening a migrated store is a no-op, and not a change running
        // nodes would reload for.
        let store = open(dir.path());
        assert_eq!(store.list_secrets().unwrap().len(), 2);
        assert_eq!(store.revision().unwrap(), revision);
    }

    #[test]
    fn a_version_2_store_is_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path());
            put(&store, "old", b"kept-value");
            tamper(
                &store,
                "ALTER TABLE secrets DROP COLUMN mac; ALTER TABLE secret_versions DROP COLUMN mac;
                 ALTER TABLE functions DROP COLUMN mac; ALTER TABLE routes DROP COLUMN mac;
                 ALTER TABLE grants DROP COLUMN mac; ALTER TABLE tokens DROP COLUMN mac;
                 DELETE FROM meta WHERE key IN ('generation', 'state');
                 ALTER TABLE functions DROP COLUMN max_concurrency;
                 DROP INDEX audit_secret;
                 ALTER TABLE tokens DROP COLUMN routes;
                 ALTER TABLE functions DROP COLUMN outbound;
                 ALTER TABLE functions DROP COLUMN approved_outbound;
                 ALTER TABLE grants DROP COLUMN digest;
                 ALTER TABLE grants DROP COLUMN follow_redeploys;
                 ALTER TABLE secrets DROP COLUMN max_age;
                 ALTER TABLE secret_versions DROP COLUMN grace_until;
                 DROP TABLE secret_uses;
                 UPDATE meta SET value = 2 WHERE key = 'schema';",
            );
        }
        // Stores of that version had no anchor either.
        std::fs::remove_file(dir.path().join("keyhole.anchor")).unwrap();
        let store = open(dir.path());
        assert_eq!(usable(&store, "old"), (1, vec![]));
        assert_eq!(rotate(&store, "old", b"new-value", Some(60)), 2);
        assert_eq!(usable(&store, "old"), (2, vec![1]));
        assert_eq!(store.list_secrets().unwrap()[0].max_age, None);
    }

    #[test]
    fn a_version_4_store_keeps_serving_its_grants_after_migration() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path());
            put(&store, "s", b"granted-value");
            store.deploy(&deployment("f", "/f"), &|_, _| true).unwrap();
            let grant = Grant {
                function: "f".into(),
                binding: "KEY".into(),
                secret: "s".into(),
                allow: OperationSet::EMPTY
                    .with(Operation::Hmac)
                    .with(Operation::Reveal),
                egress: EgressList::default(),
                digest: "00".into(),
                follow_redeploys: false,
            };
            store.grant(&grant).unwrap();
            tamper(
                &store,
                "ALTER TABLE secrets DROP COLUMN mac; ALTER TABLE secret_versions DROP COLUMN mac;
                 ALTER TABLE functions DROP COLUMN mac; ALTER TABLE routes DROP COLUMN mac;
                 ALTER TABLE grants DROP COLUMN mac; ALTER TABLE tokens DROP COLUMN mac;
                 DELETE FROM meta WHERE key IN ('generation', 'state');
                 ALTER TABLE functions DROP COLUMN max_concurrency;
                 DROP INDEX audit_secret;
                 ALTER TABLE tokens DROP COLUMN routes;
                 ALTER TABLE functions DROP COLUMN outbound;
                 ALTER TABLE functions DROP COLUMN approved_outbound;
                 ALTER TABLE grants DROP COLUMN digest;
                 ALTER TABLE grants DROP COLUMN follow_redeploys;
                 UPDATE meta SET value = 4 WHERE key = 'schema';",
            );
        }
        // Stores of that version had no anchor either.
        std::fs::remove_file(dir.path().join("keyhole.anchor")).unwrap();
        let store = open(dir.path());
        let grants = store.grants(Some("f")).unwrap();
        assert_eq!(grants[0].digest, "00", "bound to what is deployed");
        assert_eq!(grants[0].effective("00"), grants[0].allow);
        assert_eq!(grants[0].effective("01"), OperationSet::EMPTY);
        // A grant for code other than what is deployed is refused.
        let stale = Grant {
            digest: "ff".into(),
            ..grants[0].clone()
        };
        assert!(matches!(
            store.grant(&stale),
            Err(StoreError::DigestMismatch { .. })
        ));
        let approved = store.approve("f", None).unwrap();
        assert_eq!(approved.component_sha256, "00");
        assert!(matches!(
            store.approve("f", Some("0000")),
            Err(StoreError::DigestMismatch { .. })
        ));
    }

    #[test]
    fn rotation_keeps_the_previous_version_in_grace_until_the_window_ends() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        put(&store, "hook", b"version-one");
        assert_eq!(rotate(&store, "hook", b"version-two", Some(3600)), 2);
        assert_eq!(usable(&store, "hook"), (2, vec![1]));
        // A second rotation inside the window: both old versions stay.
        assert_eq!(rotate(&store, "hook", b"version-three", Some(3600)), 3);
        assert_eq!(usable(&store, "hook"), (3, vec![2, 1]));
        let states: Vec<VersionState> = store
            .versions("hook")
            .unwrap()
            .into_iter()
            .map(|v| v.state)
            .collect();
        assert_eq!(states[0], VersionState::Current);
        assert!(matches!(states[1], VersionState::Grace { .. }));
        // Ending a window: the version retires and is no longer usable.
        sealed_change(
            &store,
            &format!(
                "UPDATE secret_versions SET grace_until = {} WHERE version = 1",
                now() - 1
            ),
        );
        assert_eq!(usable(&store, "hook"), (3, vec![2]));
        assert_eq!(
            store.versions("hook").unwrap()[2].state,
            VersionState::Retired
        );
        // Without grace the replaced version retires at once.
        assert_eq!(rotate(&store, "hook", b"version-four", None), 4);
        assert_eq!(usable(&store, "hook"), (4, vec![2]));
        assert!(matches!(
            store.rotate_secret(
                "nope",
                &version(&SecretValue::new(b"x".to_vec()), KeyKind::Opaque)
            ),
            Err(StoreError::UnknownSecret(_))
        ));
    }

    #[test]
    fn rollback_makes_an_earlier_version_current_and_refuses_nonsense() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        put(&store, "k", b"first-value");
        rotate(&store, "k", b"second-value", None);
        let done = store.rollback("k", 1, Some(600)).unwrap();
        assert_eq!(done, RolledBack { from: 2, to: 1 });
        let usable = store.usable_versions("k").unwrap().unwrap();
        assert_eq!(usable.current.value.expose(), b"first-value");
        assert_eq!(usable.grace[0].0.version, 2);
        assert!(matches!(
            store.rollback("k", 1, None),
            Err(StoreError::AlreadyCurrent { .. })
        ));
        assert!(matches!(
            store.rollback("k", 9, None),
            Err(StoreError::UnknownVersion { .. })
        ));
        // A new version after a rollback gets the next unused number and
        // replaces the version that is current, not the latest.
        let value = SecretValue::new(b"third-value".to_vec());
        assert_eq!(
            store
                .rotate_secret("k", &version(&value, KeyKind::Opaque))
                .unwrap(),
            Stored {
                version: 3,
                replaced: Some(1)
            }
        );
    }

    #[test]
    fn max_age_is_kept_across_versions_and_marks_overdue_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let value = SecretValue::new(b"aged-value".to_vec());
        let new = NewVersion {
            max_age: MaxAgeChange::Set(90 * 86_400),
            ..version(&value, KeyKind::Opaque)
        };
        store.put_secret("aged", &new).unwrap();
        rotate(&store, "aged", b"aged-value-2", None);
        let info = store.secret("aged").unwrap();
        assert_eq!(info.max_age, Some(90 * 86_400));
        assert!(!info.overdue(now()));
        assert!(info.overdue(now() + 91 * 86_400));
        let clear = NewVersion {
            max_age: MaxAgeChange::Clear,
            ..version(&value, KeyKind::Opaque)
        };
        store.rotate_secret("aged", &clear).unwrap();
        assert_eq!(store.secret("aged").unwrap().max_age, None);
    }

    #[test]
    fn dependents_carry_last_uses_and_rm_refuses_them_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.deploy(&deployment("f", "/f"), &|_, _| true).unwrap();
        put(&store, "s", b"granted-value");
        let grant = Grant {
            function: "f".into(),
            binding: "KEY".into(),
            secret: "s".into(),
            allow: OperationSet::EMPTY.with(Operation::Hmac),
            egress: EgressList::default(),
            digest: "00".into(),
            follow_redeploys: true,
        };
        store.grant(&grant).unwrap();
        let dependents = store.dependents("s").unwrap();
        assert_eq!(dependents.len(), 1);
        assert_eq!(dependents[0].last_use, None);
        let before = store.revision().unwrap();
        let use_at = |version| {
            Some(LastUse {
                at: 1_900_000_000,
                version,
            })
        };
        store
            .record_uses(&[UseRecord {
                function: "f".into(),
                binding: "KEY".into(),
                secret: "s".into(),
                last_use: use_at(1),
                last_grace_use: None,
            }])
            .unwrap();
        assert_eq!(
            store.revision().unwrap(),
            before,
            "uses do not reload nodes"
        );
        // A later report without an open keeps the earlier one.
        store
            .record_uses(&[UseRecord {
                function: "f".into(),
                binding: "KEY".into(),
                secret: "s".into(),
                last_use: None,
                last_grace_use: use_at(1),
            }])
            .unwrap();
        let d = &store.dependents("s").unwrap()[0];
        assert_eq!((d.last_use, d.last_grace_use), (use_at(1), use_at(1)));
        let err = store.remove_secret("s", false).unwrap_err();
        assert!(err.to_string().contains("`f` (binding `KEY`)"), "{err}");
        assert!(
            store.usable_versions("s").unwrap().is_some(),
            "refusal removed nothing"
        );
        let removed = store.remove_secret("s", true).unwrap();
        assert_eq!(removed.dangling_grants, vec![grant]);
        assert!(store.usable_versions("s").unwrap().is_none());
        // A new secret of the same name does not inherit the old one's uses.
        put(&store, "s", b"another-value");
        assert_eq!(store.dependents("s").unwrap()[0].last_use, None);
    }

    #[test]
    fn master_key_rotation_rewraps_every_version_and_retires_the_old_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        put(&store, "a", b"value-a-1");
        rotate(&store, "a", b"value-a-2", Some(600));
        put(&store, "b", b"value-b-1");
        let new = AesKey::generate();
        let new_copy = AesKey::from_slice(new.expose()).unwrap();
        assert_eq!(store.rotate_master_key(new).unwrap(), 3);
        // This process switched keys; writes after it use the new one.
        put(&store, "c", b"value-c-1");
        assert_eq!(
            store.check_all().unwrap().failed,
            Vec::<(String, u32)>::new()
        );
        drop(store);
        let err =
            SqliteStore::open(dir.path(), AesKey::from_slice(&[9u8; 32]).unwrap()).unwrap_err();
        assert!(matches!(err, StoreError::WrongMasterKey), "{err}");
        let store = SqliteStore::open(dir.path(), new_copy).unwrap();
        let report = store.check_all().unwrap();
        assert_eq!((report.checked, report.failed.len()), (4, 0));
        assert_eq!(usable(&store, "a"), (2, vec![1]));
    }

    fn admin_event(action: &str) -> crate::audit::AdminEvent {
        crate::audit::AdminEvent {
            token: "t".into(),
            role: "admin".into(),
            action: action.into(),
            target: "secret/a".into(),
            function: None,
            secret: Some("a".into()),
            outcome: "ok".into(),
            detail: None,
        }
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
        let done = store
            .audited(admin_event("secret.put"), || {
                store.put_secret("a", &version(&value, KeyKind::Opaque))
            })
            .unwrap();
        assert_eq!(done.unwrap().version, 1);
        let refused = store
            .audited(admin_event("secret.rollback"), || {
                store.rollback("a", 7, None)
            })
            .unwrap();
        assert!(matches!(refused, Err(StoreError::UnknownVersion { .. })));
        let read = store
            .audited(admin_event("secret.list"), || store.list_secrets())
            .unwrap();
        assert_eq!(read.unwrap().len(), 1);
        assert_eq!(
            outcomes(&store),
            [
                ("secret.put".to_owned(), "ok".to_owned()),
                ("secret.rollback".to_owned(), "failed".to_owned()),
                ("secret.list".to_owned(), "ok".to_owned()),
            ]
        );
        // A later write outside any admin action records nothing.
        put(&store, "b", b"value-b-1");
        assert_eq!(outcomes(&store).len(), 3);
        assert_eq!(store.verify_audit().unwrap().first_bad, None);
    }

    #[test]
    fn a_change_whose_record_cannot_be_written_is_not_made() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        // A trail that refuses writes: gone from the schema (sealed, so only
        // the trail fails).
        sealed_change(&store, "DROP TABLE audit;");
        let value = SecretValue::new(b"value-a-1".to_vec());
        let outcome = store.audited(admin_event("secret.put"), || {
            store.put_secret("a", &version(&value, KeyKind::Opaque))
        });
        assert!(outcome.is_err(), "no success without its record");
        assert!(store.list_secrets().unwrap().is_empty(), "and no change");
    }

    #[test]
    fn the_chain_outlives_a_master_key_rotation_and_catches_an_edit() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        for action in ["one", "two", "three"] {
            store
                .audited(admin_event(action), || Ok::<_, StoreError>(()))
                .unwrap()
                .unwrap();
        }
        let new = AesKey::generate();
        let copy = AesKey::from_slice(new.expose()).unwrap();
        store.rotate_master_key(new).unwrap();
        drop(store);
        let store = SqliteStore::open(dir.path(), copy).unwrap();
        let verified = store.verify_audit().unwrap();
        assert_eq!((verified.records, verified.first_bad), (3, None));
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
        store
            .audited(admin_event("before"), || Ok::<_, StoreError>(()))
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
        store
            .audited(admin_event("after"), || Ok::<_, StoreError>(()))
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

    #[test]
    fn tokens_are_stored_as_hashes_and_revoked_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let new = crate::admin::access::NewToken::generate();
        let info = crate::store::TokenInfo {
            id: new.id.clone(),
            name: "ci".into(),
            role: crate::admin::access::Role::Deployer,
            functions: crate::admin::access::FunctionScope::parse_list("a-*").unwrap(),
            routes: crate::admin::access::RouteScope::parse_list("/a/*").unwrap(),
            created_at: 1,
            expires_at: None,
            revoked_at: None,
            created_by: "local".into(),
        };
        store.create_token(&info, &new.hash).unwrap();
        assert!(matches!(
            store.create_token(&info, &new.hash),
            Err(StoreError::TokenNameTaken(_))
        ));
        let (found, hash) = store.token_by_id(&new.id).unwrap().unwrap();
        assert_eq!(found, info);
        let presented = crate::admin::access::PresentedToken::parse(&new.token).unwrap();
        assert!(presented.matches(&hash));
        let secret = &new.token["kh_0123456789abcdef_".len()..];
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let file = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(!file.windows(secret.len()).any(|w| w == secret.as_bytes()));
        }
        assert!(store.revoke_token("ci").unwrap().revoked_at.is_some());
        assert!(matches!(
            store.revoke_token("ci"),
            Err(StoreError::TokenAlreadyRevoked(_))
        ));
        assert!(matches!(
            store.revoke_token("nope"),
            Err(StoreError::UnknownToken(_))
        ));
    }

    #[test]
    fn a_writer_that_opened_before_a_master_key_rotation_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let rotator = open(dir.path());
        let late = open(dir.path());
        put(&rotator, "a", b"value-a-1");
        rotator.rotate_master_key(AesKey::generate()).unwrap();
        let value = SecretValue::new(b"sealed-under-a-dead-key".to_vec());
        let err = late
            .put_secret("b", &version(&value, KeyKind::Opaque))
            .unwrap_err();
        assert!(matches!(err, StoreError::WrongMasterKey), "{err}");
        assert!(rotator.usable_versions("b").unwrap().is_none());
        assert_eq!(
            rotator.check_all().unwrap().failed,
            Vec::<(String, u32)>::new()
        );
    }

    #[test]
    fn a_damaged_version_refuses_master_key_rotation_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        put(&store, "a", b"value-a-1");
        put(&store, "b", b"value-b-1");
        tamper(
            &store,
            "UPDATE secret_versions SET wrapped_key = zeroblob(60) WHERE name = 'b'",
        );
        let err = store.rotate_master_key(AesKey::generate()).unwrap_err();
        assert!(
            matches!(err, StoreError::Integrity { ref name, .. } if name == "b"),
            "{err}"
        );
        drop(store);
        // Nothing changed: the old key still opens everything it opened.
        let store = open(dir.path());
        assert_eq!(store.check_all().unwrap().failed, vec![("b".to_owned(), 1)]);
        assert_eq!(usable(&store, "a"), (1, vec![]));
    }

    #[test]
    fn a_record_of_the_wrong_type_fails_alone_as_an_integrity_failure() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        put(&store, "good", b"good-value-1");
        put(&store, "bad", b"bad-value-22");
        tamper(
            &store,
            "UPDATE secret_versions SET ciphertext = 'not a blob' WHERE name = 'bad'",
        );
        let report = store.check_all().unwrap();
        assert_eq!(
            (report.checked, report.failed),
            (2, vec![("bad".to_owned(), 1)])
        );
        assert!(matches!(
            store.usable_versions("bad"),
            Err(StoreError::Integrity { version: 1, .. })
        ));
        assert_eq!(usable(&store, "good"), (1, vec![]));
    }

    #[test]
    fn routes_are_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.deploy(&deployment("a", "/x"), &|_, _| true).unwrap();
        store.deploy(&deployment("a", "/x"), &|_, _| true).unwrap();
        let err = store
            .deploy(&deployment("b", "/x"), &|_, _| true)
            .unwrap_err();
        assert!(matches!(err, StoreError::RouteTaken { .. }), "{err}");
        assert_eq!(store.functions().unwrap().len(), 1);

        // Inside or above another function's route: only where the policy
        // accepts that function, which it is asked about by name.
        let refuse_a = |owner: &str, routes: &[String]| {
            assert_eq!(routes, ["/x"]);
            owner != "a"
        };
        for route in ["/x/y", "/"] {
            let err = store
                .deploy(&deployment("b", route), &refuse_a)
                .unwrap_err();
            assert!(matches!(err, StoreError::RouteNested { .. }), "{err}");
            let text = err.to_string();
            assert!(
                text.contains("`b`") && text.contains("`a`") && text.contains(route),
                "{text}"
            );
        }
        assert_eq!(store.functions().unwrap().len(), 1, "nothing stored");
        store.deploy(&deployment("b", "/xy"), &refuse_a).unwrap();
        store
            .deploy(&deployment("c", "/x/y"), &|_, _| true)
            .unwrap();
        assert_eq!(store.functions().unwrap().len(), 3);
        // A route a function holds stays its own: redeploying it is not
        // asked about the functions it nests in.
        store.deploy(&deployment("c", "/x/y"), &refuse_a).unwrap();
    }

    #[test]
    fn garbage_file_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DATABASE_FILE), vec![0x42u8; 8192]).unwrap();
        let err = SqliteStore::open(dir.path(), AesKey::generate()).unwrap_err();
        assert!(
            err.to_string().contains("not a SQLite database")
                || matches!(err, StoreError::Corrupt(_)),
            "{err}"
        );
    }
}
