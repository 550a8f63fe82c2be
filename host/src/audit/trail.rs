//! Function records on their way to the audit trail.
//!
//! The request path only pushes a record onto a bounded in-memory queue; a
//! background thread writes the queue to the store in batches. When the
//! store cannot keep up (or fails) and the queue is full, new records are
//! counted and dropped rather than making requests wait: the trail then
//! carries a [`super::LostEvent`] with the count, the node logs it, and
//! `/metrics` shows it. Requests keep their latency; the gap is visible.

use super::{Event, FunctionEvent, Timed, now_ms};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many function records may wait for the writer by default.
pub const DEFAULT_CAPACITY: usize = 64 * 1024;

/// The queue of function records not yet written.
#[derive(Debug)]
pub struct FunctionTrail {
    pending: Mutex<Vec<Timed>>,
    capacity: usize,
    lost: AtomicU64,
    lost_total: AtomicU64,
    written_total: AtomicU64,
}

impl Default for FunctionTrail {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl FunctionTrail {
    /// A queue holding at most `capacity` records.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            pending: Mutex::new(Vec::new()),
            capacity,
            lost: AtomicU64::new(0),
            lost_total: AtomicU64::new(0),
            written_total: AtomicU64::new(0),
        }
    }

    /// Queues `event`, or counts it as lost when the queue is full.
    pub fn record(&self, event: FunctionEvent) {
        let timed = Timed {
            at_ms: now_ms(),
            event: Event::Function(event),
        };
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() < self.capacity {
            pending.push(timed);
        } else {
            drop(pending);
            self.lost.fetch_add(1, Ordering::Relaxed);
            self.lost_total.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes everything queued, followed by a record of how many were lost
    /// since the last batch, if any.
    pub fn take_batch(&self) -> Vec<Timed> {
        let mut batch =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        let lost = self.lost.swap(0, Ordering::Relaxed);
        if lost > 0 {
            batch.push(Timed {
                at_ms: now_ms(),
                event: Event::Lost(super::LostEvent { records: lost }),
            });
        }
        batch
    }

    /// Puts back a batch whose write failed, ahead of newer records, as far
    /// as the capacity allows; the rest count as lost.
    pub fn restore(&self, mut batch: Vec<Timed>) {
        let mut lost_again = 0u64;
        batch.retain(|timed| match &timed.event {
            Event::Lost(lost) => {
                lost_again += lost.records;
                false
            }
            _ => true,
        });
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let newer = std::mem::take(&mut *pending);
        batch.extend(newer);
        let overflow = batch.len().saturating_sub(self.capacity);
        batch.truncate(self.capacity);
        *pending = batch;
        drop(pending);
        self.lost
            .fetch_add(lost_again + overflow as u64, Ordering::Relaxed);
        self.lost_total
            .fetch_add(overflow as u64, Ordering::Relaxed);
    }

    /// Notes that `count` function records reached the store.
    pub fn written(&self, count: usize) {
        self.written_total
            .fetch_add(count as u64, Ordering::Relaxed);
    }

    /// Records waiting to be written now.
    pub fn backlog(&self) -> usize {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Records dropped since the node started.
    pub fn lost_total(&self) -> u64 {
        self.lost_total.load(Ordering::Relaxed)
    }

    /// Function records written since the node started.
    pub fn written_total(&self) -> u64 {
        self.written_total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::OpOutcome;

    fn event(request: u64) -> FunctionEvent {
        FunctionEvent {
            function: "f".into(),
            request,
            binding: "b".into(),
            secret: None,
            version: None,
            operation: "get".into(),
            outcome: OpOutcome::NotGranted,
            destination: None,
            reason: None,
        }
    }

    fn requests(batch: &[Timed]) -> Vec<u64> {
        batch
            .iter()
            .filter_map(|t| match &t.event {
                Event::Function(e) => Some(e.request),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_full_queue_counts_what_it_drops_and_the_batch_says_so() {
        let trail = FunctionTrail::with_capacity(3);
        for request in 1..=5 {
            trail.record(event(request));
        }
        assert_eq!(trail.backlog(), 3);
        let batch = trail.take_batch();
        assert_eq!(requests(&batch), [1, 2, 3]);
        assert_eq!(
            batch.last().unwrap().event,
            Event::Lost(super::super::LostEvent { records: 2 })
        );
        assert_eq!(trail.lost_total(), 2);
        assert!(trail.take_batch().is_empty(), "the loss is reported once");
    }

    #[test]
    fn a_failed_batch_goes_back_ahead_of_newer_records() {
        let trail = FunctionTrail::with_capacity(4);
        trail.record(event(1));
        trail.record(event(2));
        let batch = trail.take_batch();
        trail.record(event(3));
        trail.record(event(4));
        trail.record(event(5));
        trail.restore(batch);
        let again = trail.take_batch();
        assert_eq!(requests(&again), [1, 2, 3, 4]);
        assert_eq!(
            again.last().unwrap().event,
            Event::Lost(super::super::LostEvent { records: 1 }),
            "the record that no longer fits is reported lost"
        );
    }
}
