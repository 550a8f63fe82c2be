//! Function records on their way to the audit trail.
//!
//! The request path only pushes a record onto a bounded in-memory queue; a
//! background thread writes the queue to the store in batches, and is woken
//! early when a queue fills past half its capacity (a function calling
//! secrets in a tight loop makes millions of records a second, more than a
//! queue holds between two timed batches).
//!
//! Back-pressure falls on the request that causes it, never on its
//! neighbours: a record that leaves its queue past half full returns
//! [`Pressure::Behind`], and that request waits — asynchronously, at its
//! next epoch tick, its worker serving other requests meanwhile — until
//! the writer has taken a batch ([`FunctionTrail::batch_taken_after`]). So
//! a function flooding the trail slows itself down to the store's pace
//! rather than pushing records out, and cannot hide what it did in a gap.
//! A record that still finds its queue full (a request outrunning even
//! that) waits for the writer (at most [`MAX_WAIT_FOR_WRITER`]) after
//! handing its worker's other tasks to another thread. When
//! the store fails, or the writer does not take the queue in time, new
//! records on a full queue are counted and dropped without waiting until a
//! batch is written again: an audit outage must not become an outage of
//! every function. The trail then carries a [`super::LostEvent`] with the
//! count, the node logs it, and `/metrics` shows it.

use super::{Event, FunctionEvent, Timed, coarse_now_ms, now_ms};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::Thread;
use std::time::Duration;
use tokio::sync::Notify;

/// How many function records may wait for the writer in each shard by
/// default.
pub const DEFAULT_CAPACITY: usize = 16 * 1024;
/// How long a record that finds its queue full waits for a working writer
/// to take the queue before it is dropped. A healthy writer's batch takes
/// milliseconds; this bounds the pause when it is stuck without being
/// known to fail (one such pause, then no waiting until a batch is written).
pub const MAX_WAIT_FOR_WRITER: Duration = Duration::from_millis(500);
/// How many independent queues records are spread over: each thread pushes
/// to its own, so worker threads on different cores never contend for one
/// lock or cache line.
const SHARDS: usize = 8;
/// How many emptied queues are kept for reuse: one per shard and one for
/// merging them.
const MAX_SPARES: usize = SHARDS + 1;

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The shard this thread pushes to.
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

/// One queue, alone on its cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    pending: Mutex<Vec<Timed>>,
    /// Signalled when the writer takes the queue, for a record waiting for
    /// room.
    emptied: Condvar,
}

impl Shard {
    fn lock(&self) -> MutexGuard<'_, Vec<Timed>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The queue of function records not yet written.
#[derive(Debug)]
pub struct FunctionTrail {
    shards: [Shard; SHARDS],
    /// Emptied queues, their memory kept: a fresh queue of thousands of
    /// records is fresh memory the kernel must fault in and zero, on the
    /// request path as it fills and on the writer as it merges.
    spares: Mutex<Vec<Vec<Timed>>>,
    /// The writer thread, to wake when a queue is half full.
    writer: OnceLock<Thread>,
    capacity: usize,
    /// How long a record waits for room in a full queue.
    max_wait: Duration,
    /// Set when a batch failed or a wait for room timed out, cleared when a
    /// batch is written: while set, records on a full queue do not wait.
    stalled: AtomicBool,
    lost: AtomicU64,
    lost_total: AtomicU64,
    written_total: AtomicU64,
    /// Batches the writer has taken.
    batches: AtomicU64,
    /// Signalled whenever the writer takes a batch.
    batch_taken: Notify,
}

/// What a request should do after queueing a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pressure {
    /// Nothing: the queue has room.
    Room,
    /// Wait, at its next pause, until the writer has taken a batch after
    /// the one counted here (see [`FunctionTrail::batch_taken_after`]): its
    /// queue is past half full.
    Behind {
        /// Batches taken when the record was queued.
        batches: u64,
    },
}

/// Asks the CPU to fetch, for writing, the queue slot the next record
/// will fill. A queue's memory was last touched a batch ago and is cold by
/// now: without this, the next push's stores miss, and releasing the
/// shard's lock (a full barrier on x86-64) waits for those misses, which
/// was most of what queueing a record cost under load. The next record
/// comes microseconds later, by which time the lines are in cache.
fn prefetch_next_slot(queue: &Vec<Timed>) {
    #[cfg(target_arch = "x86_64")]
    if queue.len() < queue.capacity() {
        use std::arch::x86_64::{_MM_HINT_ET0, _mm_prefetch};
        let next = queue.as_ptr().wrapping_add(queue.len()).cast::<i8>();
        for offset in (0..std::mem::size_of::<Timed>()).step_by(64) {
            // SAFETY: a prefetch is only a hint: it reads nothing into the
            // program and cannot fault, whatever the address (this one is
            // inside the queue's allocation), and SSE, which it needs, is
            // part of every x86-64 CPU.
            unsafe { _mm_prefetch::<_MM_HINT_ET0>(next.wrapping_add(offset)) };
        }
    }
}

/// Runs `wait`, which blocks, telling a multi-threaded tokio runtime first
/// so that the worker's other tasks move to another thread: the wait falls
/// on the request that makes it, not on its worker's neighbours.
fn off_the_worker<T>(wait: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

impl Default for FunctionTrail {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl FunctionTrail {
    /// A queue holding at most `capacity` records per shard (per thread,
    /// up to eight threads).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            shards: Default::default(),
            spares: Mutex::default(),
            writer: OnceLock::new(),
            capacity,
            max_wait: MAX_WAIT_FOR_WRITER,
            stalled: AtomicBool::new(false),
            lost: AtomicU64::new(0),
            lost_total: AtomicU64::new(0),
            written_total: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batch_taken: Notify::new(),
        }
    }

    /// The same trail, with records on a full queue waiting at most
    /// `max_wait` for the writer instead of [`MAX_WAIT_FOR_WRITER`].
    pub fn waiting_at_most(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    fn own_shard(&self) -> &Shard {
        &self.shards[SHARD.with(|s| *s)]
    }

    /// Queues `event` and says whether the request that made it should
    /// slow down. On a full queue it waits for a working writer to take
    /// the queue (its worker's other tasks handed to another thread
    /// meanwhile), or counts the record as lost when there is none.
    pub fn record(&self, event: FunctionEvent) -> Pressure {
        let timed = Timed {
            at_ms: coarse_now_ms(),
            event: Event::Function(event),
        };
        let shard = self.own_shard();
        let mut pending = shard.lock();
        if pending.len() >= self.capacity {
            drop(pending);
            match off_the_worker(|| self.wait_for_room(shard)) {
                Some(emptied) => pending = emptied,
                None => {
                    self.lost.fetch_add(1, Ordering::Relaxed);
                    self.lost_total.fetch_add(1, Ordering::Relaxed);
                    return self.behind();
                }
            }
        }
        pending.push(timed);
        let queued = pending.len();
        prefetch_next_slot(&pending);
        drop(pending);
        if queued == self.capacity / 2
            && let Some(writer) = self.writer.get()
        {
            writer.unpark();
        }
        if queued >= self.capacity / 2 {
            self.behind()
        } else {
            Pressure::Room
        }
    }

    fn behind(&self) -> Pressure {
        Pressure::Behind {
            batches: self.batches.load(Ordering::Acquire),
        }
    }

    /// Completes once the writer has taken more than `batches` batches
    /// (what [`Pressure::Behind`] carried), at once if it already has.
    pub async fn batch_taken_after(&self, batches: u64) {
        loop {
            // Created before the check: a batch taken in between still
            // wakes it.
            let taken = self.batch_taken.notified();
            if self.batches.load(Ordering::Acquire) > batches {
                return;
            }
            taken.await;
        }
    }

    /// Waits until the writer takes `shard`'s full queue, if a writer is
    /// working; `None` when the record must be dropped instead.
    #[cold]
    fn wait_for_room<'a>(&self, shard: &'a Shard) -> Option<MutexGuard<'a, Vec<Timed>>> {
        let pending = shard.lock();
        if pending.len() < self.capacity {
            return Some(pending);
        }
        let writer = self.writer.get()?;
        if self.stalled.load(Ordering::Relaxed) {
            return None;
        }
        writer.unpark();
        let (pending, _) = shard
            .emptied
            .wait_timeout_while(pending, self.max_wait, |pending| {
                pending.len() >= self.capacity
            })
            .unwrap_or_else(|p| p.into_inner());
        if pending.len() < self.capacity {
            return Some(pending);
        }
        self.stalled.store(true, Ordering::Relaxed);
        None
    }

    /// Makes `writer` the thread to unpark when a queue fills to half its
    /// capacity, so it can write the queue before it overflows. The first
    /// call wins.
    pub fn wake_when_filling(&self, writer: Thread) {
        let _ = self.writer.set(writer);
    }

    /// Takes everything queued, in time order, followed by a record of how
    /// many were lost since the last batch, if any. Hand the batch back
    /// with [`Self::recycle`] once written.
    pub fn take_batch(&self) -> Vec<Timed> {
        let mut taken = Vec::new();
        for shard in &self.shards {
            let queued = shard.lock().len();
            if queued == 0 {
                continue;
            }
            // The next round starts with room for at least as many records
            // as this one had, so pushing on the request path rarely grows
            // a queue.
            let room = self.spare(queued);
            taken.push(std::mem::replace(&mut *shard.lock(), room));
            shard.emptied.notify_all();
        }
        self.batches.fetch_add(1, Ordering::Release);
        self.batch_taken.notify_waiters();
        let mut batch = match taken.len() {
            0 => Vec::new(),
            1 => taken.pop().unwrap_or_default(),
            _ => {
                let mut merged = self.spare(taken.iter().map(Vec::len).sum());
                for mut queue in taken {
                    merged.append(&mut queue);
                    self.recycle(queue);
                }
                merged
            }
        };
        // Each shard is in order; a stable sort merges them. (It needs
        // scratch memory as large as the batch: skip it when one thread's
        // records, already in order, are all there is.)
        if !batch.is_sorted_by_key(|timed| timed.at_ms) {
            batch.sort_by_key(|timed| timed.at_ms);
        }
        let lost = self.lost.swap(0, Ordering::Relaxed);
        if lost > 0 {
            batch.push(Timed {
                at_ms: now_ms(),
                event: Event::Lost(super::LostEvent { records: lost }),
            });
        }
        batch
    }

    /// Replaces `batch`'s function records with one `lost` record counting
    /// them (added to any it already has), and counts them as lost; returns
    /// how many there were. For a writer that may not write them (the disk
    /// reserve), so the trail still says that records were dropped.
    pub fn drop_function_records(&self, batch: &mut Vec<Timed>) -> u64 {
        let mut dropped = 0u64;
        let mut lost_before = 0u64;
        batch.retain(|timed| match &timed.event {
            Event::Function(_) => {
                dropped += 1;
                false
            }
            Event::Lost(lost) => {
                lost_before += lost.records;
                false
            }
            _ => true,
        });
        if dropped + lost_before > 0 {
            batch.push(Timed {
                at_ms: now_ms(),
                event: Event::Lost(super::LostEvent {
                    records: dropped + lost_before,
                }),
            });
        }
        self.lost_total.fetch_add(dropped, Ordering::Relaxed);
        dropped
    }

    /// Takes back a written batch's memory for the queues to reuse.
    pub fn recycle(&self, mut batch: Vec<Timed>) {
        batch.clear();
        if batch.capacity() == 0 || batch.capacity() > self.capacity {
            return;
        }
        let mut spares = self.spares.lock().unwrap_or_else(|p| p.into_inner());
        if spares.len() < MAX_SPARES {
            spares.push(batch);
        }
    }

    /// An empty queue with room for `records`, reusing a spare's memory
    /// when one is big enough.
    fn spare(&self, records: usize) -> Vec<Timed> {
        let mut spares = self.spares.lock().unwrap_or_else(|p| p.into_inner());
        match spares.iter().position(|spare| spare.capacity() >= records) {
            Some(i) => spares.swap_remove(i),
            None => {
                drop(spares);
                Vec::with_capacity(records)
            }
        }
    }

    /// Puts back a batch whose write failed, ahead of newer records, as far
    /// as the capacity allows; the rest count as lost. Until a batch is
    /// written, records on a full queue do not wait.
    pub fn restore(&self, mut batch: Vec<Timed>) {
        self.stalled.store(true, Ordering::Relaxed);
        let mut lost_again = 0u64;
        batch.retain(|timed| match &timed.event {
            Event::Lost(lost) => {
                lost_again += lost.records;
                false
            }
            _ => true,
        });
        let mut pending = self.own_shard().lock();
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

    /// Notes that `count` function records reached the store: the writer
    /// works, so records on a full queue may wait for it again.
    pub fn written(&self, count: usize) {
        self.stalled.store(false, Ordering::Relaxed);
        self.written_total
            .fetch_add(count as u64, Ordering::Relaxed);
    }

    /// Records waiting to be written now.
    pub fn backlog(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().len()).sum()
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

    fn event(request: u64) -> FunctionEvent {
        FunctionEvent::example("f", request)
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
    fn a_written_batch_lends_its_memory_to_the_queues() {
        let trail = FunctionTrail::with_capacity(64);
        for request in 1..=40 {
            trail.record(event(request));
        }
        let batch = trail.take_batch();
        assert_eq!(requests(&batch), (1..=40).collect::<Vec<_>>());
        let memory = batch.as_ptr();
        trail.recycle(batch);
        // The queue taken next is replaced by the recycled one, which the
        // request path then fills.
        trail.record(event(41));
        assert_eq!(requests(&trail.take_batch()), [41]);
        trail.record(event(42));
        let filled = trail.take_batch();
        assert_eq!(requests(&filled), [42]);
        assert_eq!(
            filled.as_ptr(),
            memory,
            "the queue reused the written batch"
        );
        // A batch larger than a queue may grow is let go.
        trail.recycle(Vec::with_capacity(65));
        assert!(
            trail
                .spares
                .lock()
                .unwrap()
                .iter()
                .all(|spare| spare.capacity() <= 64)
        );
        // An idle round takes nothing and leaves the spares be.
        trail.recycle(filled);
        assert_eq!(trail.spares.lock().unwrap().len(), 1);
        assert!(trail.take_batch().is_empty());
        assert_eq!(trail.spares.lock().unwrap().len(), 1);
    }

    #[test]
    fn queues_of_several_threads_merge_in_time_order() {
        let trail = std::sync::Arc::new(FunctionTrail::with_capacity(64));
        let pushed: Vec<_> = (0..3u64)
            .map(|thread| {
                let trail = std::sync::Arc::clone(&trail);
                std::thread::spawn(move || {
                    for i in 0..5 {
                        trail.record(event(thread * 100 + i));
                    }
                })
            })
            .collect();
        for thread in pushed {
            thread.join().unwrap();
        }
        let batch = trail.take_batch();
        assert_eq!(batch.len(), 15);
        assert!(batch.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        let mut seen = requests(&batch);
        seen.sort_unstable();
        let mut expected: Vec<u64> = (0..3)
            .flat_map(|t| (0..5).map(move |i| t * 100 + i))
            .collect();
        expected.sort_unstable();
        assert_eq!(seen, expected);
        trail.recycle(batch);
        assert!(!trail.spares.lock().unwrap().is_empty());
    }

    /// Runs `work` on a thread that stands in for the writer (the thread
    /// the trail wakes), once that thread is registered as such.
    fn spawn_writer<T: Send + 'static>(
        trail: &std::sync::Arc<FunctionTrail>,
        work: impl FnOnce(&FunctionTrail) -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let (ready, is_ready) = std::sync::mpsc::channel();
        let trail = std::sync::Arc::clone(trail);
        let writer = std::thread::spawn(move || {
            trail.wake_when_filling(std::thread::current());
            ready.send(()).unwrap();
            work(&trail)
        });
        is_ready.recv().unwrap();
        writer
    }

    #[test]
    fn a_queue_filling_up_wakes_the_writer_early() {
        let trail = std::sync::Arc::new(FunctionTrail::with_capacity(100));
        let (woke, wakes) = std::sync::mpsc::channel();
        let writer = spawn_writer(&trail, move |_| {
            // Parks until the queue is half full (or a minute passes).
            std::thread::park_timeout(std::time::Duration::from_secs(60));
            woke.send(()).unwrap();
        });
        for request in 1..50 {
            trail.record(event(request));
        }
        assert!(
            wakes
                .recv_timeout(std::time::Duration::from_millis(200))
                .is_err(),
            "49 of 100 is not half full"
        );
        trail.record(event(50));
        wakes
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the 50th record wakes the writer");
        writer.join().unwrap();
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

    #[test]
    fn a_record_on_a_full_queue_waits_for_the_writer_to_take_it() {
        let trail = std::sync::Arc::new(FunctionTrail::with_capacity(4));
        let writer = spawn_writer(&trail, |trail| {
            while trail.backlog() < 4 {
                std::thread::park_timeout(std::time::Duration::from_millis(1));
            }
            // Slow, as a commit on a busy disk is.
            std::thread::sleep(std::time::Duration::from_millis(50));
            let batch = trail.take_batch();
            trail.written(batch.len());
            batch
        });
        for request in 1..=5 {
            trail.record(event(request));
        }
        let first = writer.join().unwrap();
        assert_eq!(requests(&first), [1, 2, 3, 4]);
        assert_eq!(
            requests(&trail.take_batch()),
            [5],
            "the fifth record waited for room instead of being dropped"
        );
        assert_eq!(trail.lost_total(), 0);
    }

    #[test]
    fn a_writer_that_does_not_take_the_queue_in_time_stops_records_waiting() {
        let trail = std::sync::Arc::new(
            FunctionTrail::with_capacity(2).waiting_at_most(std::time::Duration::from_millis(20)),
        );
        // A writer that never takes the queue.
        let idle = spawn_writer(&trail, |_| std::thread::park());
        for request in 1..=4 {
            trail.record(event(request));
        }
        assert_eq!(trail.lost_total(), 2);
        assert!(trail.stalled.load(Ordering::Relaxed));
        let batch = trail.take_batch();
        assert_eq!(requests(&batch), [1, 2]);
        trail.written(2);
        assert!(
            !trail.stalled.load(Ordering::Relaxed),
            "a written batch lets records wait again"
        );
        idle.thread().unpark();
        idle.join().unwrap();
    }

    #[test]
    fn while_the_store_fails_a_full_queue_drops_without_waiting() {
        let trail = std::sync::Arc::new(
            FunctionTrail::with_capacity(2).waiting_at_most(std::time::Duration::from_secs(30)),
        );
        // A writer that never takes the queue.
        let idle = spawn_writer(&trail, |_| std::thread::park());
        trail.record(event(1));
        trail.record(event(2));
        let failed = trail.take_batch();
        trail.restore(failed);
        let started = std::time::Instant::now();
        trail.record(event(3));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "a record waited for a writer whose last batch failed"
        );
        assert_eq!(trail.lost_total(), 1);
        assert_eq!(requests(&trail.take_batch()), [1, 2]);
        idle.thread().unpark();
        idle.join().unwrap();
    }

    #[test]
    fn past_half_full_the_request_is_told_to_wait_for_the_next_batch() {
        let trail = std::sync::Arc::new(FunctionTrail::with_capacity(4));
        assert_eq!(trail.record(event(1)), Pressure::Room);
        let Pressure::Behind { batches } = trail.record(event(2)) else {
            panic!("half full and not behind");
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let waiting = {
            let trail = std::sync::Arc::clone(&trail);
            runtime.spawn(async move { trail.batch_taken_after(batches).await })
        };
        runtime.block_on(async { tokio::time::sleep(std::time::Duration::from_millis(20)).await });
        assert!(!waiting.is_finished(), "done before any batch was taken");
        trail.take_batch();
        runtime
            .block_on(async {
                tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await
            })
            .expect("the wait ends when a batch is taken")
            .unwrap();
    }

    /// Issue 24 §3: a record waiting for room on a full queue used to hold
    /// its worker thread, and every request queued on that worker with it.
    #[test]
    fn a_record_waiting_for_room_does_not_hold_its_workers_other_tasks() {
        let trail = std::sync::Arc::new(FunctionTrail::with_capacity(2));
        let writer = spawn_writer(&trail, |trail| {
            while trail.backlog() < 2 {
                std::thread::park_timeout(std::time::Duration::from_millis(1));
            }
            // Slow, but within the 500 ms a record waits.
            std::thread::sleep(std::time::Duration::from_millis(300));
            let batch = trail.take_batch();
            trail.written(batch.len());
            batch
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .unwrap();
        let started = std::time::Instant::now();
        let neighbour_done = runtime.block_on(async {
            let flooder = {
                let trail = std::sync::Arc::clone(&trail);
                tokio::spawn(async move {
                    for request in 1..=3 {
                        trail.record(event(request));
                    }
                })
            };
            // Queued behind the flooder on the one worker.
            let neighbour = tokio::spawn(async move { std::time::Instant::now() });
            let done = neighbour.await.unwrap();
            flooder.await.unwrap();
            done
        });
        writer.join().unwrap();
        assert!(
            neighbour_done - started < std::time::Duration::from_millis(200),
            "the neighbour waited {:?} for the flooder's record",
            neighbour_done - started
        );
        assert_eq!(trail.lost_total(), 0);
    }
}
