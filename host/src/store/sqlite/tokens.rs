//! Admin API tokens in the store's database: hashes only.

use super::{SqliteStore, corrupt};
use crate::admin::access::{FunctionScope, RouteScope};
use crate::store::{StoreError, Timestamp, TokenInfo, now};
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

impl SqliteStore {
    /// Stores a new token's record with the hash of its secret. Not a
    /// change to what nodes serve: the revision stays.
    pub fn create_token(&self, info: &TokenInfo, hash: &[u8]) -> Result<(), StoreError> {
        self.transact(false, |tx| {
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

    /// Every token, by name: never a token or its hash.
    pub fn tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx.prepare(&format!("{TOKEN_COLUMNS} ORDER BY name"))?;
            let rows = stmt.query_map([], |r| TokenRow::try_from(r))?;
            rows.map(|row| to_token(row?).map(|(info, _)| info))
                .collect()
        })
    }

    /// The token with public id `id` and its stored hash, for checking a
    /// presented token.
    /// The caller verifies the store ([`crate::store::Store::verify_integrity`])
    /// before trusting a token that matched: a forged token (or a revoked
    /// one restored) must not act.
    pub fn token_by_id(&self, id: &str) -> Result<Option<(TokenInfo, Vec<u8>)>, StoreError> {
        self.read(|tx| {
            let row = tx
                .query_row(&format!("{TOKEN_COLUMNS} WHERE id = ?1"), [id], |r| {
                    TokenRow::try_from(r)
                })
                .optional()?;
            row.map(to_token).transpose()
        })
    }

    /// Revokes token `name` from now on.
    pub fn revoke_token(&self, name: &str) -> Result<TokenInfo, StoreError> {
        self.transact(false, |tx| {
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
