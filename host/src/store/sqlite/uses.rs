//! Recorded uses: which function last used which secret version (marked by
//! nodes in batches), and every grant that depends on a secret.

use super::SqliteStore;
use super::grants::GrantRow;
use crate::store::{Dependent, LastUse, StoreError, Timestamp, UseRecord};
use rusqlite::{OptionalExtension as _, params};

impl SqliteStore {
    pub(super) fn dependents_of(&self, name: &str) -> Result<Vec<Dependent>, StoreError> {
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

    pub(super) fn mark_uses(&self, uses: &[UseRecord]) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        // No MAC covers recorded uses (they decide nothing a node serves),
        // so this write neither verifies nor seals the store: at a
        // thousand functions that would hold the store's connection, and
        // with it the node's next load, for tens of milliseconds a second.
        self.write_unsealed(|tx| {
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
        })?;
        if let Some(fleet) = self.replication() {
            fleet.share_uses(self.recorded_uses(uses)?);
        }
        Ok(())
    }

    /// What this store holds of the bindings `uses` name, whole.
    fn recorded_uses(&self, uses: &[UseRecord]) -> Result<Vec<UseRecord>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT secret, version, used_at, grace_version, grace_used_at
                 FROM secret_uses WHERE function = ?1 AND binding = ?2",
            )?;
            let mut out = Vec::with_capacity(uses.len());
            for u in uses {
                let row = stmt
                    .query_row(params![u.function, u.binding], |r| {
                        let last = |v: usize, t: usize| -> rusqlite::Result<Option<LastUse>> {
                            Ok(match (r.get(v)?, r.get(t)?) {
                                (Some(version), Some(at)) => Some(LastUse { at, version }),
                                _ => None,
                            })
                        };
                        Ok(UseRecord {
                            function: u.function.clone(),
                            binding: u.binding.clone(),
                            secret: r.get(0)?,
                            last_use: last(1, 2)?,
                            last_grace_use: last(3, 4)?,
                        })
                    })
                    .optional()?;
                out.extend(row);
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[test]
    fn dependents_carry_last_uses_and_rm_refuses_them_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store
            .deploy(&deployment("f", "/f"), &|_, _| true, &rec())
            .unwrap();
        put(&store, "s", b"granted-value");
        let grant = Grant {
            follow_redeploys: true,
            ..hmac_grant()
        };
        store.grant(&grant, &rec()).unwrap();
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
        let err = store.remove_secret("s", false, &rec()).unwrap_err();
        assert!(err.to_string().contains("`f` (binding `KEY`)"), "{err}");
        assert!(
            store.usable_versions("s").unwrap().is_some(),
            "refusal removed nothing"
        );
        let removed = store.remove_secret("s", true, &rec()).unwrap();
        assert_eq!(removed.dangling_grants, vec![grant]);
        assert!(store.usable_versions("s").unwrap().is_none());
        // A new secret of the same name does not inherit the old one's uses.
        put(&store, "s", b"another-value");
        assert_eq!(store.dependents("s").unwrap()[0].last_use, None);
    }
}
