//! Which function last used which secret, and which version: marked on the
//! request path with one atomic read (and a write only when the mark
//! changes), written to the store in batches by a background thread.
//!
//! The operator's question "what breaks if I rotate this?" is answered by
//! grants plus these records (`keyhole secret dependents`). A request never
//! waits on disk for them; a record reaches the store within
//! [`crate::node::server::USAGE_FLUSH_INTERVAL`] of the use.

use crate::store::{LastUse, Store, StoreError, UseRecord, now};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A mark meaning "used since the last flush, with this version". Zero is
/// "not used".
fn mark(version: u32) -> u64 {
    (1 << 32) | u64::from(version)
}

/// Sets `slot` to `word` unless it already holds it: after the first use
/// in a flush interval, workers on other cores only read the cache line
/// instead of taking it from each other on every request.
fn set_mark(slot: &AtomicU64, word: u64) {
    if slot.load(Ordering::Relaxed) != word {
        slot.store(word, Ordering::Relaxed);
    }
}

/// Takes the mark out of `slot`, leaving "not used".
fn take_mark(slot: &AtomicU64) -> Option<u32> {
    match slot.swap(0, Ordering::Relaxed) {
        0 => None,
        word => Some(word as u32),
    }
}

/// Puts back a mark whose write to the store failed, unless a newer use
/// has marked the slot since.
fn restore_mark(slot: &AtomicU64, version: Option<u32>) {
    if let Some(version) = version {
        let _ = slot.compare_exchange(0, mark(version), Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// The uses of one binding of one function since the last flush. Uses are
/// stamped with the flush's time, so the time a store records is at most a
/// flush interval late; the request path reads no clock.
#[derive(Debug, Default)]
pub struct UsageSlot {
    last: AtomicU64,
    last_grace: AtomicU64,
}

impl UsageSlot {
    /// The function opened the binding and got `version`.
    pub fn record(&self, version: u32) {
        set_mark(&self.last, mark(version));
    }

    /// A verification or decryption succeeded only with `version`, which is
    /// in its grace window.
    pub fn record_grace(&self, version: u32) {
        set_mark(&self.last_grace, mark(version));
    }

    /// The versions used since the last call, as `(opened, grace)`.
    fn take(&self) -> (Option<u32>, Option<u32>) {
        (take_mark(&self.last), take_mark(&self.last_grace))
    }

    fn is_idle(&self) -> bool {
        self.last.load(Ordering::Relaxed) == 0 && self.last_grace.load(Ordering::Relaxed) == 0
    }
}

type SlotKey = (String, String, String);

/// Every binding's usage slot on this node, kept across catalog reloads.
#[derive(Debug, Default)]
pub(crate) struct UsageLog {
    slots: Mutex<HashMap<SlotKey, Arc<UsageSlot>>>,
}

impl UsageLog {
    /// The slot for `function`'s `binding` resolving to `secret`, created
    /// on first use. A re-pointed binding gets a fresh slot.
    pub(crate) fn slot(&self, function: &str, binding: &str, secret: &str) -> Arc<UsageSlot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            slots
                .entry((function.to_owned(), binding.to_owned(), secret.to_owned()))
                .or_default(),
        )
    }

    /// Drops slots that no loaded binding holds any more, once their last
    /// uses are written.
    pub(crate) fn retain_live(&self) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|_, slot| Arc::strong_count(slot) > 1 || !slot.is_idle());
    }

    /// Writes every use recorded since the last flush to `store`, in one
    /// transaction; returns how many bindings it reported. On failure the
    /// uses stay pending for the next flush.
    pub(crate) fn flush(&self, store: &dyn Store) -> Result<usize, StoreError> {
        let slots: Vec<(SlotKey, Arc<UsageSlot>)> = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect();
        let at = now();
        let mut records = Vec::new();
        let mut taken = Vec::new();
        for ((function, binding, secret), slot) in slots {
            let (opened, grace) = slot.take();
            if opened.is_none() && grace.is_none() {
                continue;
            }
            let stamp = |version| LastUse { at, version };
            records.push(UseRecord {
                function,
                binding,
                secret,
                last_use: opened.map(stamp),
                last_grace_use: grace.map(stamp),
            });
            taken.push((slot, opened, grace));
        }
        if let Err(e) = store.record_uses(&records) {
            for (slot, opened, grace) in taken {
                restore_mark(&slot.last, opened);
                restore_mark(&slot.last_grace, grace);
            }
            return Err(e);
        }
        Ok(records.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_use_is_taken_once_with_its_version() {
        let slot = UsageSlot::default();
        assert_eq!(slot.take(), (None, None));
        slot.record(3);
        slot.record(3);
        assert_eq!(slot.take(), (Some(3), None));
        assert_eq!(slot.take(), (None, None), "nothing new since");
        slot.record_grace(2);
        slot.record(4);
        assert_eq!(slot.take(), (Some(4), Some(2)));
        assert!(slot.is_idle());
    }

    #[test]
    fn a_mark_whose_write_failed_is_put_back_unless_a_newer_use_came() {
        let slot = UsageSlot::default();
        slot.record(1);
        let (opened, _) = slot.take();
        restore_mark(&slot.last, opened);
        assert_eq!(slot.take(), (Some(1), None));
        slot.record(1);
        let (opened, _) = slot.take();
        slot.record(2);
        restore_mark(&slot.last, opened);
        assert_eq!(slot.take(), (Some(2), None), "the newer use wins");
    }

    #[test]
    fn the_same_binding_gets_the_same_slot_until_it_is_repointed() {
        let log = UsageLog::default();
        let a = log.slot("f", "KEY", "s1");
        assert!(Arc::ptr_eq(&a, &log.slot("f", "KEY", "s1")));
        assert!(!Arc::ptr_eq(&a, &log.slot("f", "KEY", "s2")));
        drop(a);
        log.retain_live();
        assert_eq!(log.slots.lock().unwrap().len(), 0);
    }
}
