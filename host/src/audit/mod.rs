//! The audit trail: one record for every secret operation a function
//! attempts and every admin action, never a value, chained so that an
//! edited, deleted, reordered or inserted record is detected.
//!
//! Records live in the store ([`crate::store::AuditLog`]: each backend
//! appends, queries and verifies them). Each carries a MAC over its content
//! and the previous record's MAC ([`chain`]), keyed with a random key kept
//! sealed under the master key, so someone who can edit the database file
//! cannot recompute the chain after changing it. Function records are
//! queued on the request path and written in batches ([`trail`]); admin
//! records are written in the same transaction as the change they describe.

pub mod chain;
pub mod disk_reserve;
pub mod run;
pub mod trail;

use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Milliseconds since the Unix epoch: audit records are stamped this finely
/// (function records with [`coarse_now_ms`]).
pub type Millis = i64;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

/// Milliseconds since the Unix epoch as of the kernel's last clock tick:
/// at most one tick (1–4 ms, by the kernel's configuration) behind
/// [`now_ms`], and read in a few nanoseconds rather than tens. Function
/// records are stamped on the request path, once per secret call, so they
/// use this; records stay in their order whatever their stamps.
#[cfg(target_os = "linux")]
pub fn coarse_now_ms() -> Millis {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // Through the C library, which reads the vDSO itself: rustix's own vDSO
    // reader trusts the address the auxiliary vector gives, which under
    // valgrind is not mapped, so the first secret call faulted there.
    // SAFETY: `now` is a valid, writable `timespec` for the whole call, and
    // the clock id is a constant the kernel knows (Linux ≥ 2.6.32).
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut now) } != 0 {
        return now_ms();
    }
    // `time_t` and `c_long` are 32 bits wide on some Linux targets.
    #[allow(
        clippy::unnecessary_cast,
        reason = "a no-op where time_t and c_long are 64 bits, needed where they are 32"
    )]
    let (seconds, nanos) = (now.tv_sec as Millis, now.tv_nsec as Millis);
    seconds * 1000 + nanos / 1_000_000
}

/// [`now_ms`], where the kernel offers no cheaper coarse clock.
#[cfg(not(target_os = "linux"))]
pub fn coarse_now_ms() -> Millis {
    now_ms()
}

/// A time in seconds since the epoch as RFC 3339 UTC, for messages.
pub fn format_time(at: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(at.max(0) as u64),
    )
    .to_string()
}

/// What happened, as one audit record tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Event {
    /// A function called a `keyhole:secrets` operation.
    Function(FunctionEvent),
    /// Someone used the admin API or the CLI on the data directory.
    Admin(Box<AdminEvent>),
    /// Function records the node could not write because the trail fell
    /// behind (see [`trail::FunctionTrail`]): the trail says so itself.
    Lost(LostEvent),
    /// The store's head did not match the trail's last record when the next
    /// record was written: records were cut off the end (or the head was
    /// edited). Written instead of silently going on, so the evidence
    /// stays in the chain; `audit verify` fails at this record for good.
    Cut(CutEvent),
}

impl Event {
    /// The function a record is about, for filtering.
    pub fn function(&self) -> Option<&str> {
        match self {
            Event::Function(e) => Some(&e.function),
            Event::Admin(e) => e.function.as_deref(),
            Event::Lost(_) | Event::Cut(_) => None,
        }
    }

    /// The secret a record is about, for filtering.
    pub fn secret(&self) -> Option<&str> {
        match self {
            Event::Function(e) => e.secret.as_deref(),
            Event::Admin(e) => e.secret.as_deref(),
            Event::Lost(_) | Event::Cut(_) => None,
        }
    }

    /// The record's kind as stored in its own column.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Function(_) => "function",
            Event::Admin(_) => "admin",
            Event::Lost(_) => "lost",
            Event::Cut(_) => "cut",
        }
    }
}

/// How a function's secret operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpOutcome {
    /// The grant allowed it and the host did it.
    Allowed,
    /// The binding is granted, but not for this operation (or toward this
    /// host, for injection).
    Denied,
    /// The function has no grant for the binding.
    NotGranted,
    /// The binding's secret has no usable version.
    Unavailable,
    /// The call was refused for its arguments (name too long, too many
    /// handles, a key of the wrong kind, a ciphertext that does not open).
    Invalid,
}

impl OpOutcome {
    /// The outcome's name, as in records and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            OpOutcome::Allowed => "allowed",
            OpOutcome::Denied => "denied",
            OpOutcome::NotGranted => "not-granted",
            OpOutcome::Unavailable => "unavailable",
            OpOutcome::Invalid => "invalid",
        }
    }

    /// Whether the grants refused the call.
    pub fn is_denial(self) -> bool {
        matches!(self, OpOutcome::Denied | OpOutcome::NotGranted)
    }
}

/// One secret operation by a function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionEvent {
    /// The function.
    pub function: Arc<str>,
    /// The node's id of the request (sent back as `keyhole-request-id`).
    pub request: u64,
    /// The binding the function named (escaped; over-long names are
    /// replaced by their length).
    pub binding: Arc<str>,
    /// The secret the binding resolved to, when it is granted.
    pub secret: Option<Arc<str>>,
    /// The version used, when one was.
    pub version: Option<u32>,
    /// The operation, as the WIT names it (`get`, `hmac-sha256`, ...), or
    /// `inject` for a token substituted into an outgoing request.
    pub operation: std::borrow::Cow<'static, str>,
    /// How it ended.
    pub outcome: OpOutcome,
    /// For `inject`: the host the request was bound for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// Why it was refused, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The SHA-256 of the component the operation ran under (records
    /// written before grants were bound to components have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Arc<str>>,
}

#[cfg(test)]
impl FunctionEvent {
    /// A refused `get` of binding `b` by `function`, for tests.
    pub(crate) fn example(function: &str, request: u64) -> Self {
        FunctionEvent {
            function: function.into(),
            request,
            binding: "b".into(),
            secret: None,
            version: None,
            operation: "get".into(),
            outcome: OpOutcome::NotGranted,
            destination: None,
            reason: None,
            digest: Some("d1".into()),
        }
    }
}

/// One admin action, by a token or by the local operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminEvent {
    /// The token's name, or `local` for the CLI on the data directory.
    pub token: String,
    /// The caller's role.
    pub role: String,
    /// What was asked, e.g. `secret.put`.
    pub action: String,
    /// What it was asked of, e.g. `secret/gh-webhook`.
    pub target: String,
    /// The function it concerns, if any (for filtering).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// The secret it concerns, if any (for filtering).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// `ok`, `denied` or `failed`.
    pub outcome: String,
    /// Why it was denied or failed; for some actions that succeeded, what
    /// they carried over (an import names the head of the trail it
    /// brought).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Function records a node could not write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostEvent {
    /// How many records were dropped since the last report.
    pub records: u64,
}

/// The trail was found cut (see [`Event::Cut`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CutEvent {
    /// The last record still there when the cut was found.
    pub after_seq: u64,
}

/// A record as stored: its place in the chain, its time and what happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the chain, from 1, without gaps.
    pub seq: u64,
    /// When it happened, in milliseconds since the epoch.
    pub at_ms: Millis,
    /// In a fleet's merged trail, the node whose chain holds it (`seq` is
    /// its place in that node's chain); absent in a single store's trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}

/// A record waiting to be appended: when and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timed {
    /// When it happened.
    pub at_ms: Millis,
    /// What happened.
    pub event: Event,
}

/// Which records `keyhole audit` lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    /// Only records about this function.
    #[serde(default)]
    pub function: Option<String>,
    /// Only records about this secret.
    #[serde(default)]
    pub secret: Option<String>,
    /// Only records at or after this time (milliseconds since the epoch).
    #[serde(default)]
    pub since_ms: Option<Millis>,
    /// At most this many, the most recent.
    #[serde(default)]
    pub limit: Option<u32>,
}

/// The most records one query returns.
pub const MAX_QUERY_RECORDS: u32 = 100_000;

/// What `keyhole audit verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// How many records were checked.
    pub records: u64,
    /// The last record's sequence number and MAC (hex): write it down
    /// somewhere else to detect a later truncation of the trail.
    pub head: Option<(u64, String)>,
    /// The first record that fails, if any.
    pub first_bad: Option<Tampered>,
    /// The records retention removed before the first one checked, if any
    /// (verification started from their signed checkpoint).
    #[serde(default)]
    pub pruned: Option<Pruned>,
    /// In a fleet: each node's chain as the fleet's audit stream holds it,
    /// verified apart (the fields above are about this store's own chain).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeVerification>,
}

impl Verification {
    /// The first bad record anywhere: this store's chain first, then each
    /// node's in the fleet, with the node it is in (`None`: this store).
    pub fn first_bad_anywhere(&self) -> Option<(Option<&str>, &Tampered)> {
        if let Some(bad) = &self.first_bad {
            return Some((None, bad));
        }
        self.nodes.iter().find_map(|node| {
            node.verification
                .first_bad
                .as_ref()
                .map(|bad| (Some(node.node.as_str()), bad))
        })
    }
}

/// One node's chain in a fleet's audit stream, verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeVerification {
    /// The node's id (its subject in the stream).
    pub node: String,
    /// What its chain verified to.
    pub verification: Verification,
}

/// The prefix of the trail that retention removed, as its signed
/// checkpoint states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pruned {
    /// Records 1 to this one are gone.
    pub through_seq: u64,
    /// The newest removed record's time.
    pub through_ms: Millis,
    /// When pruning last ran.
    pub pruned_at_ms: Millis,
}

/// What one pruning did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    /// Records removed by this pruning.
    pub removed: u64,
    /// Everything removed so far (by this pruning and earlier ones).
    pub pruned: Option<Pruned>,
}

/// The first record that does not verify, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tampered {
    /// Its sequence number (where the chain first breaks).
    pub seq: u64,
    /// What is wrong.
    pub problem: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coarse_clock_is_milliseconds_at_most_a_little_behind() {
        let coarse = coarse_now_ms();
        let precise = now_ms();
        // A tick is 1–4 ms; the bound leaves room for a preempted test
        // thread, and still fails on a unit slip (seconds, microseconds).
        assert!(
            coarse <= precise && precise - coarse < 1_000,
            "coarse {coarse} ms, precise {precise} ms"
        );
    }

    #[test]
    fn a_queued_record_is_no_larger_than_a_function_record_needs() {
        // Every secret call copies one record into a queue whose memory is
        // cold by then: each cache line it spans is a miss on the request
        // path. The rare admin records are boxed so they do not set the
        // size of every function record.
        let function = std::mem::size_of::<FunctionEvent>();
        let queued = std::mem::size_of::<Timed>();
        assert!(
            queued <= function + 16,
            "a queued record takes {queued} bytes for a {function}-byte function record"
        );
    }
}
