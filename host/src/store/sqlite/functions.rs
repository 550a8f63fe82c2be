//! Deployed functions: manifests, components (checked against their SHA-256
//! as they are read), route ownership and operators' approvals.

use super::{SqliteStore, corrupt};
use crate::operations::OperationSet;
use crate::outbound::egress::EgressList;
use crate::store::{
    AdminRecord, Deployment, FunctionInfo, FunctionStore, NestPolicy, RequestedBinding, StoreError,
    Timestamp,
};
use rusqlite::{OptionalExtension, Transaction, params};

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
    Option<String>,
);

/// The columns [`to_function`] reads, in its order.
const FUNCTION_COLUMNS: &str = "SELECT name, routes, memory_mib, timeout_ms, bindings, component_sha256, length(component), deployed_at, outbound, approved_outbound, max_concurrency, config FROM functions";

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
        config,
    ): FunctionRow,
) -> Result<FunctionInfo, StoreError> {
    let config = match config {
        Some(json) => serde_json::from_str(&json).map_err(corrupt)?,
        None => Default::default(),
    };
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
        config,
    })
}

impl SqliteStore {
    pub(super) fn function_exists(tx: &Transaction<'_>, name: &str) -> Result<bool, StoreError> {
        Ok(tx
            .query_row(
                "SELECT 1 FROM functions WHERE name = ?1",
                [name],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }
}

impl FunctionStore for SqliteStore {
    fn deploy(
        &self,
        deployment: &Deployment,
        may_nest: &NestPolicy<'_>,
        record: &AdminRecord,
    ) -> Result<(), StoreError> {
        let info = &deployment.info;
        self.write(record, |tx| {
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
            crate::store::check_routes(&info.name, &info.routes, &held, &taken, may_nest)?;
            let routes = serde_json::to_string(&info.routes).map_err(corrupt)?;
            let bindings: Vec<(String, String)> = info
                .bindings
                .iter()
                .map(|b| (b.binding.clone(), b.operations.iter().map(|o| o.as_str()).collect::<Vec<_>>().join(",")))
                .collect();
            let bindings = serde_json::to_string(&bindings).map_err(corrupt)?;
            // NULL when there is none: rows from before `config` keep their MACs.
            let config = (!info.config.is_empty())
                .then(|| serde_json::to_string(&info.config))
                .transpose()
                .map_err(corrupt)?;
            tx.execute(
                "INSERT INTO functions (name, routes, memory_mib, timeout_ms, bindings, component_sha256, component, deployed_at, outbound, max_concurrency, config)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (name) DO UPDATE SET routes = excluded.routes, memory_mib = excluded.memory_mib,
                   timeout_ms = excluded.timeout_ms, bindings = excluded.bindings,
                   component_sha256 = excluded.component_sha256, component = excluded.component,
                   deployed_at = excluded.deployed_at, outbound = excluded.outbound,
                   max_concurrency = excluded.max_concurrency, config = excluded.config",
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
                    info.max_concurrency,
                    config
                ],
            )?;
            tx.execute("DELETE FROM routes WHERE function = ?1", [&info.name])?;
            for route in &info.routes {
                tx.execute("INSERT INTO routes (route, function) VALUES (?1, ?2)", params![route, info.name])?;
            }
            Ok(())
        })
    }

    fn undeploy(&self, name: &str, record: &AdminRecord) -> Result<usize, StoreError> {
        self.write(record, |tx| {
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

    fn function(&self, name: &str) -> Result<Option<FunctionInfo>, StoreError> {
        self.read(|tx| {
            tx.query_row(
                &format!("{FUNCTION_COLUMNS} WHERE name = ?1"),
                [name],
                |r| FunctionRow::try_from(r),
            )
            .optional()?
            .map(to_function)
            .transpose()
        })
    }

    fn approve(
        &self,
        function: &str,
        digest: Option<&str>,
        record: &AdminRecord,
    ) -> Result<FunctionInfo, StoreError> {
        self.write(record, |tx| {
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
                && (expected.len() < crate::store::MIN_DIGEST_HEX
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
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[test]
    fn routes_are_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store
            .deploy(&deployment("a", "/x"), &|_, _| true, &rec())
            .unwrap();
        store
            .deploy(&deployment("a", "/x"), &|_, _| true, &rec())
            .unwrap();
        let err = store
            .deploy(&deployment("b", "/x"), &|_, _| true, &rec())
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
                .deploy(&deployment("b", route), &refuse_a, &rec())
                .unwrap_err();
            assert!(matches!(err, StoreError::RouteNested { .. }), "{err}");
            let text = err.to_string();
            assert!(
                text.contains("`b`") && text.contains("`a`") && text.contains(route),
                "{text}"
            );
        }
        assert_eq!(store.functions().unwrap().len(), 1, "nothing stored");
        store
            .deploy(&deployment("b", "/xy"), &refuse_a, &rec())
            .unwrap();
        store
            .deploy(&deployment("c", "/x/y"), &|_, _| true, &rec())
            .unwrap();
        assert_eq!(store.functions().unwrap().len(), 3);
        // A route a function holds stays its own: redeploying it is not
        // asked about the functions it nests in.
        store
            .deploy(&deployment("c", "/x/y"), &refuse_a, &rec())
            .unwrap();
    }
}
