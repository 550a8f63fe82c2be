//! This store as one replica of a fleet: what an admin write changed, as a
//! [`ChangeSet`] to propose, and the fleet's entries applied in order.
//!
//! Invariant: the replicated tables (secrets and their versions,
//! functions and their routes, grants, tokens) change only through an
//! entry the fleet accepted — proposed by this store's own write (then
//! committed with it, as the entry right after the last one applied) or
//! received from the fleet (then applied whole, once, in order). The
//! entry's sequence is kept in the same transaction (`meta`
//! `fleet_applied`), so a crash never applies an entry twice or skips
//! one. What is node-local (recorded uses, the audit chain, the meta
//! keys) never travels.
//!
//! Rows are compared and sent with every column but their MAC (each
//! replica authenticates its own rows, `sealing`); a function's
//! component bytes are compared by their SHA-256 column and read only
//! for rows that changed.

use super::super::StoreError;
use super::super::replication::{ChangeSet, RowChange, Value};
use super::corrupt;
use rusqlite::types::ValueRef;
use rusqlite::{OptionalExtension as _, Transaction};
use std::collections::BTreeMap;

/// The replicated tables, parents before children, with the number of
/// leading columns that form each one's primary key.
const REPLICATED: &[(&str, usize)] = &[
    ("secrets", 1),
    ("secret_versions", 2),
    ("functions", 1),
    ("routes", 1),
    ("grants", 2),
    ("tokens", 1),
];

/// Columns never compared or sent: each replica's own.
const LOCAL_COLUMNS: &[&str] = &["mac"];

/// Bytes compared by a digest column instead (table, column).
const COMPARED_BY_DIGEST: &[(&str, &str)] = &[("functions", "component")];

/// Every replicated row, by table and primary key, without the columns
/// compared by digest.
pub(super) struct Rows(BTreeMap<&'static str, TableRows>);

/// One table's rows: each primary key with its columns and their values.
type TableRows = BTreeMap<Vec<Key>, Vec<(String, Value)>>;

/// A primary-key value, ordered (SQLite keys here are text or integers).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Key {
    Integer(i64),
    Text(String),
}

impl Key {
    fn value(&self) -> Value {
        match self {
            Key::Integer(i) => Value::Integer(*i),
            Key::Text(t) => Value::Text(t.clone()),
        }
    }
}

fn value_of(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(r) => Value::Real(r),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

fn key_of(v: &Value) -> Result<Key, StoreError> {
    match v {
        Value::Integer(i) => Ok(Key::Integer(*i)),
        Value::Text(t) => Ok(Key::Text(t.clone())),
        _ => Err(corrupt(
            "a replicated row's primary key is neither text nor a number",
        )),
    }
}

fn to_sql(v: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as Sql;
    match v {
        Value::Null => Sql::Null,
        Value::Integer(i) => Sql::Integer(*i),
        Value::Real(r) => Sql::Real(*r),
        Value::Text(t) => Sql::Text(t.clone()),
        Value::Blob(b) => Sql::Blob(b.clone()),
    }
}

/// The columns of `table`, in the table's order.
fn columns(tx: &Transaction<'_>, table: &str) -> Result<Vec<String>, StoreError> {
    let mut stmt = tx.prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?;
    let names = stmt
        .query_map([table], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(names)
}

fn by_digest(table: &str, column: &str) -> bool {
    COMPARED_BY_DIGEST.contains(&(table, column))
}

/// Reads every replicated row (see [`Rows`]).
pub(super) fn rows(tx: &Transaction<'_>) -> Result<Rows, StoreError> {
    let mut out = BTreeMap::new();
    for &(table, pk) in REPLICATED {
        let compared: Vec<String> = columns(tx, table)?
            .into_iter()
            .filter(|c| !LOCAL_COLUMNS.contains(&c.as_str()) && !by_digest(table, c))
            .collect();
        let sql = format!("SELECT {} FROM {table}", compared.join(", "));
        let mut stmt = tx.prepare(&sql)?;
        let mut query = stmt.query([])?;
        let mut rows = BTreeMap::new();
        while let Some(r) = query.next()? {
            let mut row = Vec::with_capacity(compared.len());
            for (i, name) in compared.iter().enumerate() {
                row.push((name.clone(), value_of(r.get_ref(i)?)));
            }
            let key = row[..pk]
                .iter()
                .map(|(_, v)| key_of(v))
                .collect::<Result<Vec<_>, _>>()?;
            rows.insert(key, row);
        }
        out.insert(table, rows);
    }
    Ok(Rows(out))
}

/// What changed from `before` to the rows in `tx` now: deletions
/// (children first), then inserts and updates (parents first), each
/// updated function with its component bytes.
pub(super) fn changes(tx: &Transaction<'_>, before: &Rows) -> Result<ChangeSet, StoreError> {
    let after = rows(tx)?;
    let mut deletions = Vec::new();
    let mut upserts = Vec::new();
    for &(table, _) in REPLICATED.iter().rev() {
        let (old, new) = (&before.0[table], &after.0[table]);
        for key in old.keys().filter(|k| !new.contains_key(*k)) {
            deletions.push(RowChange {
                table: table.to_owned(),
                key: key.iter().map(Key::value).collect(),
                row: None,
            });
        }
    }
    for &(table, pk) in REPLICATED {
        let (old, new) = (&before.0[table], &after.0[table]);
        for (key, row) in new {
            if old.get(key) == Some(row) {
                continue;
            }
            let mut row = row.clone();
            for &(t, column) in COMPARED_BY_DIGEST.iter().filter(|(t, _)| *t == table) {
                let keys: Vec<String> = row[..pk].iter().map(|(c, _)| format!("{c} = ?")).collect();
                let sql = format!("SELECT {column} FROM {t} WHERE {}", keys.join(" AND "));
                let params: Vec<rusqlite::types::Value> =
                    row[..pk].iter().map(|(_, v)| to_sql(v)).collect();
                let bytes = tx.query_row(&sql, rusqlite::params_from_iter(params), |r| {
                    Ok(value_of(r.get_ref(0)?))
                })?;
                row.push((column.to_owned(), bytes));
            }
            upserts.push(RowChange {
                table: table.to_owned(),
                key: key.iter().map(Key::value).collect(),
                row: Some(row),
            });
        }
    }
    deletions.extend(upserts);
    Ok(ChangeSet { rows: deletions })
}

/// The fleet this store is a replica of, if it is one.
pub(super) fn fleet_id(tx: &Transaction<'_>) -> Result<Option<String>, StoreError> {
    Ok(tx
        .query_row("SELECT value FROM meta WHERE key = 'fleet_id'", [], |r| {
            r.get(0)
        })
        .optional()?)
}

/// The last fleet entry this replica applied (0: none).
pub(super) fn applied(tx: &Transaction<'_>) -> Result<u64, StoreError> {
    let v: Option<i64> = tx
        .query_row(
            "SELECT value FROM meta WHERE key = 'fleet_applied'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.unwrap_or(0) as u64)
}

/// Records `seq` as the last entry applied.
pub(super) fn set_applied(tx: &Transaction<'_>, seq: u64) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('fleet_applied', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [seq as i64],
    )?;
    Ok(())
}

/// Applies `change` in `tx`. Table and column names come from the fleet:
/// each is checked against this store's own schema before it reaches
/// SQL, and a row may not set its MAC.
pub(super) fn apply(tx: &Transaction<'_>, change: &ChangeSet) -> Result<(), StoreError> {
    for row in &change.rows {
        let Some(&(table, pk)) = REPLICATED.iter().find(|(t, _)| *t == row.table) else {
            return Err(corrupt(format!(
                "a fleet entry changes table `{}`, which is not replicated",
                row.table.escape_debug()
            )));
        };
        let columns = columns(tx, table)?;
        let key_columns = &columns[..pk];
        if row.key.len() != pk {
            return Err(corrupt(format!(
                "a fleet entry's {table} row has a malformed key"
            )));
        }
        match &row.row {
            None => {
                let sql = format!(
                    "DELETE FROM {table} WHERE {}",
                    key_columns
                        .iter()
                        .map(|c| format!("{c} = ?"))
                        .collect::<Vec<_>>()
                        .join(" AND ")
                );
                tx.execute(&sql, rusqlite::params_from_iter(row.key.iter().map(to_sql)))?;
                // As on the replica that made the change: a later secret or
                // function of the same name starts with no recorded uses.
                match (table, &row.key[..]) {
                    ("secrets", [Value::Text(name)]) => {
                        tx.execute("DELETE FROM secret_uses WHERE secret = ?1", [name])?;
                    }
                    ("functions", [Value::Text(name)]) => {
                        tx.execute("DELETE FROM secret_uses WHERE function = ?1", [name])?;
                    }
                    _ => {}
                }
            }
            Some(values) => {
                for (name, _) in values {
                    if LOCAL_COLUMNS.contains(&name.as_str()) || !columns.contains(name) {
                        return Err(corrupt(format!(
                            "a fleet entry sets column `{}` of {table}, which it may not",
                            name.escape_debug()
                        )));
                    }
                }
                if values.len() < pk
                    || values[..pk]
                        .iter()
                        .map(|(c, _)| c.as_str())
                        .ne(key_columns.iter().map(String::as_str))
                    || values[..pk].iter().map(|(_, v)| v).ne(row.key.iter())
                {
                    return Err(corrupt(format!(
                        "a fleet entry's {table} row does not match its key"
                    )));
                }
                let names: Vec<&str> = values.iter().map(|(c, _)| c.as_str()).collect();
                let updates: Vec<String> = names[pk..]
                    .iter()
                    .map(|c| format!("{c} = excluded.{c}"))
                    .collect();
                let sql = format!(
                    "INSERT INTO {table} ({}) VALUES ({}) ON CONFLICT ({}) DO {}",
                    names.join(", "),
                    vec!["?"; names.len()].join(", "),
                    key_columns.join(", "),
                    if updates.is_empty() {
                        "NOTHING".to_owned()
                    } else {
                        format!("UPDATE SET {}", updates.join(", "))
                    }
                );
                tx.execute(
                    &sql,
                    rusqlite::params_from_iter(values.iter().map(|(_, v)| to_sql(v))),
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use crate::store::replication::{ChangeSet, Proposal, Replication, RowChange, Value};
    use std::sync::{Mutex, OnceLock, Weak};

    /// An ordered log shared by replicas in one process: the fleet's
    /// contract (entry n+1 only after n; a stale proposal conflicts)
    /// without a transport, so the store's side is tested alone. The
    /// fleet on NATS is tested against real servers in `tests/all`.
    #[derive(Default)]
    struct Log(Mutex<Vec<ChangeSet>>, Mutex<Vec<(u64, Vec<u8>)>>);

    /// One replica's handle on the log.
    struct Member {
        log: Arc<Log>,
        replica: OnceLock<Weak<SqliteStore>>,
    }

    impl Member {
        fn join(log: &Arc<Log>, dir: &Path) -> Arc<SqliteStore> {
            let store = Arc::new(open(dir));
            let member = Arc::new(Member {
                log: Arc::clone(log),
                replica: OnceLock::new(),
            });
            let _ = member.replica.set(Arc::downgrade(&store));
            store.bind_fleet("test-fleet").unwrap();
            store.replicate_through(member);
            catch_up(log, &store);
            store
        }
    }

    /// Applies every entry `store` has not applied yet.
    fn catch_up(log: &Log, store: &SqliteStore) {
        let entries = log.0.lock().unwrap().clone();
        for (i, entry) in entries.iter().enumerate() {
            store.apply_entry(i as u64 + 1, entry).unwrap();
        }
    }

    impl Replication for Member {
        fn propose(&self, applied: u64, change: &ChangeSet) -> Result<Proposal, StoreError> {
            let mut log = self.log.0.lock().unwrap();
            if log.len() as u64 != applied {
                return Ok(Proposal::Conflict);
            }
            log.push(change.clone());
            Ok(Proposal::Accepted(log.len() as u64))
        }

        /// Logged like any entry; its key check kept beside it.
        fn propose_master_key(
            &self,
            applied: u64,
            change: &ChangeSet,
            key_check: &[u8],
            _new: &AesKey,
        ) -> Result<Proposal, StoreError> {
            let proposal = self.propose(applied, change)?;
            if let Proposal::Accepted(seq) = proposal {
                self.log.1.lock().unwrap().push((seq, key_check.to_vec()));
            }
            Ok(proposal)
        }

        fn await_newer(&self, _applied: u64) -> Result<(), StoreError> {
            if let Some(store) = self.replica.get().and_then(Weak::upgrade) {
                catch_up(&self.log, &store);
            }
            Ok(())
        }
    }

    fn token() -> (TokenInfo, Vec<u8>) {
        let new = crate::admin::access::NewToken::generate();
        let info = TokenInfo {
            id: new.id.clone(),
            name: "ci".into(),
            role: crate::admin::access::Role::Admin,
            functions: crate::admin::access::FunctionScope::parse_list("*").unwrap(),
            routes: crate::admin::access::RouteScope::parse_list("/*").unwrap(),
            created_at: 1,
            expires_at: None,
            revoked_at: None,
            created_by: "local".into(),
        };
        (info, new.hash.to_vec())
    }

    /// What a node would serve from `store`, and who may act on it.
    fn served(store: &SqliteStore) -> String {
        let usable = store.usable_versions("s").unwrap().map(|u| {
            (
                u.current.version,
                u.current.value.expose().to_vec(),
                u.grace
                    .iter()
                    .map(|(v, until)| (v.version, *until))
                    .collect::<Vec<_>>(),
            )
        });
        format!(
            "{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
            store.list_secrets().unwrap(),
            usable,
            store.functions().unwrap(),
            store.grants(None).unwrap(),
            store.tokens().unwrap(),
        )
    }

    #[test]
    fn every_admin_write_on_one_replica_reaches_another_whole_and_verified() {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let log = Arc::new(Log::default());
        let a = Member::join(&log, a_dir.path());
        put(&a, "s", b"first value");
        rotate(&a, "s", b"second value", Some(3_600));
        a.deploy(&deployment("f", "/f"), &|_, _| true, &rec())
            .unwrap();
        a.grant(&hmac_grant(), &rec()).unwrap();
        let (info, hash) = token();
        a.create_token(&info, &hash, &rec()).unwrap();
        assert_eq!(log.0.lock().unwrap().len(), 5, "one entry per admin write");
        assert_eq!(a.applied_entry().unwrap(), 5);

        let b = Member::join(&log, b_dir.path());
        assert_eq!(b.applied_entry().unwrap(), 5);
        assert_eq!(served(&b), served(&a));
        assert!(b.revision().unwrap() > 0, "nodes on the replica reload");
        b.verify_integrity().unwrap();
        assert_eq!(
            b.component("f").unwrap_err().to_string(),
            a.component("f").unwrap_err().to_string()
        );
        let (found, stored_hash) = b.token_by_id(&info.id).unwrap().unwrap();
        assert_eq!((found, stored_hash), (info, hash));

        // Removals travel too: the grant, then the function (its routes go
        // with it), then the secret with all its versions.
        a.revoke("f", "KEY", &rec()).unwrap();
        a.undeploy("f", &rec()).unwrap();
        a.remove_secret("s", false, &rec()).unwrap();
        catch_up(&log, &b);
        assert_eq!(served(&b), served(&a));
        assert!(b.list_secrets().unwrap().is_empty());
        b.verify_integrity().unwrap();
        assert!(
            !b.apply_entry(1, &log.0.lock().unwrap()[0]).unwrap(),
            "an entry applies once"
        );
    }

    #[test]
    fn two_replicas_rotating_one_secret_make_consecutive_versions() {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let log = Arc::new(Log::default());
        let a = Member::join(&log, a_dir.path());
        let b = Member::join(&log, b_dir.path());
        put(&a, "s", b"v1");
        catch_up(&log, &b);
        // A rotates; B, not having seen it, rotates too: B's write was
        // decided on entry 1, conflicts, catches up and becomes version 3.
        assert_eq!(rotate(&a, "s", b"v2", None), 2);
        assert_eq!(rotate(&b, "s", b"v3", None), 3);
        catch_up(&log, &a);
        let versions = |s: &SqliteStore| {
            let mut v: Vec<u32> = s.versions("s").unwrap().iter().map(|v| v.version).collect();
            v.sort_unstable();
            v
        };
        assert_eq!(versions(&a), [1, 2, 3]);
        assert_eq!(versions(&b), [1, 2, 3]);
        assert_eq!(served(&a), served(&b));
        // Each replica recorded its own admin actions once, in its own chain.
        let writes = |s: &SqliteStore| {
            s.audit_entries(&crate::audit::Query::default())
                .unwrap()
                .len()
        };
        assert_eq!((writes(&a), writes(&b)), (2, 1));
    }

    #[test]
    fn a_write_the_fleet_cannot_take_changes_nothing() {
        struct Down;
        impl Replication for Down {
            fn propose(&self, _: u64, _: &ChangeSet) -> Result<Proposal, StoreError> {
                Err(StoreError::ClusterUnavailable("no quorum".into()))
            }
            fn await_newer(&self, _: u64) -> Result<(), StoreError> {
                Ok(())
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.replicate_through(Arc::new(Down));
        let value = SecretValue::new(b"x".to_vec());
        let err = store
            .put_secret("s", &version(&value, KeyKind::Opaque), &rec())
            .unwrap_err();
        assert!(matches!(err, StoreError::ClusterUnavailable(_)), "{err}");
        assert!(store.list_secrets().unwrap().is_empty());
        assert_eq!(store.revision().unwrap(), 0);
        assert!(
            store
                .audit_entries(&crate::audit::Query::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn an_entry_may_touch_only_replicated_rows_and_never_skips_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let forged = |table: &str, column: &str| ChangeSet {
            rows: vec![RowChange {
                table: table.into(),
                key: vec![Value::Text("x".into())],
                row: Some(vec![
                    ("name".into(), Value::Text("x".into())),
                    (column.into(), Value::Integer(1)),
                ]),
            }],
        };
        for (change, named) in [
            (forged("meta", "value"), "table `meta`"),
            (forged("audit", "seq"), "table `audit`"),
            (forged("secrets", "mac"), "column `mac`"),
            (forged("secrets", "name = 'y'; --"), "column `name = "),
        ] {
            let err = store.apply_entry(1, &change).unwrap_err().to_string();
            assert!(err.contains(named), "{err}");
        }
        let err = store
            .apply_entry(2, &ChangeSet::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("entries are missing"), "{err}");
        assert_eq!(store.applied_entry().unwrap(), 0, "nothing was applied");
        assert_eq!(store.revision().unwrap(), 0);
    }

    #[test]
    fn the_last_entry_applied_and_the_fleet_are_sealed_with_the_rows() {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let log = Arc::new(Log::default());
        let a = Member::join(&log, a_dir.path());
        put(&a, "s", b"v1");
        let b = Member::join(&log, b_dir.path());
        b.verify_integrity().unwrap();
        // Someone with write access to B's data directory skips the next
        // entry (a revocation, say) by raising the mark past it.
        a.remove_secret("s", false, &rec()).unwrap();
        tamper(&b, "UPDATE meta SET value = 2 WHERE key = 'fleet_applied'");
        let err = b.verify_integrity().unwrap_err().to_string();
        assert!(err.contains("changed outside keyhole"), "{err}");
        let entry = log.0.lock().unwrap()[1].clone();
        assert!(
            b.apply_entry(2, &entry).is_err(),
            "a tampered replica takes no entry"
        );
        // Or hands the replica to another fleet.
        tamper(&b, "UPDATE meta SET value = 1 WHERE key = 'fleet_applied'");
        b.verify_integrity().unwrap();
        tamper(
            &b,
            "UPDATE meta SET value = 'another' WHERE key = 'fleet_id'",
        );
        assert!(b.verify_integrity().is_err());
    }

    #[test]
    fn a_master_key_rotation_entry_applies_only_under_the_new_key_and_only_whole() {
        let log = Arc::new(Log::default());
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = Member::join(&log, da.path());
        put(&a, "s", b"value-one");
        let b = Member::join(&log, db.path());
        let old_wrapped: Vec<u8> = b
            .conn
            .lock()
            .unwrap()
            .query_row("SELECT wrapped_key FROM secret_versions", [], |r| r.get(0))
            .unwrap();
        let new = AesKey::generate();
        let copy = || AesKey::from_slice(new.expose()).unwrap();
        assert_eq!(a.rotate_master_key(copy(), &rec()).unwrap(), 1);
        let entry = log.0.lock().unwrap()[1].clone();
        let (seq, check) = log.1.lock().unwrap()[0].clone();
        assert_eq!(seq, 2);

        // Another key than the rotation's: refused, nothing applied.
        let err = b
            .apply_master_key_entry(2, &entry, &check, AesKey::generate())
            .unwrap_err();
        assert!(matches!(err, StoreError::WrongMasterKey), "{err}");
        // An entry whose data key does not open under the new key (here
        // the old wrap put back): refused whole, the replica unchanged.
        let mut bad = entry.clone();
        for row in bad.rows.iter_mut().filter(|r| r.table == "secret_versions") {
            for (column, value) in row.row.as_mut().unwrap() {
                if column == "wrapped_key" {
                    *value = Value::Blob(old_wrapped.clone());
                }
            }
        }
        let err = b
            .apply_master_key_entry(2, &bad, &check, copy())
            .unwrap_err();
        assert!(matches!(err, StoreError::Integrity { .. }), "{err}");
        assert_eq!(b.applied_entry().unwrap(), 1);
        assert_eq!(b.check_all().unwrap().failed, Vec::<(String, u32)>::new());

        // The entry itself, with the new key: applied, and the replica
        // switched (its key check, chain key and data keys all under it).
        assert!(b.apply_master_key_entry(2, &entry, &check, copy()).unwrap());
        assert!(!b.apply_master_key_entry(2, &entry, &check, copy()).unwrap());
        assert_eq!(b.check_all().unwrap().failed, Vec::<(String, u32)>::new());
        assert!(b.verify_audit().unwrap().first_bad.is_none());
        drop(b);
        let reopened = SqliteStore::open(db.path(), copy()).unwrap();
        assert_eq!(usable(&reopened, "s"), (1, vec![]));
        assert!(matches!(
            SqliteStore::open(db.path(), AesKey::from_slice(&[9u8; 32]).unwrap()),
            Err(StoreError::WrongMasterKey)
        ));
    }

    #[test]
    fn a_master_key_rotation_of_a_fleet_with_no_secret_is_still_an_entry() {
        let log = Arc::new(Log::default());
        let dir = tempfile::tempdir().unwrap();
        let a = Member::join(&log, dir.path());
        let new = AesKey::generate();
        assert_eq!(
            a.rotate_master_key(AesKey::from_slice(new.expose()).unwrap(), &rec())
                .unwrap(),
            0
        );
        // The entry carries the key check (and, on NATS, the new entry
        // key) even with no data key to re-wrap.
        assert_eq!(log.1.lock().unwrap().len(), 1);
        assert_eq!(
            a.applied_entry().unwrap(),
            log.0.lock().unwrap().len() as u64
        );
        // Run again, it is refused: the fleet is under that key already.
        let err = a
            .rotate_master_key(AesKey::from_slice(new.expose()).unwrap(), &rec())
            .unwrap_err();
        assert!(matches!(err, StoreError::MasterKeyInForce), "{err}");
        assert_eq!(log.1.lock().unwrap().len(), 1);
    }
}
