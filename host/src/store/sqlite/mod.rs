//! The embedded SQLite backend: one file in the data directory, in WAL
//! mode, every write one transaction (`synchronous = FULL`).
//!
//! Invariant: every value is sealed (`crate::crypto`) before it reaches a
//! row, every row that decides what is served or who may act is
//! authenticated and the set of rows sealed as a whole (`sealing`), and
//! an admin action's record commits in the transaction of its change.
//!
//! The parts, one per group of tables: `schema` (the schema and its
//! migrations, in order), `secrets` (versions, grace, rollback), `uses`
//! (recorded uses, dependents), `functions` (deployments and components),
//! `grants`, `tokens`, `audit_log` (the chain), `master_key` (key check,
//! rekey and rotation, `check`), and `sealing` (row authentication and the
//! anchor). This file holds the connection and the transaction plumbing
//! they share.

use crate::crypto::AesKey;
use crate::store::replication::{ChangeSet, Proposal, Replication};
use crate::store::{AdminRecord, StoreError};
use rusqlite::{Connection, Transaction, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

mod audit_log;
mod changes;
mod functions;
mod grants;
mod import;
pub use import::ImportReport;
mod master_key;
pub(crate) use master_key::opens_key_check;
mod replica;
mod schema;
mod sealing;
mod secrets;
#[cfg(test)]
mod test_support;
mod tokens;
mod uses;

pub use sealing::ANCHOR_ENV;

/// The database file's name inside the data directory.
pub const DATABASE_FILE: &str = "keyhole.db";

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
    /// The fleet this store is a replica of, if any: its admin writes are
    /// proposed there and land only if accepted ([`replica`]).
    replication: RwLock<Option<Arc<dyn Replication>>>,
    /// Wakes this process's waiters for a change when a write commits.
    signal: changes::CommitSignal,
}

/// How many times an admin write is decided again after losing a race to
/// another replica's write before it gives up.
const FLEET_RETRIES: usize = 64;

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
        // Foreign keys come on once the schema is current: an upgrade that
        // rebuilds a table must not cascade its drop to the rows that name it.
        conn.execute_batch(
            "PRAGMA foreign_keys = OFF; PRAGMA synchronous = FULL; PRAGMA trusted_schema = OFF;",
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
            replication: RwLock::new(None),
            signal: changes::CommitSignal::default(),
        };
        store.initialize()?;
        store
            .conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .execute_batch("PRAGMA foreign_keys = ON;")?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
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

    /// The master key in use.
    fn master(&self) -> Arc<AesKey> {
        Arc::clone(&self.master.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The master key in use, for the fleet's follower (which checks it
    /// against a master-key rotation's key check).
    pub(crate) fn current_master(&self) -> Arc<AesKey> {
        self.master()
    }

    /// Runs `f` in one immediate transaction, after checking that the master
    /// key in use still opens the store; commits only if it succeeds, and
    /// then bumps the store's revision.
    fn write<T>(
        &self,
        record: &AdminRecord,
        f: impl Fn(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.transact(true, Some(record), f)
    }

    /// Runs `f` in one immediate transaction after checking the master key;
    /// commits only if it succeeds. With `bump`, the revision goes up too,
    /// so nodes reload. `record`, the admin action the write belongs to,
    /// commits with it unless an earlier write of that action carried it.
    ///
    /// An admin write (one with a `record`) on a replica of a fleet is
    /// proposed to the fleet and commits only as the entry it accepted;
    /// when another replica's write came first, this one catches up and
    /// runs `f` again on the newer state.
    fn transact<T>(
        &self,
        bump: bool,
        record: Option<&AdminRecord>,
        f: impl Fn(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let propose = |fleet: &dyn Replication, applied: u64, change: &ChangeSet| {
            fleet.propose(applied, change)
        };
        let proposer = Proposer {
            propose: &propose,
            even_if_empty: false,
        };
        self.transact_proposing(bump, record, &proposer, f)
    }

    /// [`Self::transact`], proposing the change to the fleet with
    /// `propose` (a master-key rotation is proposed as one).
    fn transact_proposing<T>(
        &self,
        bump: bool,
        record: Option<&AdminRecord>,
        proposer: &Proposer<'_>,
        f: impl Fn(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let Some(fleet) = record.and(self.replication()) else {
            return self.transact_once(bump, record, None, &f);
        };
        // A node still joining its fleet replaces its replication when it
        // has joined: wait for that (outside the store's lock, which
        // joining takes), then use what is there.
        fleet.ready();
        let fleet = self.replication().unwrap_or(fleet);
        for _ in 0..FLEET_RETRIES {
            match self.transact_once(bump, record, Some((&*fleet, proposer)), &f) {
                Err(StoreError::FleetConflict { applied }) => fleet.await_newer(applied)?,
                other => return other,
            }
        }
        Err(StoreError::ClusterUnavailable(format!(
            "the write lost the race to other writes {FLEET_RETRIES} times in a row; try again"
        )))
    }

    /// One attempt of [`Self::transact`]; with `fleet`, the change is
    /// proposed there before it commits.
    fn transact_once<T>(
        &self,
        bump: bool,
        record: Option<&AdminRecord>,
        fleet: Option<(&dyn Replication, &Proposer<'_>)>,
        f: &impl Fn(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        self.check_before_writing(&tx)?;
        if record.is_some() && fleet.is_none() {
            self.refuse_if_bound_to_a_fleet(&tx)?;
        }
        let key = self.row_key()?;
        let generation = std::cell::Cell::new(0);
        let out = self
            .in_transaction(tx, bump, |tx| {
                let before = fleet.map(|_| replica::rows(tx)).transpose()?;
                let out = f(tx)?;
                // An admin action is recorded in the same transaction as its
                // change: both land, or neither.
                if let Some(record) = record.filter(|r| !r.written()) {
                    audit_log::append_admin_record(self, tx, record)?;
                }
                if let (Some((fleet, proposer)), Some(before)) = (fleet, before) {
                    let change = replica::changes(tx, &before)?;
                    if !change.is_empty() || proposer.even_if_empty {
                        let applied = replica::applied(tx)?;
                        match (proposer.propose)(fleet, applied, &change)? {
                            Proposal::Accepted(seq) if seq == applied + 1 => {
                                replica::set_applied(tx, seq)?;
                            }
                            Proposal::Accepted(seq) => {
                                return Err(corrupt(format!(
                                    "the fleet accepted this write as entry {seq}, but this replica had applied up to {applied}"
                                )));
                            }
                            Proposal::Conflict => return Err(StoreError::FleetConflict { applied }),
                        }
                    }
                }
                generation.set(sealing::seal(tx, &key)?);
                Ok(out)
            })
            .inspect(|_| record.into_iter().for_each(AdminRecord::mark_written))?;
        drop(conn);
        self.advance_anchor(&key, generation.get());
        Ok(out)
    }

    /// Runs `f` in one immediate transaction and commits if it succeeds,
    /// for node-local rows no MAC covers: without verifying or sealing the
    /// store (the rows `f` writes cannot make a forgery pass, and leave
    /// every MAC as it was) and without moving the revision.
    fn write_unsealed<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        self.in_transaction(tx, false, f)
    }

    /// Records a committed generation in the anchor outside the database.
    /// Committed already: a failure here only weakens rollback detection,
    /// so it is logged, not returned.
    fn advance_anchor(&self, key: &sealing::RowKey, generation: i64) {
        if let Err(e) = self.anchor.advance(key, generation) {
            tracing::error!("cannot record the store's generation in its anchor: {e}");
        }
    }

    /// The data directory, for messages.
    pub(crate) fn data_dir(&self) -> &Path {
        self.path.parent().unwrap_or(&self.path)
    }

    /// Refuses a write under a master key that no longer opens the store
    /// (another process may have rotated it since this one opened it), or
    /// over rows someone else forged or rolled back (sealing after this
    /// write would make them look like Keyhole's).
    fn check_before_writing(&self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        if !master_key::opens_key_check(&self.master(), &master_key::key_check_in(tx)?) {
            return Err(StoreError::WrongMasterKey);
        }
        let findings = self.verify_in(tx)?;
        if !findings.is_clean() {
            let error = findings.error();
            tracing::error!("refusing to write: {error}");
            return Err(error);
        }
        Ok(())
    }

    /// A fleet's replica opened without its fleet takes no admin write: the
    /// write would be no entry of the fleet's, and the fleet's entries
    /// would later be applied over it.
    fn refuse_if_bound_to_a_fleet(&self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        match replica::fleet_id(tx)? {
            Some(fleet) => Err(StoreError::Cluster(format!(
                "the data directory {} is a replica of fleet {fleet}: its state changes only through the fleet; give --cluster (KEYHOLE_CLUSTER)",
                self.data_dir().display()
            ))),
            None => Ok(()),
        }
    }

    /// The fleet this store replicates, if any.
    fn replication(&self) -> Option<Arc<dyn Replication>> {
        self.replication
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes this store a replica of a fleet: from now on its admin writes
    /// land only as entries `fleet` accepted ([`Replication`]).
    pub fn replicate_through(&self, fleet: Arc<dyn Replication>) {
        *self.replication.write().unwrap_or_else(|p| p.into_inner()) = Some(fleet);
    }

    /// Binds this store to the fleet `fleet` as its replica, the first time;
    /// afterwards refuses any other fleet. A store that already holds a
    /// single node's state (secrets, functions, grants or tokens not from
    /// a fleet) is refused too: its rows would be no fleet's, and the
    /// fleet's entries would not apply over them.
    pub fn bind_fleet(&self, fleet: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        match replica::fleet_id(&tx)? {
            Some(bound) if bound == fleet => return Ok(()),
            Some(bound) => {
                return Err(StoreError::Cluster(format!(
                    "the data directory {} is a replica of fleet {bound}, not of fleet {fleet} at these servers: give this node another --data",
                    self.data_dir().display()
                )));
            }
            None => {}
        }
        let rows: i64 = tx.query_row(
            "SELECT (SELECT COUNT(*) FROM secrets) + (SELECT COUNT(*) FROM functions) + (SELECT COUNT(*) FROM tokens)",
            [],
            |r| r.get(0),
        )?;
        if rows > 0 {
            return Err(StoreError::Cluster(format!(
                "the data directory {} holds a single node's store (secrets, functions or tokens); a fleet's replica starts empty: give this node another --data",
                self.data_dir().display()
            )));
        }
        // Sealed with the rows (the state MAC covers it), so verified first.
        self.check_before_writing(&tx)?;
        let key = self.row_key()?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('fleet_id', ?1)",
            [fleet],
        )?;
        let generation = sealing::seal(&tx, &key)?;
        tx.commit()?;
        drop(conn);
        self.advance_anchor(&key, generation);
        Ok(())
    }

    /// The fleet this store is a replica of, if it is one.
    pub fn fleet(&self) -> Result<Option<String>, StoreError> {
        self.read(replica::fleet_id)
    }

    /// The last fleet entry this replica applied (0: none yet).
    pub fn applied_entry(&self) -> Result<u64, StoreError> {
        self.read(replica::applied)
    }

    /// Applies the fleet's entry `seq` whole, in one transaction, verified
    /// before and sealed after like any write. Returns `false` (and changes
    /// nothing) when it was applied already; refuses an entry that skips
    /// one, so a replica never has a gap.
    pub fn apply_entry(&self, seq: u64, change: &ChangeSet) -> Result<bool, StoreError> {
        Ok(self.apply_entry_with(seq, change, |_| Ok(()))?.is_some())
    }

    /// [`Self::apply_entry`], running `also` in the same transaction after
    /// the rows are applied (what a master-key rotation changes locally);
    /// `None` when the entry was applied already.
    fn apply_entry_with<T>(
        &self,
        seq: u64,
        change: &ChangeSet,
        also: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Verified first: the mark of the last entry applied is sealed too.
        self.check_before_writing(&tx)?;
        let applied = replica::applied(&tx)?;
        if seq <= applied {
            return Ok(None);
        }
        if seq != applied + 1 {
            return Err(corrupt(format!(
                "the fleet's next entry for this replica is {seq}, but it has applied only up to {applied}: entries are missing"
            )));
        }
        let key = self.row_key()?;
        let (out, generation) = self.in_transaction(tx, true, |tx| {
            replica::apply(tx, change)?;
            let out = also(tx)?;
            replica::set_applied(tx, seq)?;
            Ok((out, sealing::seal(tx, &key)?))
        })?;
        drop(conn);
        self.advance_anchor(&key, generation);
        Ok(Some(out))
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
        if bump {
            self.signal.notify();
        }
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
}

/// Proposes a change: given the replication, the last entry applied, the
/// change.
type ProposeFn<'a> = dyn Fn(&dyn Replication, u64, &ChangeSet) -> Result<Proposal, StoreError> + 'a;

/// How a write's change goes to the fleet.
struct Proposer<'a> {
    /// Proposes it.
    propose: &'a ProposeFn<'a>,
    /// Whether a write that changed no replicated row is proposed all the
    /// same (a master-key rotation of a fleet with no secret yet still
    /// starts a new entry key and carries the new key check).
    even_if_empty: bool,
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
