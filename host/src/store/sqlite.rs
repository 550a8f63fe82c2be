//! The embedded store: one SQLite file in the data directory.

use super::{
    Deployment, FunctionInfo, Grant, RemovedSecret, RequestedBinding, SecretInfo, Store,
    StoreError, Timestamp,
};
use crate::crypto::{self, AesKey, SealedVersion};
use crate::egress::EgressList;
use crate::keys::KeyKind;
use crate::operations::OperationSet;
use crate::secret_value::SecretValue;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The database file's name inside the data directory.
pub const DATABASE_FILE: &str = "keyhole.db";
/// Version 2 added `secret_versions.kind` and `grants.egress`.
const SCHEMA_VERSION: i64 = 2;
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
    updated_at      INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS secret_versions (
    name        TEXT NOT NULL REFERENCES secrets(name) ON DELETE CASCADE,
    version     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    wrapped_key BLOB NOT NULL,
    ciphertext  BLOB NOT NULL,
    kind        TEXT NOT NULL DEFAULT 'opaque',
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

/// Brings a version-1 store (before key kinds and egress lists) to version 2.
const MIGRATE_1_TO_2: &str = "
ALTER TABLE secret_versions ADD COLUMN kind TEXT NOT NULL DEFAULT 'opaque';
ALTER TABLE grants ADD COLUMN egress TEXT NOT NULL DEFAULT '';
UPDATE meta SET value = 2 WHERE key = 'schema';
";

/// Secrets, deployments and grants in one SQLite file, with every secret
/// version sealed under the master key (see [`crate::crypto`]).
pub struct SqliteStore {
    conn: Mutex<Connection>,
    master: AesKey,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn now() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
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
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Io {
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join(DATABASE_FILE);
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
        conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;")?;
        let store = Self {
            conn: Mutex::new(conn),
            master,
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
        self.write(|tx| {
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
            if schema == Some(1) {
                tx.execute_batch(MIGRATE_1_TO_2)?;
            } else {
                tx.execute_batch(SCHEMA)?;
            }
            let schema = if schema == Some(1) { Some(SCHEMA_VERSION) } else { schema };
            match schema {
                None => {
                    tx.execute("INSERT INTO meta (key, value) VALUES ('schema', ?1)", [SCHEMA_VERSION])?;
                    tx.execute("INSERT INTO meta (key, value) VALUES ('revision', 0)", [])?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(other) => {
                    return Err(corrupt(format!(
                        "schema version {other} is not supported by this keyhole (supports {SCHEMA_VERSION})"
                    )));
                }
            }
            let check: Option<Vec<u8>> = tx
                .query_row("SELECT value FROM meta WHERE key = 'key_check'", [], |r| r.get(0))
                .optional()?;
            match check {
                Some(sealed) => match self.master.open(&sealed, KEY_CHECK_AAD) {
                    Ok(plain) if plain.as_slice() == KEY_CHECK_PLAINTEXT => Ok(()),
                    _ => Err(StoreError::WrongMasterKey),
                },
                None => {
                    let sealed = self.master.seal(KEY_CHECK_PLAINTEXT, KEY_CHECK_AAD);
                    tx.execute("INSERT INTO meta (key, value) VALUES ('key_check', ?1)", [sealed])?;
                    Ok(())
                }
            }
        })
    }

    /// Runs `f` in one immediate transaction; commits only if it succeeds,
    /// and then bumps the store's revision.
    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.execute(
            "UPDATE meta SET value = value + 1 WHERE key = 'revision'",
            [],
        )?;
        tx.commit()?;
        Ok(out)
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

    fn grant_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<GrantRow> {
        Ok((
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
        ))
    }

    fn to_grant((function, binding, secret, allow, egress): GrantRow) -> Result<Grant, StoreError> {
        let allow = OperationSet::parse_list(&allow).map_err(corrupt)?;
        let egress = EgressList::parse_list(&egress).map_err(corrupt)?;
        Ok(Grant {
            function,
            binding,
            secret,
            allow,
            egress,
        })
    }
}

type GrantRow = (String, String, String, String, String);

type FunctionRow = (String, String, u32, u32, String, String, u64, Timestamp);

fn function_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<FunctionRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
    ))
}

fn to_function(
    (name, routes, memory_mib, timeout_ms, bindings, component_sha256, component_size, deployed_at): FunctionRow,
) -> Result<FunctionInfo, StoreError> {
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
        bindings,
        component_sha256,
        component_size,
        deployed_at,
    })
}

impl Store for SqliteStore {
    fn put_secret(
        &self,
        name: &str,
        value: &SecretValue,
        kind: KeyKind,
    ) -> Result<u32, StoreError> {
        self.write(|tx| {
            let current: Option<u32> = tx
                .query_row("SELECT current_version FROM secrets WHERE name = ?1", [name], |r| r.get(0))
                .optional()?;
            let latest: Option<u32> = tx
                .query_row("SELECT MAX(version) FROM secret_versions WHERE name = ?1", [name], |r| r.get(0))?;
            let version = latest.unwrap_or(0) + 1;
            let sealed = crypto::seal_version(&self.master, name, version, value);
            let at = now();
            if current.is_some() {
                tx.execute(
                    "UPDATE secrets SET current_version = ?2, updated_at = ?3 WHERE name = ?1",
                    params![name, version, at],
                )?;
            } else {
                tx.execute(
                    "INSERT INTO secrets (name, current_version, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
                    params![name, version, at],
                )?;
            }
            tx.execute(
                "INSERT INTO secret_versions (name, version, created_at, wrapped_key, ciphertext, kind)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![name, version, at, sealed.wrapped_key, sealed.ciphertext, kind.as_str()],
            )?;
            Ok(version)
        })
    }

    fn list_secrets(&self) -> Result<Vec<SecretInfo>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx.prepare(
                "SELECT s.name, s.current_version, COUNT(v.version), s.created_at, s.updated_at,
                        (SELECT c.kind FROM secret_versions c WHERE c.name = s.name AND c.version = s.current_version)
                 FROM secrets s LEFT JOIN secret_versions v ON v.name = s.name
                 GROUP BY s.name ORDER BY s.name",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    SecretInfo {
                        name: r.get(0)?,
                        current_version: r.get(1)?,
                        versions: r.get(2)?,
                        created_at: r.get(3)?,
                        updated_at: r.get(4)?,
                        kind: KeyKind::Opaque,
                    },
                    r.get::<_, Option<String>>(5)?,
                ))
            })?;
            rows.map(|row| {
                let (mut info, kind) = row?;
                info.kind = kind.unwrap_or_default().parse().map_err(corrupt)?;
                Ok(info)
            })
            .collect()
        })
    }

    fn remove_secret(&self, name: &str) -> Result<RemovedSecret, StoreError> {
        self.write(|tx| {
            let versions: u32 =
                tx.query_row("SELECT COUNT(*) FROM secret_versions WHERE name = ?1", [name], |r| r.get(0))?;
            if tx.execute("DELETE FROM secrets WHERE name = ?1", [name])? == 0 {
                return Err(StoreError::UnknownSecret(name.to_owned()));
            }
            let mut stmt = tx.prepare(
                "SELECT function, binding, secret, allow, egress FROM grants WHERE secret = ?1 ORDER BY function, binding",
            )?;
            let dangling_grants = stmt
                .query_map([name], Self::grant_from_row)?
                .map(|row| Self::to_grant(row?))
                .collect::<Result<_, _>>()?;
            Ok(RemovedSecret { versions, dangling_grants })
        })
    }

    fn current_secret(&self, name: &str) -> Result<Option<(u32, SecretValue)>, StoreError> {
        let row = self.read(|tx| {
            Ok(tx
                .query_row(
                    "SELECT v.version, v.wrapped_key, v.ciphertext FROM secrets s
                     JOIN secret_versions v ON v.name = s.name AND v.version = s.current_version
                     WHERE s.name = ?1",
                    [name],
                    |r| {
                        Ok((
                            r.get::<_, u32>(0)?,
                            SealedVersion {
                                wrapped_key: r.get(1)?,
                                ciphertext: r.get(2)?,
                            },
                        ))
                    },
                )
                .optional()?)
        })?;
        let Some((version, sealed)) = row else {
            return Ok(None);
        };
        let value = crypto::open_version(&self.master, name, version, &sealed).map_err(|_| {
            StoreError::Integrity {
                name: name.to_owned(),
                version,
            }
        })?;
        Ok(Some((version, value)))
    }

    fn deploy(&self, deployment: &Deployment) -> Result<(), StoreError> {
        let info = &deployment.info;
        self.write(|tx| {
            for route in &info.routes {
                let owner: Option<String> = tx
                    .query_row("SELECT function FROM routes WHERE route = ?1", [route], |r| r.get(0))
                    .optional()?;
                if let Some(owner) = owner.filter(|o| o != &info.name) {
                    return Err(StoreError::RouteTaken { route: route.clone(), owner });
                }
            }
            let routes = serde_json::to_string(&info.routes).map_err(corrupt)?;
            let bindings: Vec<(String, String)> = info
                .bindings
                .iter()
                .map(|b| (b.binding.clone(), b.operations.iter().map(|o| o.as_str()).collect::<Vec<_>>().join(",")))
                .collect();
            let bindings = serde_json::to_string(&bindings).map_err(corrupt)?;
            tx.execute(
                "INSERT INTO functions (name, routes, memory_mib, timeout_ms, bindings, component_sha256, component, deployed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (name) DO UPDATE SET routes = excluded.routes, memory_mib = excluded.memory_mib,
                   timeout_ms = excluded.timeout_ms, bindings = excluded.bindings,
                   component_sha256 = excluded.component_sha256, component = excluded.component,
                   deployed_at = excluded.deployed_at",
                params![
                    info.name,
                    routes,
                    info.memory_mib,
                    info.timeout_ms,
                    bindings,
                    info.component_sha256,
                    deployment.component,
                    info.deployed_at
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
            if tx.execute("DELETE FROM functions WHERE name = ?1", [name])? == 0 {
                return Err(StoreError::UnknownFunction(name.to_owned()));
            }
            Ok(grants)
        })
    }

    fn functions(&self) -> Result<Vec<FunctionInfo>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx.prepare(
                "SELECT name, routes, memory_mib, timeout_ms, bindings, component_sha256, length(component), deployed_at
                 FROM functions ORDER BY name",
            )?;
            let rows = stmt.query_map([], function_from_row)?;
            rows.map(|row| to_function(row?)).collect()
        })
    }

    fn component(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        self.read(|tx| {
            tx.query_row(
                "SELECT component FROM functions WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| StoreError::UnknownFunction(name.to_owned()))
        })
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
            tx.execute(
                "INSERT INTO grants (function, binding, secret, allow, egress) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (function, binding) DO UPDATE
                 SET secret = excluded.secret, allow = excluded.allow, egress = excluded.egress",
                params![
                    grant.function,
                    grant.binding,
                    grant.secret,
                    grant.allow.to_string(),
                    grant.egress.patterns().iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
                ],
            )?;
            Ok(())
        })
    }

    fn revoke(&self, function: &str, binding: &str) -> Result<Grant, StoreError> {
        self.write(|tx| {
            let row = tx
                .query_row(
                    "SELECT function, binding, secret, allow, egress FROM grants WHERE function = ?1 AND binding = ?2",
                    [function, binding],
                    Self::grant_from_row,
                )
                .optional()?;
            let Some(row) = row else {
                return Err(StoreError::UnknownGrant { function: function.to_owned(), binding: binding.to_owned() });
            };
            tx.execute("DELETE FROM grants WHERE function = ?1 AND binding = ?2", [function, binding])?;
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
            let mut stmt = tx.prepare(
                "SELECT function, binding, secret, allow, egress FROM grants
                 WHERE ?1 IS NULL OR function = ?1 ORDER BY function, binding",
            )?;
            let rows = stmt.query_map([function], Self::grant_from_row)?;
            rows.map(|row| Self::to_grant(row?)).collect()
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::Operation;

    fn open(dir: &Path) -> SqliteStore {
        SqliteStore::open(dir, AesKey::from_slice(&[9u8; 32]).unwrap()).unwrap()
    }

    fn deployment(name: &str, route: &str) -> Deployment {
        Deployment {
            info: FunctionInfo {
                name: name.into(),
                routes: vec![route.into()],
                memory_mib: 32,
                timeout_ms: 1000,
                bindings: vec![RequestedBinding {
                    binding: "KEY".into(),
                    operations: OperationSet::EMPTY.with(Operation::Hmac),
                }],
                component_sha256: "00".into(),
                component_size: 3,
                deployed_at: 1,
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
                .put_secret("api", &SecretValue::new(b"one".to_vec()), KeyKind::Opaque)
                .unwrap(),
            1
        );
        assert_eq!(
            store
                .put_secret("api", &SecretValue::new(b"two".to_vec()), KeyKind::Opaque)
                .unwrap(),
            2
        );
        let (version, value) = store.current_secret("api").unwrap().unwrap();
        assert_eq!((version, value.expose()), (2, &b"two"[..]));
        let list = store.list_secrets().unwrap();
        assert_eq!((list[0].current_version, list[0].versions), (2, 2));
        assert!(store.current_secret("nope").unwrap().is_none());
    }

    #[test]
    fn file_holds_no_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store
            .put_secret(
                "api",
                &SecretValue::new(b"PLAINTEXT-MARKER-123".to_vec()),
                KeyKind::Opaque,
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
        };
        assert!(matches!(
            store.grant(&grant),
            Err(StoreError::UnknownFunction(_))
        ));
        store.deploy(&deployment("f", "/f")).unwrap();
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
            .put_secret("s", &SecretValue::new(b"x".to_vec()), KeyKind::Opaque)
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
                .put_secret("old", &SecretValue::new(b"kept".to_vec()), KeyKind::Opaque)
                .unwrap();
            // Turn it back into what version 1 wrote.
            let conn = store.conn.lock().unwrap();
            conn.execute_batch(
                "ALTER TABLE secret_versions DROP COLUMN kind;
                 ALTER TABLE grants DROP COLUMN egress;
                 UPDATE meta SET value = 1 WHERE key = 'schema';",
            )
            .unwrap();
        }
        let store = open(dir.path());
        let (version, value) = store.current_secret("old").unwrap().unwrap();
        assert_eq!((version, value.expose()), (1, &b"kept"[..]));
        assert_eq!(store.list_secrets().unwrap()[0].kind, KeyKind::Opaque);
        store
            .put_secret("aes", &SecretValue::new(vec![1; 32]), KeyKind::Aes256)
            .unwrap();
        assert_eq!(store.list_secrets().unwrap()[0].kind, KeyKind::Aes256);
        drop(store);
        // Reopening a migrated store is a no-op.
        assert_eq!(open(dir.path()).list_secrets().unwrap().len(), 2);
    }

    #[test]
    fn routes_are_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.deploy(&deployment("a", "/x")).unwrap();
        store.deploy(&deployment("a", "/x")).unwrap();
        let err = store.deploy(&deployment("b", "/x")).unwrap_err();
        assert!(matches!(err, StoreError::RouteTaken { .. }), "{err}");
        assert_eq!(store.functions().unwrap().len(), 1);
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
