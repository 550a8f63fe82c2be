//! Grants: a function's binding, the secret it names, the operations and
//! egress it allows, bound to the component deployed when it was given.

use super::{SqliteStore, corrupt};
use crate::operations::OperationSet;
use crate::outbound::egress::EgressList;
use crate::store::{AdminRecord, Grant, GrantStore, StoreError};
use rusqlite::{OptionalExtension, Transaction, params};

pub(super) type GrantRow = (String, String, String, String, String, String, bool);

/// The columns [`SqliteStore::to_grant`] reads, in its order.
pub(super) const GRANT_COLUMNS: &str =
    "SELECT function, binding, secret, allow, egress, digest, follow_redeploys FROM grants";

impl SqliteStore {
    pub(super) fn grants_naming(
        tx: &Transaction<'_>,
        secret: &str,
    ) -> Result<Vec<Grant>, StoreError> {
        let mut stmt = tx.prepare(&format!(
            "{GRANT_COLUMNS} WHERE secret = ?1 ORDER BY function, binding"
        ))?;
        let rows = stmt.query_map([secret], |r| GrantRow::try_from(r))?;
        rows.map(|row| Self::to_grant(row?)).collect()
    }

    pub(super) fn to_grant(
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

impl GrantStore for SqliteStore {
    fn grant(&self, grant: &Grant, record: &AdminRecord) -> Result<(), StoreError> {
        self.write(record, |tx| {
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

    fn revoke(
        &self,
        function: &str,
        binding: &str,
        record: &AdminRecord,
    ) -> Result<Grant, StoreError> {
        self.write(record, |tx| {
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
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[test]
    fn grants_need_function_and_secret_and_go_with_undeploy() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let grant = Grant {
            allow: OperationSet::EMPTY
                .with(Operation::Hmac)
                .with(Operation::Inject),
            egress: EgressList::parse_list("api.example.com,*.stripe.com:8443").unwrap(),
            ..hmac_grant()
        };
        assert!(matches!(
            store.grant(&grant, &rec()),
            Err(StoreError::UnknownFunction(_))
        ));
        store
            .deploy(&deployment("f", "/f"), &|_, _| true, &rec())
            .unwrap();
        let before = store.revision().unwrap();
        assert!(matches!(
            store.grant(&grant, &rec()),
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
                &rec(),
            )
            .unwrap();
        store.grant(&grant, &rec()).unwrap();
        assert_eq!(store.grants(Some("f")).unwrap(), vec![grant.clone()]);
        assert_eq!(store.undeploy("f", &rec()).unwrap(), 1);
        assert!(store.grants(None).unwrap().is_empty());
    }
}
