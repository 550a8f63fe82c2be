//! Secrets and their versions: adding a version (sealed), making one
//! current, grace windows, rollback, removal, and the versions a node may
//! use now, decrypted.

use super::{SqliteStore, corrupt, sealed_bytes};
use crate::crypto::{self, SealedVersion};
use crate::store::{
    AdminRecord, Dependent, MaxAgeChange, NewVersion, RemovedSecret, RolledBack, SecretInfo,
    SecretStore, StoreError, Stored, Timestamp, UsableVersion, UsableVersions, UseRecord,
    VersionInfo, VersionState, now,
};
use rusqlite::{OptionalExtension, Transaction, params};

/// One secret's columns as listed, current version's kind included.
const SECRET_COLUMNS: &str = "
SELECT s.name, s.current_version,
       (SELECT COUNT(*) FROM secret_versions v WHERE v.name = s.name),
       s.created_at, s.updated_at, c.kind, c.created_at, s.max_age
FROM secrets s LEFT JOIN secret_versions c ON c.name = s.name AND c.version = s.current_version";

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

impl SqliteStore {
    /// The current version of secret `name`, if it exists.
    pub(super) fn current_version(
        tx: &Transaction<'_>,
        name: &str,
    ) -> Result<Option<u32>, StoreError> {
        Ok(tx
            .query_row(
                "SELECT current_version FROM secrets WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub(super) fn secret_in(tx: &Transaction<'_>, name: &str) -> Result<SecretInfo, StoreError> {
        let row = tx
            .query_row(
                &format!("{SECRET_COLUMNS} WHERE s.name = ?1"),
                [name],
                |r| SecretRow::try_from(r),
            )
            .optional()?;
        to_secret(row.ok_or_else(|| StoreError::UnknownSecret(name.to_owned()))?)
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
}

impl SecretStore for SqliteStore {
    fn put_secret(
        &self,
        name: &str,
        new: &NewVersion<'_>,
        record: &AdminRecord,
    ) -> Result<Stored, StoreError> {
        self.write(record, |tx| self.add_version(tx, name, new, false))
    }

    fn rotate_secret(
        &self,
        name: &str,
        new: &NewVersion<'_>,
        record: &AdminRecord,
    ) -> Result<Stored, StoreError> {
        self.write(record, |tx| self.add_version(tx, name, new, true))
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

    fn rollback(
        &self,
        name: &str,
        to: u32,
        grace: Option<i64>,
        record: &AdminRecord,
    ) -> Result<RolledBack, StoreError> {
        self.write(record, |tx| {
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

    fn remove_secret(
        &self,
        name: &str,
        force: bool,
        record: &AdminRecord,
    ) -> Result<RemovedSecret, StoreError> {
        self.write(record, |tx| {
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
            // Taken with the rows: a fleet's master-key rotation switches
            // keys as its rows commit, and rows wrapped under one key must
            // be opened with that key.
            let master = self.master();
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
            Ok(Some((current, rows, master)))
        })?;
        let Some((current, rows, master)) = rows else {
            return Ok(None);
        };
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
        self.dependents_of(name)
    }

    fn record_uses(&self, uses: &[UseRecord]) -> Result<(), StoreError> {
        self.mark_uses(uses)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[test]
    fn versions_and_values_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        assert_eq!(
            store
                .put_secret(
                    "api",
                    &version(&SecretValue::new(b"one".to_vec()), KeyKind::Opaque),
                    &rec(),
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
                    &version(&SecretValue::new(b"two".to_vec()), KeyKind::Opaque),
                    &rec(),
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
                &rec(),
            )
            .unwrap();
        drop(store);
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(!bytes.windows(20).any(|w| w == b"PLAINTEXT-MARKER-123"));
        }
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
                &version(&SecretValue::new(b"x".to_vec()), KeyKind::Opaque),
                &rec(),
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
        let done = store.rollback("k", 1, Some(600), &rec()).unwrap();
        assert_eq!(done, RolledBack { from: 2, to: 1 });
        let usable = store.usable_versions("k").unwrap().unwrap();
        assert_eq!(usable.current.value.expose(), b"first-value");
        assert_eq!(usable.grace[0].0.version, 2);
        assert!(matches!(
            store.rollback("k", 1, None, &rec()),
            Err(StoreError::AlreadyCurrent { .. })
        ));
        assert!(matches!(
            store.rollback("k", 9, None, &rec()),
            Err(StoreError::UnknownVersion { .. })
        ));
        // A new version after a rollback gets the next unused number and
        // replaces the version that is current, not the latest.
        let value = SecretValue::new(b"third-value".to_vec());
        assert_eq!(
            store
                .rotate_secret("k", &version(&value, KeyKind::Opaque), &rec())
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
        store.put_secret("aged", &new, &rec()).unwrap();
        rotate(&store, "aged", b"aged-value-2", None);
        let info = store.secret("aged").unwrap();
        assert_eq!(info.max_age, Some(90 * 86_400));
        assert!(!info.overdue(now()));
        assert!(info.overdue(now() + 91 * 86_400));
        let clear = NewVersion {
            max_age: MaxAgeChange::Clear,
            ..version(&value, KeyKind::Opaque)
        };
        store.rotate_secret("aged", &clear, &rec()).unwrap();
        assert_eq!(store.secret("aged").unwrap().max_age, None);
    }
}
