//! A request body that must keep arriving: the floor under how slowly a
//! client may send it.
//!
//! Invariant: a request whose body is being waited for does not hold its
//! instance slot longer than [`BODY_GRACE`] plus one second for every
//! [`BODY_FLOOR_BYTES_PER_SEC`] bytes that arrived. Only time spent waiting
//! on the client counts (a guest that does not read its body, or reads it
//! slowly, is not the client's fault), so an honest client on a slow link
//! gets its grace, and one that sends headers and then dribbles the body
//! (to pin an instance for the function's whole timeout) is ended with 408.
//! No single wait may last longer than [`BODY_MAX_STALL`] either, so a fast
//! start does not buy a long stall.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// How long a body may be waited for before the floor rate applies.
pub(crate) const BODY_GRACE: Duration = Duration::from_secs(5);
/// The slowest average rate a body may arrive at, past the grace.
pub(crate) const BODY_FLOOR_BYTES_PER_SEC: u64 = 1024;
/// The longest one wait for the next piece of a body may last, whatever
/// arrived before: credit from a fast start does not buy a stall.
pub(crate) const BODY_MAX_STALL: Duration = Duration::from_secs(10);
/// How often a waiting body's pace is checked.
pub(crate) const PACE_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// How a body has arrived so far.
#[derive(Debug, Default)]
struct PaceState {
    /// Since when the reader has been waiting for the client, if it is.
    waiting_since: Option<Instant>,
    /// Time spent waiting for the client before that.
    waited: Duration,
    /// Bytes that arrived.
    bytes: u64,
    /// The body ended (or failed): nothing more to wait for.
    done: bool,
}

/// Shared between a [`PacedBody`] and whoever watches it.
#[derive(Debug, Default)]
pub(crate) struct Pace(Mutex<PaceState>);

impl Pace {
    fn update(&self, change: impl FnOnce(&mut PaceState)) {
        change(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Whether the client has been waited for longer than its bytes earn.
    pub(crate) fn too_slow(&self, now: Instant) -> bool {
        let state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if state.done {
            return false;
        }
        let stalled = state
            .waiting_since
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        if stalled > BODY_MAX_STALL {
            return true;
        }
        let waited = state.waited + stalled;
        let earned = BODY_GRACE
            + Duration::from_secs_f64(state.bytes as f64 / BODY_FLOOR_BYTES_PER_SEC as f64);
        waited > earned
    }

    /// Whether the body has been read to its end.
    pub(crate) fn is_done(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).done
    }

    /// Resolves once the body is [`Pace::too_slow`]; never, if it ends.
    pub(crate) async fn until_too_slow(&self) {
        loop {
            tokio::time::sleep(PACE_CHECK_INTERVAL).await;
            if self.is_done() {
                return std::future::pending().await;
            }
            if self.too_slow(Instant::now()) {
                return;
            }
        }
    }
}

/// `inner`, with how fast it arrives recorded in a [`Pace`].
#[derive(Debug)]
pub(crate) struct PacedBody<B> {
    inner: B,
    pace: Arc<Pace>,
}

impl<B: Body> PacedBody<B> {
    /// Wraps `inner`; the returned [`Pace`] watches it.
    pub(crate) fn new(inner: B) -> (Self, Arc<Pace>) {
        let pace = Arc::new(Pace::default());
        if inner.is_end_stream() {
            pace.update(|state| state.done = true);
        }
        (
            Self {
                inner,
                pace: Arc::clone(&pace),
            },
            pace,
        )
    }
}

impl<B> Body for PacedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let now = Instant::now();
        this.pace.update(|state| {
            let stop_waiting = |state: &mut PaceState| {
                if let Some(since) = state.waiting_since.take() {
                    state.waited += now.saturating_duration_since(since);
                }
            };
            match &polled {
                Poll::Pending => {
                    state.waiting_since.get_or_insert(now);
                }
                Poll::Ready(Some(Ok(frame))) => {
                    stop_waiting(state);
                    state.bytes += frame.data_ref().map_or(0, |data| data.len() as u64);
                }
                Poll::Ready(_) => {
                    stop_waiting(state);
                    state.done = true;
                }
            }
        });
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_time_waiting_on_the_client_counts_against_what_its_bytes_earn() {
        let pace = Pace::default();
        let start = Instant::now();
        pace.update(|s| s.waiting_since = Some(start));
        assert!(!pace.too_slow(start + BODY_GRACE));
        assert!(pace.too_slow(start + BODY_GRACE + Duration::from_millis(10)));
        // 10 KiB earn ten more seconds.
        pace.update(|s| {
            s.bytes = 10 * 1024;
        });
        assert!(!pace.too_slow(start + BODY_GRACE + Duration::from_secs(4)));
        // But no single wait may outlast the stall limit.
        assert!(pace.too_slow(start + BODY_MAX_STALL + Duration::from_millis(10)));
        pace.update(|s| {
            s.waiting_since = None;
            s.waited = Duration::from_secs(9);
            s.bytes = 300 * 1024;
        });
        pace.update(|s| s.waiting_since = Some(start));
        assert!(!pace.too_slow(start + Duration::from_secs(9)));
        assert!(pace.too_slow(start + Duration::from_secs(11)));
        // Not waiting (the guest is busy): the clock stops.
        pace.update(|s| {
            s.waiting_since = None;
            s.waited = Duration::from_secs(1);
        });
        assert!(!pace.too_slow(start + Duration::from_secs(3600)));
        pace.update(|s| s.done = true);
        assert!(pace.is_done());
    }
}
