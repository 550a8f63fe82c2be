//! Which function last used which secret, and which version: recorded on
//! the request path with one atomic store, written to the store in batches
//! by a background thread.
//!
//! The operator's question "what breaks if I rotate this?" is answered by
//! grants plus these records (`keyhole secret dependents`). A request never
//! waits on disk for them; a record reaches the store within
//! [`crate::server::USAGE_FLUSH_INTERVAL`] of the use.

use crate::store::{LastUse, Store, StoreError, Timestamp, UseRecord, now};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// `(seconds since the epoch) << 32 | version`, 0 for "never": one word, so
/// a use is recorded with a single relaxed store.
fn pack(at: Timestamp, version: u32) -> u64 {
    ((at.clamp(0, i64::from(u32::MAX)) as u64) << 32) | u64::from(version)
}

fn unpack(word: u64) -> Option<LastUse> {
    (word != 0).then_some(LastUse {
        at: (word >> 32) as Timestamp,
        version: word as u32,
    })
}

/// The latest uses of one binding of one function.
#[derive(Debug, Default)]
pub struct UsageSlot {
    last: AtomicU64,
    last_grace: AtomicU64,
    reported: Mutex<(u64, u64)>,
}

impl UsageSlot {
    /// The function opened the binding and got `version`.
    pub fn record(&self, version: u32) {
        self.last.store(pack(now(), version), Ordering::Relaxed);
    }

    /// A verification or decryption succeeded only with `version`, which is
    /// in its grace window.
    pub fn record_grace(&self, version: u32) {
        self.last_grace
            .store(pack(now(), version), Ordering::Relaxed);
    }

    /// What changed since the last call, as `(last, last_grace)`.
    fn take_changes(&self) -> Option<(Option<LastUse>, Option<LastUse>)> {
        let last = self.last.load(Ordering::Relaxed);
        let grace = self.last_grace.load(Ordering::Relaxed);
        let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        if *reported == (last, grace) {
            return None;
        }
        let changes = (
            (last != reported.0).then(|| unpack(last)).flatten(),
            (grace != reported.1).then(|| unpack(grace)).flatten(),
        );
        *reported = (last, grace);
        Some(changes)
    }

    /// Puts back changes whose write failed, unless newer ones arrived.
    fn restore(&self, before: (u64, u64)) {
        let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        *reported = before;
    }
}

type SlotKey = (String, String, String);

/// Every binding's usage slot on this node, kept across catalog reloads.
#[derive(Debug, Default)]
pub struct UsageLog {
    slots: Mutex<HashMap<SlotKey, Arc<UsageSlot>>>,
}

impl UsageLog {
    /// The slot for `function`'s `binding` resolving to `secret`, created
    /// on first use. A re-pointed binding gets a fresh slot.
    pub fn slot(&self, function: &str, binding: &str, secret: &str) -> Arc<UsageSlot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            slots
                .entry((function.to_owned(), binding.to_owned(), secret.to_owned()))
                .or_default(),
        )
    }

    /// Drops slots that no loaded binding holds any more, once their last
    /// uses are written.
    pub fn retain_live(&self) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|_, slot| {
            Arc::strong_count(slot) > 1 || {
                let reported = *slot.reported.lock().unwrap_or_else(|p| p.into_inner());
                reported
                    != (
                        slot.last.load(Ordering::Relaxed),
                        slot.last_grace.load(Ordering::Relaxed),
                    )
            }
        });
    }

    /// Writes every use recorded since the last flush to `store`, in one
    /// transaction; returns how many bindings it reported. On failure the
    /// uses stay pending for the next flush.
    pub fn flush(&self, store: &dyn Store) -> Result<usize, StoreError> {
        let slots: Vec<(SlotKey, Arc<UsageSlot>)> = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect();
        let mut records = Vec::new();
        let mut taken = Vec::new();
        for ((function, binding, secret), slot) in slots {
            let before = *slot.reported.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((last_use, last_grace_use)) = slot.take_changes() {
                records.push(UseRecord {
                    function,
                    binding,
                    secret,
                    last_use,
                    last_grace_use,
                });
                taken.push((slot, before));
            }
        }
        if let Err(e) = store.record_uses(&records) {
            for (slot, before) in taken {
                slot.restore(before);
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
    fn packing_round_trips_and_zero_means_never() {
        assert_eq!(unpack(0), None);
        let word = pack(1_800_000_000, 7);
        assert_eq!(
            unpack(word),
            Some(LastUse {
                at: 1_800_000_000,
                version: 7
            })
        );
    }

    #[test]
    fn changes_are_taken_once() {
        let slot = UsageSlot::default();
        assert!(slot.take_changes().is_none());
        slot.record(3);
        let (last, grace) = slot.take_changes().unwrap();
        assert_eq!(last.unwrap().version, 3);
        assert!(grace.is_none());
        assert!(slot.take_changes().is_none(), "nothing new since");
        slot.record_grace(2);
        let (last, grace) = slot.take_changes().unwrap();
        assert!(last.is_none(), "the open was already reported");
        assert_eq!(grace.unwrap().version, 2);
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
