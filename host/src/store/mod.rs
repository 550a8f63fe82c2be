//! Store: the persistent state of Keyhole — secrets (sealed), versions,
//! deployments and components, grants, tokens, usage marks and the audit
//! trail — behind one backend-neutral interface.
//!
//! Owns: the interface every backend implements (`interface`: one trait
//! per kind of state, and [`Store`], all of them), the plain data they
//! share (`types`, `error`), an admin action's record passed into the
//! write it belongs to ([`AdminRecord`], [`audited`]), route ownership
//! (`routes`), the data directory's file modes (`files`), and the
//! embedded SQLite backend (`sqlite`, [`SqliteStore`]).
//!
//! Invariant: every write is atomic (whole or not at all; a refused write
//! changes nothing), and no secret's plaintext is ever persisted: values
//! are sealed with `crypto` before they reach a backend.
//!
//! Never touches: wasmtime, HTTP or the request path. Nothing outside this
//! folder names [`SqliteStore`] except where a node or the CLI is
//! configured; everything else holds a `dyn Store`.

mod admin_record;
mod error;
mod files;
pub mod fleet;
mod interface;
pub mod replication;
mod routes;
mod sqlite;
mod types;

pub use admin_record::{AdminRecord, AuditedError, audited};
pub use error::StoreError;
pub use files::{private_dir, private_file};
pub use interface::{
    AuditLog, Changes, FleetRecords, FunctionStore, GrantStore, KeyCustody, SecretStore, Store,
    TokenStore,
};
pub use routes::{NestPolicy, check_routes};
pub(crate) use sqlite::opens_key_check;
pub use sqlite::{ANCHOR_ENV, DATABASE_FILE, ImportReport, SqliteStore};
pub use types::*;
