//! What the backend's unit tests share: opening a store in a temporary
//! directory, writing through the interface, and changing rows behind the
//! store's back.

pub(super) use super::SqliteStore;
pub(super) use super::schema::SCHEMA_VERSION;
pub(super) use super::sealing;
pub(super) use crate::crypto::AesKey;
pub(super) use crate::crypto::keys::KeyKind;
pub(super) use crate::crypto::secret_value::SecretValue;
pub(super) use crate::operations::{Operation, OperationSet};
pub(super) use crate::outbound::egress::EgressList;
pub(super) use crate::store::*;
pub(super) use std::path::Path;
pub(super) use std::sync::Arc;

pub(super) fn open(dir: &Path) -> SqliteStore {
    SqliteStore::open(dir, AesKey::from_slice(&[9u8; 32]).unwrap()).unwrap()
}

pub(super) fn version(value: &SecretValue, kind: KeyKind) -> NewVersion<'_> {
    NewVersion {
        value,
        kind,
        grace: None,
        max_age: MaxAgeChange::Keep,
    }
}

/// Changes the database behind the store's back, as a damaged disk, an
/// older keyhole or an attacker would.
pub(super) fn tamper(store: &SqliteStore, sql: &str) {
    store.conn.lock().unwrap().execute_batch(sql).unwrap();
}

/// Changes the database and seals the change as Keyhole's own: time
/// passing, for tests that cannot wait, or a stand-in for a failure.
pub(super) fn sealed_change(store: &SqliteStore, sql: &str) {
    let mut conn = store.conn.lock().unwrap();
    let tx = conn.transaction().unwrap();
    tx.execute_batch(sql).unwrap();
    sealing::seal(&tx, &store.row_key().unwrap()).unwrap();
    tx.commit().unwrap();
}

pub(super) fn put(store: &SqliteStore, name: &str, value: &[u8]) -> u32 {
    store
        .put_secret(
            name,
            &version(&SecretValue::new(value.to_vec()), KeyKind::Opaque),
            &rec(),
        )
        .unwrap()
        .version
}

pub(super) fn rotate(store: &SqliteStore, name: &str, value: &[u8], grace: Option<i64>) -> u32 {
    let value = SecretValue::new(value.to_vec());
    let new = NewVersion {
        grace,
        ..version(&value, KeyKind::Opaque)
    };
    store.rotate_secret(name, &new, &rec()).unwrap().version
}

pub(super) fn usable(store: &SqliteStore, name: &str) -> (u32, Vec<u32>) {
    let usable = store.usable_versions(name).unwrap().unwrap();
    (
        usable.current.version,
        usable.grace.iter().map(|(v, _)| v.version).collect(),
    )
}

/// Function `f`'s binding `KEY` granted secret `s` for `hmac`, for the
/// component [`deployment`] deploys.
pub(super) fn hmac_grant() -> Grant {
    Grant {
        function: "f".into(),
        binding: "KEY".into(),
        secret: "s".into(),
        allow: OperationSet::EMPTY.with(Operation::Hmac),
        egress: EgressList::default(),
        digest: "00".into(),
        follow_redeploys: false,
    }
}

pub(super) fn deployment(name: &str, route: &str) -> Deployment {
    Deployment {
        info: FunctionInfo {
            name: name.into(),
            routes: vec![route.into()],
            memory_mib: 32,
            timeout_ms: 1000,
            max_concurrency: None,
            bindings: vec![RequestedBinding {
                binding: "KEY".into(),
                operations: OperationSet::EMPTY.with(Operation::Hmac),
            }],
            component_sha256: "00".into(),
            component_size: 3,
            deployed_at: 1,
            outbound: EgressList::default(),
            approved_outbound: EgressList::default(),
            config: Default::default(),
        },
        component: vec![1, 2, 3],
    }
}

pub(super) fn admin_event(action: &str) -> crate::audit::AdminEvent {
    crate::audit::AdminEvent {
        token: "t".into(),
        role: "admin".into(),
        action: action.into(),
        target: "secret/a".into(),
        function: None,
        secret: Some("a".into()),
        outcome: "ok".into(),
        detail: None,
    }
}

/// The record of an admin action, for a test's write.
pub(super) fn rec() -> AdminRecord {
    AdminRecord::new(admin_event("test"))
}
