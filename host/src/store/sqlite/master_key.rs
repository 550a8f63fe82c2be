//! The master key: the check that proves a key opens this store, rekeying
//! to a key another process rotated to, rotating it (re-wrapping every data
//! key in one transaction), and checking every version and row.

use super::{SqliteStore, audit_log, corrupt, sealed_bytes, sealing};
use crate::crypto::{self, AesKey, SealedVersion};
use crate::store::replication::{ChangeSet, Replication};
use crate::store::{AdminRecord, CheckReport, KeyCustody, StoreError};
use rusqlite::params;
use std::sync::Arc;

pub(super) const KEY_CHECK_PLAINTEXT: &[u8] = b"keyhole master key check";

pub(super) const KEY_CHECK_AAD: &[u8] = b"keyhole/v1/key-check";

impl SqliteStore {
    /// What verifying the store's rows and state finds (for `keyhole
    /// check`): forged rows by name, and whether the state as a whole holds.
    pub fn integrity(&self) -> Result<sealing::Findings, StoreError> {
        self.read(|tx| self.verify_in(tx))
    }

    /// The key check as stored: a known plaintext sealed under the master key.
    fn sealed_key_check(&self) -> Result<Vec<u8>, StoreError> {
        self.read(key_check_in)
    }
}

impl KeyCustody for SqliteStore {
    fn check_master_key(&self) -> Result<(), StoreError> {
        let sealed = self.sealed_key_check()?;
        if opens_key_check(&self.master(), &sealed) {
            Ok(())
        } else {
            Err(StoreError::WrongMasterKey)
        }
    }

    /// Switches to `key` if it is the one the store is sealed under now: a
    /// running node calls this when another process rotated the master key.
    fn rekey(&self, key: AesKey) -> Result<(), StoreError> {
        let sealed = self.sealed_key_check()?;
        if !opens_key_check(&key, &sealed) {
            return Err(StoreError::WrongMasterKey);
        }
        *self.master.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        Ok(())
    }

    /// Re-wraps every data key, and the key check, under `new` in one
    /// transaction, and switches to it. Secret ciphertexts stay as they
    /// are. Returns how many versions were re-wrapped. A version whose data
    /// key does not open refuses the whole rotation, changing nothing.
    ///
    /// On a fleet's replica the re-wrapped data keys are proposed as one
    /// entry ([`Replication::propose_master_key`]) and commit only as the
    /// entry the fleet accepted; every replica given the new key applies it
    /// ([`SqliteStore::apply_master_key_entry`]).
    fn rotate_master_key(&self, new: AesKey, record: &AdminRecord) -> Result<usize, StoreError> {
        let key_check = new.seal(KEY_CHECK_PLAINTEXT, KEY_CHECK_AAD);
        let propose = |fleet: &dyn Replication, applied: u64, change: &ChangeSet| {
            fleet.propose_master_key(applied, change, &key_check, &new)
        };
        let proposer = super::Proposer {
            propose: &propose,
            even_if_empty: true,
        };
        let (count, mut master) = self.transact_proposing(true, Some(record), &proposer, |tx| {
            // Checked in the transaction: run again after losing a race,
            // the rotation may find the store under the new key already
            // (another rotation to it).
            if opens_key_check(&new, &key_check_in(tx)?) {
                return Err(StoreError::MasterKeyInForce);
            }
            // Held until the new key is in place, so no write in this
            // process seals under the old key after the commit.
            let master = self.master.write().unwrap_or_else(|p| p.into_inner());
            let count = rewrap_all(tx, &master, &new)?;
            tx.execute(
                "UPDATE meta SET value = ?1 WHERE key = 'key_check'",
                [&key_check],
            )?;
            audit_log::rewrap_chain_key(tx, &master, &new)?;
            Ok((count, master))
        })?;
        *master = Arc::new(new);
        Ok(count)
    }

    fn verify_integrity(&self) -> Result<(), StoreError> {
        let findings = self.integrity()?;
        if findings.is_clean() {
            Ok(())
        } else {
            Err(findings.error())
        }
    }

    /// Decrypts every stored version and reports which fail their
    /// integrity check, and which rows fail their authentication; values
    /// are dropped (wiped) at once.
    fn check_all(&self) -> Result<CheckReport, StoreError> {
        // The key is taken with the rows (a fleet's rotation switches it as
        // its rows commit).
        let (rows, master): (Vec<(String, u32, SealedVersion)>, _) = self.read(|tx| {
            let mut stmt = tx.prepare(
                "SELECT name, version, wrapped_key, ciphertext FROM secret_versions ORDER BY name, version",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, SealedVersion { wrapped_key: sealed_bytes(r, 2)?, ciphertext: sealed_bytes(r, 3)? }))
            })?;
            Ok((rows.collect::<Result<_, _>>()?, self.master()))
        })?;
        let failed = rows
            .iter()
            .filter(|(name, version, sealed)| {
                crypto::open_version(&master, name, *version, sealed).is_err()
            })
            .map(|(name, version, _)| (name.clone(), *version))
            .collect();
        let integrity = self.integrity()?;
        Ok(CheckReport {
            checked: rows.len(),
            failed,
            forged: integrity.forged,
            state: integrity.state,
        })
    }

    /// The key that authenticates this store's compiled-module cache
    /// (the engine's module cache), derived from its secret audit-chain key
    /// and the master key in force. The master key goes in because a
    /// fleet's replica publishes its chain key, sealed under a key whoever
    /// kept a retired master key can still open (`store::fleet::keyed`):
    /// with the chain key alone, they could plant compiled code a node with
    /// a writable cache directory would load. After a master-key rotation
    /// the cache is compiled again once.
    fn module_cache_key(&self) -> Result<zeroize::Zeroizing<[u8; 32]>, StoreError> {
        use hmac::{Hmac, Mac as _};
        let chain_key = self.chain_key.read().unwrap_or_else(|p| p.into_inner());
        let derived = chain_key
            .as_ref()
            .map(|key| key.derive("compiled-module cache"))
            .ok_or_else(|| corrupt("the store's chain key is not loaded"))?;
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(derived.as_ref()).expect("any key length");
        mac.update(b"keyhole/v1/compiled-module cache\0");
        mac.update(self.master().expose());
        Ok(zeroize::Zeroizing::new(mac.finalize().into_bytes().into()))
    }
}

impl SqliteStore {
    /// Applies the fleet's master-key rotation, entry `seq`: its rows (every
    /// data key re-wrapped under `new`), its key check, this replica's own
    /// audit chain key re-wrapped, in one transaction; then switches to
    /// `new`. Every data key must open under `new` afterwards, or nothing is
    /// applied: a replica never serves from keys it cannot open. Returns
    /// `false` when the entry was applied already.
    pub(crate) fn apply_master_key_entry(
        &self,
        seq: u64,
        change: &ChangeSet,
        key_check: &[u8],
        new: AesKey,
    ) -> Result<bool, StoreError> {
        if !opens_key_check(&new, key_check) {
            return Err(StoreError::WrongMasterKey);
        }
        let applied = self.apply_entry_with(seq, change, |tx| {
            // Held until the new key is in place, as in a rotation.
            let master = self.master.write().unwrap_or_else(|p| p.into_inner());
            for (name, version, wrapped) in wrapped_keys(tx)? {
                crypto::rewrap_data_key(&new, &new, &name, version, &wrapped)
                    .map_err(|_| StoreError::Integrity { name, version })?;
            }
            tx.execute(
                "UPDATE meta SET value = ?1 WHERE key = 'key_check'",
                [key_check],
            )?;
            audit_log::rewrap_chain_key(tx, &master, &new)?;
            Ok(master)
        })?;
        Ok(match applied {
            Some(mut master) => {
                *master = Arc::new(new);
                true
            }
            None => false,
        })
    }
}

/// Every version's wrapped data key.
fn wrapped_keys(tx: &rusqlite::Transaction<'_>) -> Result<Vec<(String, u32, Vec<u8>)>, StoreError> {
    let mut stmt = tx.prepare("SELECT name, version, wrapped_key FROM secret_versions")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, sealed_bytes(r, 2)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Re-wraps every version's data key from `old` to `new` in `tx`; returns
/// how many. One that does not open refuses the whole rotation.
fn rewrap_all(
    tx: &rusqlite::Transaction<'_>,
    old: &AesKey,
    new: &AesKey,
) -> Result<usize, StoreError> {
    let rows = wrapped_keys(tx)?;
    for (name, version, wrapped) in &rows {
        let rewrapped =
            crypto::rewrap_data_key(old, new, name, *version, wrapped).map_err(|_| {
                StoreError::Integrity {
                    name: name.clone(),
                    version: *version,
                }
            })?;
        tx.execute(
            "UPDATE secret_versions SET wrapped_key = ?3 WHERE name = ?1 AND version = ?2",
            params![name, version, rewrapped],
        )?;
    }
    Ok(rows.len())
}

/// The key check as `tx` sees it.
pub(super) fn key_check_in(tx: &rusqlite::Transaction<'_>) -> Result<Vec<u8>, StoreError> {
    Ok(
        tx.query_row("SELECT value FROM meta WHERE key = 'key_check'", [], |r| {
            r.get(0)
        })?,
    )
}

/// Whether `key` opens the store's sealed key check (`sealed`).
pub(crate) fn opens_key_check(key: &AesKey, sealed: &[u8]) -> bool {
    key.open(sealed, KEY_CHECK_AAD)
        .is_ok_and(|plain| plain.as_slice() == KEY_CHECK_PLAINTEXT)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[test]
    fn wrong_master_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()));
        let err =
            SqliteStore::open(dir.path(), AesKey::from_slice(&[8u8; 32]).unwrap()).unwrap_err();
        assert!(matches!(err, StoreError::WrongMasterKey), "{err}");
    }

    #[test]
    fn master_key_rotation_rewraps_every_version_and_retires_the_old_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        put(&store, "a", b"value-a-1");
        rotate(&store, "a", b"value-a-2", Some(600));
        put(&store, "b", b"value-b-1");
        let new = AesKey::generate();
        let new_copy = AesKey::from_slice(new.expose()).unwrap();
        assert_eq!(store.rotate_master_key(new, &rec()).unwrap(), 3);
        // This process switched keys; writes after it use the new one.
        put(&store, "c", b"value-c-1");
        assert_eq!(
            store.check_all().unwrap().failed,
            Vec::<(String, u32)>::new()
        );
        drop(store);
        let err =
            SqliteStore::open(dir.path(), AesKey::from_slice(&[9u8; 32]).unwrap()).unwrap_err();
        assert!(matches!(err, StoreError::WrongMasterKey), "{err}");
        let store = SqliteStore::open(dir.path(), new_copy).unwrap();
        let report = store.check_all().unwrap();
        assert_eq!((report.checked, report.failed.len()), (4, 0));
        assert_eq!(usable(&store, "a"), (2, vec![1]));
    }

    #[test]
    fn the_compiled_cache_key_changes_with_the_master_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let before = store.module_cache_key().unwrap();
        assert_eq!(store.module_cache_key().unwrap(), before, "stable");
        store.rotate_master_key(AesKey::generate(), &rec()).unwrap();
        assert_ne!(store.module_cache_key().unwrap(), before);
    }

    #[test]
    fn a_writer_that_opened_before_a_master_key_rotation_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let rotator = open(dir.path());
        let late = open(dir.path());
        put(&rotator, "a", b"value-a-1");
        rotator
            .rotate_master_key(AesKey::generate(), &rec())
            .unwrap();
        let value = SecretValue::new(b"sealed-under-a-dead-key".to_vec());
        let err = late
            .put_secret("b", &version(&value, KeyKind::Opaque), &rec())
            .unwrap_err();
        assert!(matches!(err, StoreError::WrongMasterKey), "{err}");
        assert!(rotator.usable_versions("b").unwrap().is_none());
        assert_eq!(
            rotator.check_all().unwrap().failed,
            Vec::<(String, u32)>::new()
        );
    }

    #[test]
    fn a_damaged_version_refuses_master_key_rotation_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        put(&store, "a", b"value-a-1");
        put(&store, "b", b"value-b-1");
        tamper(
            &store,
            "UPDATE secret_versions SET wrapped_key = zeroblob(60) WHERE name = 'b'",
        );
        let err = store
            .rotate_master_key(AesKey::generate(), &rec())
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Integrity { ref name, .. } if name == "b"),
            "{err}"
        );
        drop(store);
        // Nothing changed: the old key still opens everything it opened.
        let store = open(dir.path());
        assert_eq!(store.check_all().unwrap().failed, vec![("b".to_owned(), 1)]);
        assert_eq!(usable(&store, "a"), (1, vec![]));
    }

    #[test]
    fn a_record_of_the_wrong_type_fails_alone_as_an_integrity_failure() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        put(&store, "good", b"good-value-1");
        put(&store, "bad", b"bad-value-22");
        tamper(
            &store,
            "UPDATE secret_versions SET ciphertext = 'not a blob' WHERE name = 'bad'",
        );
        let report = store.check_all().unwrap();
        assert_eq!(
            (report.checked, report.failed),
            (2, vec![("bad".to_owned(), 1)])
        );
        assert!(matches!(
            store.usable_versions("bad"),
            Err(StoreError::Integrity { version: 1, .. })
        ));
        assert_eq!(usable(&store, "good"), (1, vec![]));
    }
}
