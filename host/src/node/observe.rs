//! What a node tells about itself: Prometheus metrics, and the function
//! side of the audit trail, fed from the request path.
//!
//! Everything here is cheap on the request path: a counter increment per
//! label set, a histogram observation, and a push onto the audit queue.
//! `/metrics` on the admin listener renders the registry in the Prometheus
//! text format.

use crate::audit::trail::{FunctionTrail, Pressure};
use crate::audit::{FunctionEvent, OpOutcome};
use crate::store::fleet::FleetStatus;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The content type of what [`Observer::render_metrics`] returns.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    function: Arc<str>,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabels {
    function: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    function: Arc<str>,
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: u16,
}

/// The node's metrics and the queue of function audit records.
pub struct Observer {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<FunctionLabels, Histogram, fn() -> Histogram>,
    secret_operations: Family<OperationLabels, Counter>,
    denials: Family<OperationLabels, Counter>,
    traps: Family<FunctionLabels, Counter>,
    timeouts: Family<FunctionLabels, Counter>,
    outbound_refused: Family<FunctionLabels, Counter>,
    refused: Family<LimitLabels, Counter>,
    admin_requests: Family<StatusLabels, Counter>,
    audit_backlog: Gauge,
    audit_lost: Counter,
    audit_written: Counter,
    log_lost: Counter,
    /// The log writer's count of lines it dropped, once serving.
    log_lost_total: std::sync::OnceLock<Box<dyn Fn() -> u64 + Send + Sync>>,
    /// The node's link to its fleet, when it is a fleet's replica.
    fleet: std::sync::OnceLock<FleetGauges>,
    /// Function records on their way to the audit trail.
    pub trail: FunctionTrail,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer").finish_non_exhaustive()
    }
}

/// The label requests that matched no function get.
pub const NO_FUNCTION: &str = "(none)";

impl Default for Observer {
    fn default() -> Self {
        Self::new(FunctionTrail::default())
    }
}

impl Observer {
    /// An observer writing function records to `trail`.
    pub fn new(trail: FunctionTrail) -> Self {
        let observer = Self {
            registry: Mutex::new(Registry::with_prefix("keyhole")),
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            secret_operations: Family::default(),
            denials: Family::default(),
            traps: Family::default(),
            timeouts: Family::default(),
            outbound_refused: Family::default(),
            refused: Family::default(),
            admin_requests: Family::default(),
            audit_backlog: Gauge::default(),
            audit_lost: Counter::default(),
            audit_written: Counter::default(),
            log_lost: Counter::default(),
            log_lost_total: std::sync::OnceLock::new(),
            fleet: std::sync::OnceLock::new(),
            trail,
        };
        {
            let mut r = observer.registry.lock().unwrap_or_else(|p| p.into_inner());
            r.register(
                "requests",
                "HTTP requests served, by function and status",
                observer.requests.clone(),
            );
            r.register(
                "request_duration_seconds",
                "Time from routing a request to its response head, by function",
                observer.latency.clone(),
            );
            r.register(
                "secret_operations",
                "secret calls (keyhole:secrets, wasmcloud:secrets) by function, operation and outcome",
                observer.secret_operations.clone(),
            );
            r.register(
                "secret_denials",
                "secret calls refused by the grants (denied or not-granted)",
                observer.denials.clone(),
            );
            r.register(
                "instance_traps",
                "Requests whose instance trapped, by function",
                observer.traps.clone(),
            );
            r.register(
                "instance_timeouts",
                "Requests that ran out of time, by function",
                observer.timeouts.clone(),
            );
            r.register(
                "outbound_refused",
                "Outgoing requests refused (host not approved, or address not allowed), by function",
                observer.outbound_refused.clone(),
            );
            r.register(
                "requests_refused",
                "Requests (and connections) refused before they had an instance, by the limit that refused them",
                observer.refused.clone(),
            );
            r.register(
                "admin_requests",
                "Admin API requests by status",
                observer.admin_requests.clone(),
            );
            r.register(
                "audit_backlog",
                "Function audit records waiting to be written",
                observer.audit_backlog.clone(),
            );
            r.register(
                "audit_lost_records",
                "Function audit records dropped because the trail could not keep up",
                observer.audit_lost.clone(),
            );
            r.register(
                "audit_written_records",
                "Function audit records written to the trail",
                observer.audit_written.clone(),
            );
            r.register(
                "log_lost_lines",
                "Node log lines dropped because the log's writer could not keep up",
                observer.log_lost.clone(),
            );
        }
        observer
    }

    /// Reports, from now on, the log lines the log's writer dropped, as
    /// `total` counts them (set once; later calls are ignored).
    pub fn watch_log_losses(&self, total: impl Fn() -> u64 + Send + Sync + 'static) {
        let _ = self.log_lost_total.set(Box::new(total));
    }

    /// Reports, from now on, the node's link to its fleet:
    /// `keyhole_cluster_connected`, `keyhole_cluster_applied_revision` and
    /// `keyhole_cluster_seconds_since_sync` (set once).
    pub fn watch_fleet(&self, status: Arc<FleetStatus>) {
        let gauges = FleetGauges {
            status,
            connected: Gauge::default(),
            applied: Gauge::default(),
            since_sync: Gauge::default(),
            rejected: Gauge::default(),
        };
        let mut r = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        r.register(
            "cluster_connected",
            "Whether the node is connected to its fleet's NATS servers (1) or cut off (0)",
            gauges.connected.clone(),
        );
        r.register(
            "cluster_applied_revision",
            "The last entry of the fleet's state this node applied",
            gauges.applied.clone(),
        );
        r.register(
            "cluster_rejected_entries",
            "Entries of the fleet's log rejected because they were not written by a holder of the master key",
            gauges.rejected.clone(),
        );
        r.register(
            "cluster_seconds_since_sync",
            "Seconds since the node was last connected to its fleet (-1: not since it started)",
            gauges.since_sync.clone(),
        );
        let _ = self.fleet.set(gauges);
    }

    /// A request or connection was refused by `limit`.
    pub fn refused(&self, limit: crate::node::admission::Limit) {
        self.refused
            .get_or_create(&LimitLabels {
                limit: limit.as_str(),
            })
            .inc();
    }

    /// A request to `function` was answered with `status` after `elapsed`.
    pub fn request(&self, function: &Arc<str>, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                function: Arc::clone(function),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&FunctionLabels {
                function: Arc::clone(function),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// A request to `function` trapped.
    pub fn trap(&self, function: &Arc<str>) {
        self.traps
            .get_or_create(&FunctionLabels {
                function: Arc::clone(function),
            })
            .inc();
    }

    /// A request to `function` ran out of time.
    pub fn timeout(&self, function: &Arc<str>) {
        self.timeouts
            .get_or_create(&FunctionLabels {
                function: Arc::clone(function),
            })
            .inc();
    }

    /// An admin API request was answered with `status`.
    pub fn admin_request(&self, status: u16) {
        self.admin_requests
            .get_or_create(&StatusLabels { status })
            .inc();
    }

    /// A function called a secret operation: counted, and queued for the
    /// audit trail; says whether the request should slow down.
    pub fn secret_operation(&self, event: FunctionEvent, operation: &'static str) -> Pressure {
        let labels = OperationLabels {
            function: Arc::clone(&event.function),
            operation,
            outcome: event.outcome.as_str(),
        };
        if event.outcome.is_denial() {
            self.denials.get_or_create(&labels).inc();
        }
        self.secret_operations.get_or_create(&labels).inc();
        self.trail.record(event)
    }

    /// The metric handles of `function`, for its requests to use.
    pub fn function_metrics(self: &Arc<Self>, function: &Arc<str>) -> Arc<FunctionMetrics> {
        let labels = FunctionLabels {
            function: Arc::clone(function),
        };
        Arc::new(FunctionMetrics {
            function: Arc::clone(function),
            ok: self
                .requests
                .get_or_create(&RequestLabels {
                    function: Arc::clone(function),
                    status: 200,
                })
                .clone(),
            latency: self.latency.get_or_create(&labels).clone(),
            allowed: OPERATIONS.map(|operation| {
                self.secret_operations
                    .get_or_create(&OperationLabels {
                        function: Arc::clone(function),
                        operation,
                        outcome: OpOutcome::Allowed.as_str(),
                    })
                    .clone()
            }),
            observer: Arc::clone(self),
        })
    }

    /// The metrics in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        self.audit_backlog.set(self.trail.backlog() as i64);
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        catch_up(&self.audit_lost, self.trail.lost_total());
        catch_up(&self.audit_written, self.trail.written_total());
        if let Some(total) = self.log_lost_total.get() {
            catch_up(&self.log_lost, total());
        }
        if let Some(fleet) = self.fleet.get() {
            fleet.connected.set(i64::from(fleet.status.connected()));
            fleet.applied.set(fleet.status.applied() as i64);
            fleet.rejected.set(fleet.status.rejected_entries() as i64);
            fleet
                .since_sync
                .set(fleet.status.seconds_since_sync().unwrap_or(-1.0));
        }
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// The fleet gauges, read from the link's status when metrics are rendered.
struct FleetGauges {
    status: Arc<FleetStatus>,
    connected: Gauge,
    applied: Gauge,
    since_sync: Gauge<f64, std::sync::atomic::AtomicU64>,
    rejected: Gauge,
}

/// Raises a counter mirrored from an atomic total to that total.
fn catch_up(counter: &Counter, total: u64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}

fn latency_histogram() -> Histogram {
    // 100 µs to about 3.3 s.
    Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
}

/// The `keyhole:secrets` operations (and `inject`) as metric labels and
/// audit records name them.
pub const OPERATIONS: [&str; 10] = [
    "get",
    "hmac-sha256",
    "verify-hmac-sha256",
    "sign",
    "public-key",
    "seal",
    "open",
    "header-token",
    "reveal",
    "inject",
];

/// One function's metric handles, resolved when the function is loaded so
/// that the request path's common case (status 200, an allowed operation)
/// does no label lookup and takes no lock: only counter increments.
pub struct FunctionMetrics {
    function: Arc<str>,
    ok: Counter,
    latency: Histogram,
    allowed: [Counter; OPERATIONS.len()],
    observer: Arc<Observer>,
}

impl std::fmt::Debug for FunctionMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionMetrics")
            .field("function", &self.function)
            .finish_non_exhaustive()
    }
}

impl FunctionMetrics {
    /// A request was answered with `status` after `elapsed`.
    pub fn request(&self, status: u16, elapsed: Duration) {
        if status == 200 {
            self.ok.inc();
        } else {
            self.observer
                .requests
                .get_or_create(&RequestLabels {
                    function: Arc::clone(&self.function),
                    status,
                })
                .inc();
        }
        self.latency.observe(elapsed.as_secs_f64());
    }

    /// A request trapped.
    pub fn trap(&self) {
        self.observer.trap(&self.function);
    }

    /// A request ran out of time.
    pub fn timeout(&self) {
        self.observer.timeout(&self.function);
    }

    /// An outgoing request was refused before anything was sent.
    pub fn outbound_refused(&self) {
        self.observer
            .outbound_refused
            .get_or_create(&FunctionLabels {
                function: Arc::clone(&self.function),
            })
            .inc();
    }

    /// A secret operation: counted, and queued for the audit trail; says
    /// whether the request should slow down.
    pub fn secret_operation(&self, event: FunctionEvent, operation: &'static str) -> Pressure {
        if event.outcome == OpOutcome::Allowed
            && let Some(i) = OPERATIONS.iter().position(|op| *op == operation)
        {
            self.allowed[i].inc();
            return self.observer.trail.record(event);
        }
        self.observer.secret_operation(event, operation)
    }

    /// Where the rest goes: the node's observer.
    pub fn observer(&self) -> &Arc<Observer> {
        &self.observer
    }
}

/// How an operation's result maps to its audit outcome.
pub fn outcome_of<T>(result: &Result<T, crate::engine::bindings::secrets::Error>) -> OpOutcome {
    use crate::engine::bindings::secrets::Error;
    match result {
        Ok(_) => OpOutcome::Allowed,
        Err(Error::Denied(_)) => OpOutcome::Denied,
        Err(Error::NotGranted(_)) => OpOutcome::NotGranted,
        Err(Error::Unavailable(_)) => OpOutcome::Unavailable,
        Err(Error::InvalidArgument(_)) => OpOutcome::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_move_with_what_they_count() {
        let observer = Observer::default();
        let f: Arc<str> = "hello".into();
        observer.request(&f, 200, Duration::from_millis(2));
        observer.request(&f, 200, Duration::from_millis(3));
        observer.trap(&f);
        observer.secret_operation(FunctionEvent::example("hello", 1), "get");
        let text = observer.render_metrics();
        assert!(
            text.contains("keyhole_requests_total{function=\"hello\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(text.contains("keyhole_request_duration_seconds_count{function=\"hello\"} 2"));
        assert!(text.contains("keyhole_instance_traps_total{function=\"hello\"} 1"));
        assert!(text.contains(
            "keyhole_secret_denials_total{function=\"hello\",operation=\"get\",outcome=\"not-granted\"} 1"
        ));
        assert!(text.contains("keyhole_audit_backlog 1"));
    }
}
