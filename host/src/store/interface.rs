//! The store's interface, split by what it keeps: every backend implements
//! each trait, and [`Store`] is all of them together, which is what the
//! node, the admin service and the CLI hold (as `dyn Store`).
//!
//! Invariant for every backend: every write is atomic — whole or not at
//! all, a refused write changes nothing — and no secret's plaintext is
//! ever persisted. A write that is an admin action takes that action's
//! [`AdminRecord`] and commits it with the change (both land, or neither),
//! then marks it written. Why: an action whose record is missing did not
//! happen, as far as an auditor can tell.

use super::{
    AdminRecord, CheckReport, Dependent, Deployment, FunctionInfo, Grant, NestPolicy, NewVersion,
    RemovedSecret, RolledBack, SecretInfo, ServedState, StoreError, Stored, TokenInfo,
    UsableVersions, UseRecord, VersionInfo,
};
use crate::audit::{Entry, Millis, NodeVerification, PruneReport, Query, Timed, Verification};
use crate::crypto::AesKey;
use std::time::Duration;

/// Secrets and their versions: sealed values, rotation with grace windows,
/// and which functions depend on them.
pub trait SecretStore: Send + Sync {
    /// Stores a new version of secret `name` (creating the secret if
    /// needed), makes it current in the same transaction, and returns its
    /// version number. The version it replaces enters its grace window, or
    /// retires.
    fn put_secret(
        &self,
        name: &str,
        new: &NewVersion<'_>,
        record: &AdminRecord,
    ) -> Result<Stored, StoreError>;
    /// Like [`SecretStore::put_secret`], but only for a secret that exists.
    fn rotate_secret(
        &self,
        name: &str,
        new: &NewVersion<'_>,
        record: &AdminRecord,
    ) -> Result<Stored, StoreError>;
    /// All secrets, by name; never values.
    fn list_secrets(&self) -> Result<Vec<SecretInfo>, StoreError>;
    /// One secret; never its value.
    fn secret(&self, name: &str) -> Result<SecretInfo, StoreError>;
    /// Every version of secret `name`, newest first; never values.
    fn versions(&self, name: &str) -> Result<Vec<VersionInfo>, StoreError>;
    /// Makes version `to` current again; the version it replaces enters a
    /// grace window of `grace` seconds, or retires.
    fn rollback(
        &self,
        name: &str,
        to: u32,
        grace: Option<i64>,
        record: &AdminRecord,
    ) -> Result<RolledBack, StoreError>;
    /// Deletes secret `name` and all its versions. Refused while grants name
    /// it, unless `force`.
    fn remove_secret(
        &self,
        name: &str,
        force: bool,
        record: &AdminRecord,
    ) -> Result<RemovedSecret, StoreError>;
    /// The versions of secret `name` functions may use now, decrypted, or
    /// `None` if there is no such secret.
    fn usable_versions(&self, name: &str) -> Result<Option<UsableVersions>, StoreError>;
    /// Every grant naming secret `name`, with its last recorded use.
    fn dependents(&self, name: &str) -> Result<Vec<Dependent>, StoreError>;
    /// Records uses observed by a node. Not a change to what is served: it
    /// leaves [`Changes::revision`] alone.
    fn record_uses(&self, uses: &[UseRecord]) -> Result<(), StoreError>;
}

/// Deployed functions: manifests, components and what operators approved.
pub trait FunctionStore: Send + Sync {
    /// Stores (or replaces) a function. Grants of a replaced function stay.
    /// Refused when a route equals another function's route, or lies
    /// inside or above one whose function `may_nest` rejects (checked in
    /// the same transaction as the write, so no deploy slips between).
    fn deploy(
        &self,
        deployment: &Deployment,
        may_nest: &NestPolicy<'_>,
        record: &AdminRecord,
    ) -> Result<(), StoreError>;
    /// Removes a function and its grants; returns how many grants went.
    fn undeploy(&self, name: &str, record: &AdminRecord) -> Result<usize, StoreError>;
    /// All deployed functions, by name.
    fn functions(&self) -> Result<Vec<FunctionInfo>, StoreError>;
    /// Deployed function `name`, if there is one: what a node reloads when
    /// only that function changed.
    fn function(&self, name: &str) -> Result<Option<FunctionInfo>, StoreError>;
    /// The component bytes of function `name`, with the SHA-256 they were
    /// deployed under (checked against the bytes as they are read).
    fn component(&self, name: &str) -> Result<(Vec<u8>, String), StoreError>;
    /// An operator approves what function `function` asks for now: its
    /// outbound hosts, and its grants for the component deployed now. With
    /// `digest`, only if the deployed component's SHA-256 starts with it
    /// (at least 32 hex digits), so an operator approves the code they
    /// reviewed and not one deployed since.
    fn approve(
        &self,
        function: &str,
        digest: Option<&str>,
        record: &AdminRecord,
    ) -> Result<FunctionInfo, StoreError>;
}

/// Grants: which function's binding may do what with which secret.
pub trait GrantStore: Send + Sync {
    /// Creates or replaces the grant for `grant.function` / `grant.binding`,
    /// refused unless `grant.digest` is the SHA-256 of the component
    /// deployed now (checked in the write's transaction).
    fn grant(&self, grant: &Grant, record: &AdminRecord) -> Result<(), StoreError>;
    /// Removes the grant for `function` / `binding`.
    fn revoke(
        &self,
        function: &str,
        binding: &str,
        record: &AdminRecord,
    ) -> Result<Grant, StoreError>;
    /// Grants, of one function or of all, by function then binding.
    fn grants(&self, function: Option<&str>) -> Result<Vec<Grant>, StoreError>;
}

/// Admin API tokens, kept as hashes: never a token itself.
pub trait TokenStore: Send + Sync {
    /// Stores a new token's record with the hash of its secret. Not a
    /// change to what nodes serve: the revision stays.
    fn create_token(
        &self,
        info: &TokenInfo,
        hash: &[u8],
        record: &AdminRecord,
    ) -> Result<(), StoreError>;
    /// Every token, by name: never a token or its hash.
    fn tokens(&self) -> Result<Vec<TokenInfo>, StoreError>;
    /// The token with public id `id` and its stored hash, for checking a
    /// presented token. The caller verifies the store
    /// ([`KeyCustody::verify_integrity`]) before trusting a token that
    /// matched: a forged token (or a revoked one restored) must not act.
    fn token_by_id(&self, id: &str) -> Result<Option<(TokenInfo, Vec<u8>)>, StoreError>;
    /// Revokes token `name` from now on.
    fn revoke_token(&self, name: &str, record: &AdminRecord) -> Result<TokenInfo, StoreError>;
}

/// The audit trail: function and admin records in one chain that detects
/// an edited, deleted, reordered or inserted record.
pub trait AuditLog: Send + Sync {
    /// Appends records in one transaction (not a change to what nodes
    /// serve: the revision stays).
    fn append_audit(&self, batch: &[Timed]) -> Result<(), StoreError>;
    /// Records matching `query`, oldest first (the most recent `limit`).
    /// Never holds up writes, however long the trail.
    fn audit_entries(&self, query: &Query) -> Result<Vec<Entry>, StoreError>;
    /// Walks the whole chain and says whether it is intact.
    fn verify_audit(&self) -> Result<Verification, StoreError>;
    /// Whether [`AuditLog::prune_audit`] would remove anything for
    /// `before_ms` (cheap).
    fn audit_prunable(&self, before_ms: Millis) -> Result<bool, StoreError>;
    /// Removes the oldest records before `before_ms` under a signed
    /// checkpoint that names `record` (written first, so a checkpoint
    /// cannot be carried over from a copy of the store).
    fn prune_audit(
        &self,
        before_ms: Millis,
        record: &AdminRecord,
    ) -> Result<PruneReport, StoreError>;
}

/// What every node of a fleet records, as the fleet holds it: each node's
/// audit chain, and each node's last uses of bindings. A fleet's replica
/// keeps its own ([`AuditLog`], [`SecretStore::dependents`]) besides: its
/// records wait there until the fleet takes them.
pub trait FleetRecords: Send + Sync {
    /// Hands this replica's records the fleet lacks to it, waiting at most
    /// `timeout`; returns the last record this process handed over (0:
    /// none yet).
    fn deliver(&self, timeout: Duration) -> Result<u64, StoreError>;
    /// Every node's records matching `query`, merged by time, each naming
    /// its node (the most recent `limit`). Only records their node's chain
    /// key verifies.
    fn fleet_entries(&self, query: &Query) -> Result<Vec<Entry>, StoreError>;
    /// Each node's chain, verified apart.
    fn verify_fleet(&self) -> Result<Vec<NodeVerification>, StoreError>;
    /// This replica's name in the trail, once it reached the fleet.
    fn node(&self) -> Option<String>;
    /// Every node's latest record of each binding's uses of `secret`.
    fn last_uses(&self, secret: &str) -> Result<Vec<UseRecord>, StoreError>;
}

/// The master key and the integrity of what is stored under it.
pub trait KeyCustody: Send + Sync {
    /// Fails with [`StoreError::WrongMasterKey`] when the master key in use
    /// no longer opens the store (another process rotated it).
    fn check_master_key(&self) -> Result<(), StoreError>;
    /// Switches to `key` if it is the one the store is sealed under now: a
    /// running node calls this when another process rotated the master key.
    fn rekey(&self, key: AesKey) -> Result<(), StoreError>;
    /// Re-wraps every data key under `new` in one transaction, and switches
    /// to it. Returns how many versions were re-wrapped. A version whose
    /// data key does not open refuses the whole rotation, changing nothing.
    fn rotate_master_key(&self, new: AesKey, record: &AdminRecord) -> Result<usize, StoreError>;
    /// Fails with [`StoreError::Tampered`] when a row that decides what is
    /// served or who may act was forged, or the rows were rolled back.
    fn verify_integrity(&self) -> Result<(), StoreError>;
    /// Decrypts every version and authenticates every row: what
    /// `keyhole check` reports.
    fn check_all(&self) -> Result<CheckReport, StoreError>;
    /// A key for authenticating what a node keeps on its own disk for this
    /// store (compiled components), derived from a secret only this store
    /// holds.
    fn module_cache_key(&self) -> Result<zeroize::Zeroizing<[u8; 32]>, StoreError>;
}

/// Change notification: how a running node notices what was written, and
/// learns what a change touched so it reloads only that.
pub trait Changes: Send + Sync {
    /// A number that changes whenever anything that is served changes.
    fn revision(&self) -> Result<u64, StoreError>;
    /// Waits until the revision is no longer `seen`, or `timeout` has
    /// passed, and returns the revision then. A backend that can be told of
    /// a write returns as soon as it commits; this default only sleeps.
    fn wait_for_change(&self, seen: u64, timeout: Duration) -> Result<u64, StoreError> {
        let revision = self.revision()?;
        if revision == seen {
            std::thread::sleep(timeout);
            return self.revision();
        }
        Ok(revision)
    }
    /// What is served now, as one tag per function and per secret, after
    /// checking the store's integrity ([`KeyCustody::verify_integrity`]):
    /// comparing two of these names what changed between them.
    fn served_state(&self) -> Result<ServedState, StoreError>;
}

/// Everything a node, the admin service and the CLI do with persistent
/// state. Implemented for every type that implements its parts.
pub trait Store:
    SecretStore + FunctionStore + GrantStore + TokenStore + AuditLog + KeyCustody + Changes
{
}

impl<T> Store for T where
    T: SecretStore + FunctionStore + GrantStore + TokenStore + AuditLog + KeyCustody + Changes
{
}
