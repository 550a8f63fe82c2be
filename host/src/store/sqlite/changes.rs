//! How a running node learns that the store changed, and what changed.
//!
//! Invariant: a node is woken by every commit that changes what is served
//! — at once when the commit is this process's (the node's own admin API,
//! or its fleet's follower applying an entry), within
//! [`OTHER_PROCESSES_POLL`] when another process wrote (a CLI command on
//! the same data directory) — and the tags it is given to compare come
//! from a store that verified, in the same read, as `sealing` requires.
//! Why: a change must be in force quickly without the node rebuilding
//! everything it serves for it, and a store that does not verify must
//! not be loaded from at all.
//!
//! A function's tag digests the MACs of its `functions` row, its `routes`
//! and its `grants`; a secret's, those of its `secrets` row and its
//! `secret_versions`, and of the versions' ciphertexts (which the MACs
//! leave to AES-GCM). Every column a node loads is under those, so any
//! change to it changes the tag. (A version's wrapped key is not: a
//! master-key rotation re-wraps it without changing what it opens.)
//!
//! The tags are read in the transaction that verifies the store; what a
//! load then reads (a function, its grants, a secret's versions) comes
//! moments later, in reads of their own, as before loads were
//! incremental: a forgery made in between is caught by the next write or
//! load that verifies, and a load that saw the revision move reads what
//! it read again next time (`node::catalog`).

use super::SqliteStore;
use crate::store::{Changes, ServedState, StateTag, StoreError};
use rusqlite::Transaction;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// How often a waiting node reads the revision for writes made by other
/// processes, which cannot wake it.
const OTHER_PROCESSES_POLL: Duration = Duration::from_millis(10);

/// Tells the waiters of this process that a commit changed what is served.
#[derive(Default)]
pub(super) struct CommitSignal {
    commits: Mutex<u64>,
    committed: Condvar,
}

impl CommitSignal {
    /// Wakes every waiter: a commit that bumped the revision landed.
    pub(super) fn notify(&self) {
        *self.commits.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.committed.notify_all();
    }

    /// How many commits were signalled so far.
    fn count(&self) -> u64 {
        *self.commits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits up to `timeout` for a commit after the `seen`th.
    fn wait(&self, seen: u64, timeout: Duration) {
        let commits = self.commits.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self
            .committed
            .wait_timeout_while(commits, timeout, |c| *c == seen);
    }
}

/// The tables whose rows make up a tag: the table, the column naming what
/// the row belongs to, whether that is a function (else a secret), and
/// what else the tag digests beside the row's MAC.
const TAGGED: &[(&str, &str, bool, &str)] = &[
    ("functions", "name", true, "NULL"),
    ("routes", "function", true, "NULL"),
    ("grants", "function", true, "NULL"),
    ("secrets", "name", false, "NULL"),
    // The MAC leaves the ciphertext to AES-GCM: a secret removed and put
    // again within the same second has versions with the same MACs.
    ("secret_versions", "name", false, "ciphertext"),
];

/// Tags by the name of what they stand for.
type Tags = HashMap<String, StateTag>;

/// Every function's and secret's tag, from the MACs in `tx`.
fn tags(tx: &Transaction<'_>) -> Result<(Tags, Tags), StoreError> {
    let mut functions: HashMap<String, Sha256> = HashMap::new();
    let mut secrets: HashMap<String, Sha256> = HashMap::new();
    let mut deployed = std::collections::HashSet::new();
    for &(table, owner, of_function, also) in TAGGED {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT {owner}, mac, {also} FROM {table} ORDER BY {owner}, rowid"
        ))?;
        let mut rows = stmt.query([])?;
        let into = if of_function {
            &mut functions
        } else {
            &mut secrets
        };
        while let Some(r) = rows.next()? {
            let name: String = r.get(0)?;
            if table == "functions" {
                deployed.insert(name.clone());
            }
            let mac: Option<Vec<u8>> = r.get(1)?;
            let digest = into.entry(name).or_default();
            digest.update(table.as_bytes());
            digest.update([0]);
            digest.update(mac.unwrap_or_default());
            if let rusqlite::types::ValueRef::Blob(b) | rusqlite::types::ValueRef::Text(b) =
                r.get_ref(2)?
            {
                digest.update((b.len() as u64).to_be_bytes());
                digest.update(b);
            }
        }
    }
    // Only deployed functions have a tag (a function's routes or grants
    // alone are no deployment).
    let finish = |map: HashMap<String, Sha256>| -> Tags {
        map.into_iter()
            .map(|(name, digest)| (name, digest.finalize().into()))
            .collect()
    };
    let mut functions = finish(functions);
    functions.retain(|name, _| deployed.contains(name));
    Ok((functions, finish(secrets)))
}

impl Changes for SqliteStore {
    fn revision(&self) -> Result<u64, StoreError> {
        self.read(revision_in)
    }

    fn wait_for_change(&self, seen: u64, timeout: Duration) -> Result<u64, StoreError> {
        let deadline = Instant::now() + timeout;
        loop {
            // Counted before the revision is read: a commit in between
            // ends the wait below at once.
            let commits = self.signal.count();
            let revision = self.revision()?;
            let now = Instant::now();
            if revision != seen || now >= deadline {
                return Ok(revision);
            }
            self.signal
                .wait(commits, (deadline - now).min(OTHER_PROCESSES_POLL));
        }
    }

    fn served_state(&self) -> Result<ServedState, StoreError> {
        self.read(|tx| {
            let findings = self.verify_in(tx)?;
            if !findings.is_clean() {
                return Err(findings.error());
            }
            let (functions, secrets) = tags(tx)?;
            Ok(ServedState {
                revision: revision_in(tx)?,
                functions,
                secrets,
            })
        })
    }
}

/// The revision as `tx` reads it.
fn revision_in(tx: &Transaction<'_>) -> Result<u64, StoreError> {
    Ok(
        tx.query_row("SELECT value FROM meta WHERE key = 'revision'", [], |r| {
            r.get(0)
        })?,
    )
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_commit_wakes_a_waiter_at_once_and_changes_only_its_own_tag() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open(dir.path()));
        put(&store, "a", b"one");
        put(&store, "b", b"one");
        let before = store.served_state().unwrap();
        assert_eq!(before.secrets.len(), 2);
        assert!(before.functions.is_empty());

        let seen = before.revision;
        let waiter = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let began = Instant::now();
                let revision = store.wait_for_change(seen, Duration::from_secs(30));
                (revision.unwrap(), began.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        rotate(&store, "b", b"two", None);
        let (revision, waited) = waiter.join().unwrap();
        assert!(revision > seen);
        assert!(waited < Duration::from_secs(30), "woken by the commit");

        let after = store.served_state().unwrap();
        assert_eq!(after.secrets["a"], before.secrets["a"]);
        assert_ne!(after.secrets["b"], before.secrets["b"]);
        assert!(store.function("nothing").unwrap().is_none());
    }

    #[test]
    fn a_commit_signal_wakes_a_waiter_long_before_its_timeout() {
        let signal = Arc::new(super::CommitSignal::default());
        let seen = signal.count();
        let waiter = {
            let signal = Arc::clone(&signal);
            std::thread::spawn(move || {
                let began = Instant::now();
                signal.wait(seen, Duration::from_secs(60));
                began.elapsed()
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        signal.notify();
        assert!(waiter.join().unwrap() < Duration::from_secs(30));
    }

    #[test]
    fn a_secret_put_again_in_the_same_second_gets_another_tag() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        put(&store, "k", b"first value");
        let before = store.served_state().unwrap().secrets["k"];
        store.remove_secret("k", true, &rec()).unwrap();
        put(&store, "k", b"other value");
        assert_ne!(store.served_state().unwrap().secrets["k"], before);
    }

    #[test]
    fn a_forged_row_is_refused_not_tagged() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        put(&store, "a", b"one");
        tamper(&store, "UPDATE secrets SET max_age = 1");
        assert!(matches!(
            store.served_state(),
            Err(StoreError::Tampered { .. })
        ));
    }

    #[test]
    fn waiting_without_a_change_returns_the_same_revision_after_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let seen = store.revision().unwrap();
        let began = Instant::now();
        let timeout = Duration::from_millis(40);
        assert_eq!(store.wait_for_change(seen, timeout).unwrap(), seen);
        assert!(began.elapsed() >= timeout);
    }
}
