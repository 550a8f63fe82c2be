//! The database's schema and its migrations, in order: a store of any
//! earlier version is brought to this one in place, verified before and
//! sealed again after.

use super::master_key::{KEY_CHECK_AAD, KEY_CHECK_PLAINTEXT, opens_key_check};
use super::{SqliteStore, audit_log, corrupt, sealing};
use crate::store::StoreError;
use rusqlite::{OptionalExtension, TransactionBehavior};
use std::sync::Arc;

/// Version 2 added `secret_versions.kind` and `grants.egress`; version 3
/// grace windows, maximum ages and recorded uses; version 4 admin tokens
/// and the audit trail; version 5 route-scoped tokens, outbound hosts,
/// grants bound to a component digest, and operators' approvals; version 6
/// functions' own concurrency limits and an index for audit queries by
/// secret; version 7 the component last in the functions table; version 8
/// functions' `[config]`.
pub(super) const SCHEMA_VERSION: i64 = 8;

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

/// Brings a version-6 or version-7 store to version 8: the functions table
/// rebuilt in its current shape, with the manifest's `[config]` (JSON,
/// NULL when there is none) and the component bytes as its last column.
/// SQLite reaches a column stored after a large value only by walking that
/// value's overflow pages, so with the component anywhere but last every
/// read of a function's later columns (its MAC among them) read the whole
/// component: at a thousand deployed functions, verifying the store (every
/// write, every load) read ~80 MB (why version 7 moved it; a column added
/// with `ALTER TABLE` would land after it again). Rows keep their rowids
/// and MACs (a MAC covers columns by name, and a NULL `config` not at
/// all). Runs with foreign keys off ([`SqliteStore::open`]): dropping the
/// old table must not cascade to routes and grants.
const MIGRATE_TO_8: &str = "
CREATE TABLE functions_v8 (
    name              TEXT PRIMARY KEY,
    routes            TEXT NOT NULL,
    memory_mib        INTEGER NOT NULL,
    timeout_ms        INTEGER NOT NULL,
    bindings          TEXT NOT NULL,
    component_sha256  TEXT NOT NULL,
    deployed_at       INTEGER NOT NULL,
    outbound          TEXT NOT NULL DEFAULT '',
    approved_outbound TEXT NOT NULL DEFAULT '',
    mac               BLOB,
    max_concurrency   INTEGER,
    config            TEXT,
    component         BLOB NOT NULL
);
INSERT INTO functions_v8 (rowid, name, routes, memory_mib, timeout_ms, bindings, component_sha256,
                          deployed_at, outbound, approved_outbound, mac, max_concurrency, component)
    SELECT rowid, name, routes, memory_mib, timeout_ms, bindings, component_sha256,
           deployed_at, outbound, approved_outbound, mac, max_concurrency, component
    FROM functions;
DROP TABLE functions;
ALTER TABLE functions_v8 RENAME TO functions;
UPDATE meta SET value = 8 WHERE key = 'schema';
";

impl SqliteStore {
    /// Creates the schema on first use and checks the schema version and the
    /// master key on every open.
    pub(super) fn initialize(&self) -> Result<(), StoreError> {
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
                Some(5..=SCHEMA_VERSION) => {}
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
                if schema.is_none_or(|v| v < 6) {
                    tx.execute_batch(MIGRATE_5_TO_6)?;
                }
                tx.execute_batch(MIGRATE_TO_8)?;
                let dangling: i64 =
                    tx.query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
                        r.get(0)
                    })?;
                if dangling > 0 {
                    return Err(corrupt(format!(
                        "{dangling} routes or grants name no function after rebuilding the functions table: the upgrade was rolled back"
                    )));
                }
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
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

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

    /// Takes a store back to schema version 6's shape (the component in
    /// the middle of the functions table), sealed, as the previous release
    /// left it.
    fn downgrade_to_v6(store: &SqliteStore) {
        tamper(store, "PRAGMA foreign_keys = OFF;");
        sealed_change(
            store,
            "CREATE TABLE functions_v6 (
                 name TEXT PRIMARY KEY, routes TEXT NOT NULL, memory_mib INTEGER NOT NULL,
                 timeout_ms INTEGER NOT NULL, bindings TEXT NOT NULL,
                 component_sha256 TEXT NOT NULL, component BLOB NOT NULL,
                 deployed_at INTEGER NOT NULL, outbound TEXT NOT NULL DEFAULT '',
                 approved_outbound TEXT NOT NULL DEFAULT '', mac BLOB, max_concurrency INTEGER);
             INSERT INTO functions_v6 (rowid, name, routes, memory_mib, timeout_ms, bindings,
                 component_sha256, component, deployed_at, outbound, approved_outbound, mac,
                 max_concurrency)
                 SELECT rowid, name, routes, memory_mib, timeout_ms, bindings, component_sha256,
                     component, deployed_at, outbound, approved_outbound, mac, max_concurrency
                 FROM functions;
             DROP TABLE functions;
             ALTER TABLE functions_v6 RENAME TO functions;
             UPDATE meta SET value = 6 WHERE key = 'schema';",
        );
        tamper(store, "PRAGMA foreign_keys = ON;");
    }

    /// The functions table's columns, in their order.
    fn function_columns(store: &SqliteStore) -> Vec<String> {
        let conn = store.conn.lock().unwrap();
        let mut stmt = conn
            .prepare("SELECT name FROM pragma_table_info('functions') ORDER BY cid")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn a_version_6_store_gets_the_component_last_and_keeps_its_routes_and_grants() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        put(&store, "s", b"v");
        let deployed = deployment("f", "/f");
        store.deploy(&deployed, &|_, _| true, &rec()).unwrap();
        let grant = hmac_grant();
        store.grant(&grant, &rec()).unwrap();
        downgrade_to_v6(&store);
        assert_ne!(function_columns(&store).last().unwrap(), "component");
        assert!(
            store.integrity().unwrap().is_clean(),
            "the v6 copy verifies"
        );
        drop(store);

        let store = open(dir.path());
        assert_eq!(function_columns(&store).last().unwrap(), "component");
        assert!(store.integrity().unwrap().is_clean(), "sealed again");
        assert_eq!(store.grants(None).unwrap(), [grant]);
        assert_eq!(store.functions().unwrap()[0].routes, ["/f"]);
        let bytes: Vec<u8> = store
            .conn
            .lock()
            .unwrap()
            .query_row("SELECT component FROM functions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(bytes, deployed.component);
        // Foreign keys are back on: undeploying still takes the grant along.
        store.undeploy("f", &rec()).unwrap();
        assert!(store.grants(None).unwrap().is_empty());
    }

    #[test]
    fn a_version_7_store_gets_config_before_the_component_and_a_config_is_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store
            .deploy(&deployment("f", "/f"), &|_, _| true, &rec())
            .unwrap();
        // Back to version 7's shape: no `config` column.
        tamper(&store, "PRAGMA foreign_keys = OFF;");
        sealed_change(
            &store,
            "ALTER TABLE functions DROP COLUMN config;
             UPDATE meta SET value = 7 WHERE key = 'schema';",
        );
        tamper(&store, "PRAGMA foreign_keys = ON;");
        assert!(!function_columns(&store).contains(&"config".to_owned()));
        assert!(
            store.integrity().unwrap().is_clean(),
            "the v7 copy verifies"
        );
        drop(store);

        let store = open(dir.path());
        let columns = function_columns(&store);
        assert_eq!(&columns[columns.len() - 2..], ["config", "component"]);
        assert!(store.integrity().unwrap().is_clean(), "sealed again");
        assert!(store.functions().unwrap()[0].config.is_empty());

        // A config is stored, read back, and covered by the row's MAC.
        let mut configured = deployment("f", "/f");
        configured
            .info
            .config
            .insert("greeting".into(), "hello".into());
        store.deploy(&configured, &|_, _| true, &rec()).unwrap();
        assert_eq!(store.functions().unwrap()[0].config["greeting"], "hello");
        tamper(
            &store,
            r#"UPDATE functions SET config = '{"greeting":"forged"}'"#,
        );
        assert_eq!(store.integrity().unwrap().forged, ["functions/f"]);
    }

    #[test]
    fn a_sealed_version_5_store_is_upgraded_and_sealed_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        put(&store, "k", b"v");
        store
            .deploy(&deployment("f", "/f"), &|_, _| true, &rec())
            .unwrap();
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
        store.deploy(&limited, &|_, _| true, &rec()).unwrap();
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
        store
            .deploy(&deployment("f", "/f"), &|_, _| true, &rec())
            .unwrap();
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

    #[test]
    fn a_version_1_store_is_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path());
            store
                .put_secret(
                    "old",
                    &version(&SecretValue::new(b"kept".to_vec()), KeyKind::Opaque),
                    &rec(),
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
                &rec(),
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
            store
                .deploy(&deployment("f", "/f"), &|_, _| true, &rec())
                .unwrap();
            let grant = Grant {
                allow: OperationSet::EMPTY
                    .with(Operation::Hmac)
                    .with(Operation::Reveal),
                ..hmac_grant()
            };
            store.grant(&grant, &rec()).unwrap();
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
            store.grant(&stale, &rec()),
            Err(StoreError::DigestMismatch { .. })
        ));
        let approved = store.approve("f", None, &rec()).unwrap();
        assert_eq!(approved.component_sha256, "00");
        assert!(matches!(
            store.approve("f", Some("0000"), &rec()),
            Err(StoreError::DigestMismatch { .. })
        ));
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
