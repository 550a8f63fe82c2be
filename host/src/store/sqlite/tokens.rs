//! Admin API tokens in the store's database: hashes only.

use super::{SqliteStore, corrupt};
use crate::admin::access::{FunctionScope, RouteScope};
use crate::store::{AdminRecord, StoreError, Timestamp, TokenInfo, TokenStore, now};
use rusqlite::{OptionalExtension, params};

const TOKEN_COLUMNS: &str = "SELECT id, name, role, functions, routes, created_at, expires_at, revoked_at, created_by, secret_hash FROM tokens";

type TokenRow = (
    String,
    String,
    String,
    String,
    String,
    Timestamp,
    Option<Timestamp>,
    Option<Timestamp>,
    String,
    Vec<u8>,
);

fn to_token(
    (id, name, role, functions, routes, created_at, expires_at, revoked_at, created_by, hash): TokenRow,
) -> Result<(TokenInfo, Vec<u8>), StoreError> {
    let functions: Vec<String> = serde_json::from_str(&functions)
        .map_err(|_| corrupt(format!("token `{name}` has a damaged function list")))?;
    let routes: Vec<String> = serde_json::from_str(&routes)
        .map_err(|_| corrupt(format!("token `{name}` has a damaged route list")))?;
    let info = TokenInfo {
        role: role.parse().map_err(corrupt)?,
        functions: FunctionScope::new(functions).map_err(corrupt)?,
        routes: RouteScope::new(routes).map_err(corrupt)?,
        id,
        name,
        created_at,
        expires_at,
        revoked_at,
        created_by,
    };
    Ok((info, hash))
}

impl TokenStore for SqliteStore {
    fn create_token(
        &self,
        info: &TokenInfo,
        hash: &[u8],
        record: &AdminRecord,
    ) -> Result<(), StoreError> {
        self.transact(false, Some(record), |tx| {
            let taken: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM tokens WHERE name = ?1)",
                [&info.name],
                |r| r.get(0),
            )?;
            if taken {
                return Err(StoreError::TokenNameTaken(info.name.clone()));
            }
            let functions = serde_json::to_string(info.functions.patterns())
                .map_err(|e| corrupt(e.to_string()))?;
            let routes = serde_json::to_string(info.routes.patterns())
                .map_err(|e| corrupt(e.to_string()))?;
            tx.execute(
                "INSERT INTO tokens (id, name, role, functions, routes, secret_hash, created_at, expires_at, revoked_at, created_by)
                 VALUES (?1, ?2, ?3, ?4, ?9, ?5, ?6, ?7, NULL, ?8)",
                params![
                    info.id,
                    info.name,
                    info.role.as_str(),
                    functions,
                    hash,
                    info.created_at,
                    info.expires_at,
                    info.created_by,
                    routes
                ],
            )?;
            Ok(())
        })
    }

    fn tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx.prepare(&format!("{TOKEN_COLUMNS} ORDER BY name"))?;
            let rows = stmt.query_map([], |r| TokenRow::try_from(r))?;
            rows.map(|row| to_token(row?).map(|(info, _)| info))
                .collect()
        })
    }

    fn token_by_id(&self, id: &str) -> Result<Option<(TokenInfo, Vec<u8>)>, StoreError> {
        self.read(|tx| {
            let row = tx
                .query_row(&format!("{TOKEN_COLUMNS} WHERE id = ?1"), [id], |r| {
                    TokenRow::try_from(r)
                })
                .optional()?;
            row.map(to_token).transpose()
        })
    }

    fn revoke_token(&self, name: &str, record: &AdminRecord) -> Result<TokenInfo, StoreError> {
        self.transact(false, Some(record), |tx| {
            let row = tx
                .query_row(&format!("{TOKEN_COLUMNS} WHERE name = ?1"), [name], |r| {
                    TokenRow::try_from(r)
                })
                .optional()?
                .ok_or_else(|| StoreError::UnknownToken(name.to_owned()))?;
            let (mut info, _) = to_token(row)?;
            if info.revoked_at.is_some() {
                return Err(StoreError::TokenAlreadyRevoked(name.to_owned()));
            }
            let at = now();
            tx.execute(
                "UPDATE tokens SET revoked_at = ?2 WHERE name = ?1",
                params![name, at],
            )?;
            info.revoked_at = Some(at);
            Ok(info)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

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
        store.create_token(&info, &new.hash, &rec()).unwrap();
        assert!(matches!(
            store.create_token(&info, &new.hash, &rec()),
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
        assert!(
            store
                .revoke_token("ci", &rec())
                .unwrap()
                .revoked_at
                .is_some()
        );
        assert!(matches!(
            store.revoke_token("ci", &rec()),
            Err(StoreError::TokenAlreadyRevoked(_))
        ));
        assert!(matches!(
            store.revoke_token("nope", &rec()),
            Err(StoreError::UnknownToken(_))
        ));
    }
}
