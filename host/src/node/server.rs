//! The node's HTTP front door: accept connections and route each request
//! by path prefix to a fresh instance of its function.
//!
//! A node runs one worker per core, each a single-threaded async runtime
//! with its own listening socket on the same port (`SO_REUSEPORT`), so the
//! kernel spreads connections across cores and a request never hops threads.

use crate::node::admission::Limit;
use crate::node::catalog::Catalog;
use crate::node::invoke::{invoke, text_response};
use hyper::StatusCode;
use hyper::header::HeaderValue;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The longest a running node waits before it checks the store again
/// without being told of a change: for grace windows that end, and to try
/// again a load that failed.
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(250);
/// How often a node writes the secret uses it recorded to the store.
pub const USAGE_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// How often a node looks for secrets overdue for rotation.
const OVERDUE_CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// Pending connections each listening socket queues.
const BACKLOG: i32 = 1024;

/// The response header carrying the node's id for a request, as audit
/// records name it.
pub const REQUEST_ID_HEADER: &str = "keyhole-request-id";
/// How often a node writes queued function audit records.
pub const AUDIT_FLUSH_INTERVAL: Duration = Duration::from_millis(100);

static NEXT_REQUEST_ID: AtomicU64 = AtomicU64::new(1);

/// Binds `count` listening sockets to `addr`, all sharing one port. With
/// port 0 the first picks a free port and the others join it.
pub fn bind_listeners(
    addr: SocketAddr,
    count: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut listeners: Vec<std::net::TcpListener> = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let target = listeners.first().map_or(Ok(addr), |l| l.local_addr())?;
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(target),
            socket2::Type::STREAM,
            None,
        )?;
        socket.set_reuse_address(true)?;
        #[cfg(unix)]
        socket.set_reuse_port(true)?;
        socket.bind(&target.into())?;
        socket.listen(BACKLOG)?;
        socket.set_nonblocking(true)?;
        listeners.push(socket.into());
    }
    Ok(listeners)
}

/// Serves HTTP on `listener` until `shutdown` completes. Runs on the
/// current thread's runtime; one call per worker.
pub async fn serve(
    listener: TcpListener,
    catalog: Arc<Catalog>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let unrouted: Arc<str> = crate::node::observe::NO_FUNCTION.into();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors this repeats every 10 ms: log it once
                // a second.
                if catalog.admission().should_log(Limit::ClientConnections) {
                    tracing::warn!("accept failed (connections wait in the backlog): {e}");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let admission = Arc::clone(catalog.admission());
        let Some(connected) = admission.connect(peer.ip()) else {
            if admission.should_log(Limit::ClientConnections) {
                tracing::warn!(
                    client = %peer.ip(),
                    limit = Limit::ClientConnections.as_str(),
                    "connection refused: the client address holds its share of connections"
                );
            }
            catalog.observer().refused(Limit::ClientConnections);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let catalog = Arc::clone(&catalog);
        let unrouted = Arc::clone(&unrouted);
        let client = peer.ip();
        tokio::spawn(async move {
            // Held while the connection is open.
            let _connected = connected;
            let service = hyper::service::service_fn(
                move |request: hyper::Request<hyper::body::Incoming>| {
                    let catalog = Arc::clone(&catalog);
                    let unrouted = Arc::clone(&unrouted);
                    let id = NEXT_REQUEST_ID.fetch_add(1, Ordering::Relaxed);
                    async move {
                        let started = Instant::now();
                        let snapshot = catalog.snapshot();
                        let mut response = match snapshot.route(request.uri().path()) {
                            Some(function) => {
                                let metrics = Arc::clone(&function.metrics);
                                let response = match catalog.admission().admit(
                                    &function.share,
                                    function.weight,
                                    function.reserved_memory,
                                    client,
                                ) {
                                    Ok(ticket) => {
                                        invoke(Arc::clone(function), request, id, ticket).await
                                    }
                                    Err(limit) => {
                                        refuse(&catalog, &function.name, id, client, limit)
                                    }
                                };
                                metrics.request(response.status().as_u16(), started.elapsed());
                                response
                            }
                            None => {
                                let response = text_response(
                                    StatusCode::NOT_FOUND,
                                    format!("no function serves {}\n", request.uri().path()),
                                );
                                catalog.observer().request(
                                    &unrouted,
                                    response.status().as_u16(),
                                    started.elapsed(),
                                );
                                response
                            }
                        };
                        response
                            .headers_mut()
                            .insert(REQUEST_ID_HEADER, HeaderValue::from(id));
                        Ok::<_, std::convert::Infallible>(response)
                    }
                },
            );
            if let Err(e) = http1::Builder::new()
                .timer(TokioTimer::new())
                .keep_alive(true)
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
}

/// The 503 for a request admission refused: logged at most once a second
/// per limit, counted in `/metrics` always.
fn refuse(
    catalog: &Catalog,
    function: &str,
    id: u64,
    client: std::net::IpAddr,
    limit: Limit,
) -> hyper::Response<wasmtime_wasi_http::p2::body::HyperOutgoingBody> {
    catalog.observer().refused(limit);
    if catalog.admission().should_log(limit) {
        tracing::warn!(
            request = id,
            function,
            %client,
            limit = limit.as_str(),
            "request refused (503): {}",
            limit.explain(function).trim_end()
        );
    }
    let mut response = text_response(StatusCode::SERVICE_UNAVAILABLE, limit.explain(function));
    response
        .headers_mut()
        .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Starts one worker thread per listener, each a single-threaded runtime
/// serving its listener until `stop` turns true.
pub fn start_workers(
    listeners: Vec<std::net::TcpListener>,
    catalog: &Arc<Catalog>,
    stop: &watch::Receiver<bool>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let mut workers = Vec::with_capacity(listeners.len());
    for (i, listener) in listeners.into_iter().enumerate() {
        let catalog = Arc::clone(catalog);
        let mut stop = stop.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let worker = std::thread::Builder::new()
            .name(format!("keyhole-worker-{i}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(e) => {
                            return tracing::error!(
                                worker = i,
                                "cannot register the listener: {e}"
                            );
                        }
                    };
                    let shutdown = async move {
                        let _ = stop.wait_for(|stopped| *stopped).await;
                    };
                    serve(listener, catalog, shutdown).await;
                })
            })?;
        workers.push(worker);
    }
    Ok(workers)
}

/// Starts the thread that keeps the node in step with its store until
/// `stop` turns true: it reloads `catalog` as soon as the store says it
/// changed (and at least every [`REFRESH_INTERVAL`], for grace windows
/// that end), writes recorded secret uses every
/// [`USAGE_FLUSH_INTERVAL`] (and once more on the way out), and warns about
/// secrets overdue for rotation. When the store's master key was rotated
/// by another process, it calls `reload_master_key`, which returns whether
/// the node now holds the new key.
pub fn start_refresher(
    catalog: Arc<Catalog>,
    stop: watch::Receiver<bool>,
    reload_master_key: impl Fn() -> bool + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("keyhole-refresh".into())
        .spawn(move || {
            let mut last_flush = std::time::Instant::now();
            let mut last_overdue_check: Option<std::time::Instant> = None;
            let mut key_warned = false;
            while !*stop.borrow() {
                catalog.wait_for_change(REFRESH_INTERVAL);
                match catalog.refresh() {
                    Ok(_) => key_warned = false,
                    Err(crate::store::StoreError::WrongMasterKey) => {
                        if reload_master_key() {
                            tracing::info!("the master key was rotated; now using the new key");
                            continue;
                        }
                        if !key_warned {
                            tracing::error!(
                                "the store's master key was rotated and this node cannot load the new one: still serving what was loaded; restart the node with the new {}",
                                crate::crypto::master_key::MASTER_KEY_ENV
                            );
                            key_warned = true;
                        }
                    }
                    Err(e) => tracing::error!("reloading from the store failed: {e}"),
                }
                if last_flush.elapsed() >= USAGE_FLUSH_INTERVAL {
                    flush_usage(&catalog);
                    last_flush = std::time::Instant::now();
                }
                if last_overdue_check.is_none_or(|at| at.elapsed() >= OVERDUE_CHECK_INTERVAL) {
                    if let Err(e) = catalog.warn_overdue() {
                        tracing::error!("checking secrets' ages failed: {e}");
                    }
                    last_overdue_check = Some(std::time::Instant::now());
                }
            }
            flush_usage(&catalog);
        })
}

fn flush_usage(catalog: &Catalog) {
    if let Err(e) = catalog.flush_usage() {
        tracing::warn!("recording secret uses failed (kept for the next try): {e}");
    }
}

/// How often the node says, at most, that it drops function records to
/// keep the disk reserve.
const RESERVE_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// Starts the thread that writes function audit records to `store` in
/// batches every [`AUDIT_FLUSH_INTERVAL`] (sooner when a queue is half
/// full, or full with a record waiting for room) until `stop` turns true,
/// and once more on the way out. A failed batch is kept for the next try,
/// as far as the queue's capacity allows; what does not fit is counted as
/// lost. While the disk has less free space than `reserve`, function
/// records are counted as lost instead of written (see
/// [`crate::audit::disk_reserve`]).
pub fn start_audit_writer(
    store: Arc<dyn crate::store::Store>,
    observer: Arc<crate::node::observe::Observer>,
    reserve: crate::audit::disk_reserve::DiskReserve,
    stop: watch::Receiver<bool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("keyhole-audit".into())
        .spawn(move || {
            let mut failing = false;
            let mut warned_at: Option<std::time::Instant> = None;
            let flush = |failing: &mut bool, warned_at: &mut Option<std::time::Instant>| {
                let mut batch = observer.trail.take_batch();
                if batch.is_empty() {
                    return;
                }
                let mut kept_reserve = 0;
                if !reserve.allows_function_records() {
                    let dropped = observer.trail.drop_function_records(&mut batch);
                    kept_reserve = dropped;
                    if dropped > 0 && warned_at.is_none_or(|at| at.elapsed() >= RESERVE_WARNING_INTERVAL) {
                        tracing::error!(
                            dropped,
                            reserve_mib = reserve.reserve() >> 20,
                            "the data directory's disk has less free space than its reserve: function audit records are counted and dropped (a `lost` record says how many) so that admin actions can still be recorded; free space, or prune the trail (keyhole audit prune)"
                        );
                        *warned_at = Some(std::time::Instant::now());
                    }
                }
                let functions = batch
                    .iter()
                    .filter(|t| matches!(t.event, crate::audit::Event::Function(_)))
                    .count();
                let lost: u64 = batch
                    .iter()
                    .filter_map(|t| match &t.event {
                        crate::audit::Event::Lost(l) => Some(l.records),
                        _ => None,
                    })
                    .sum();
                match store.append_audit(&batch) {
                    Ok(()) => {
                        observer.trail.written(functions);
                        observer.trail.recycle(batch);
                        // Records dropped for the reserve were said above.
                        if lost > kept_reserve {
                            tracing::error!(
                                lost = lost - kept_reserve,
                                "the audit trail could not keep up: function records were dropped (recorded in the trail as a `lost` record)"
                            );
                        }
                        *failing = false;
                    }
                    Err(e) => {
                        if !*failing {
                            tracing::error!("writing function audit records failed (kept for the next try): {e}");
                        }
                        *failing = true;
                        observer.trail.restore(batch);
                    }
                }
            };
            observer.trail.wake_when_filling(std::thread::current());
            while !*stop.borrow() {
                // Woken early when a queue is half full.
                std::thread::park_timeout(AUDIT_FLUSH_INTERVAL);
                flush(&mut failing, &mut warned_at);
            }
            flush(&mut failing, &mut warned_at);
        })
}

/// Starts the thread that applies the audit trail's retention policy:
/// every so often (a quarter of `retention`, at least a second, at most
/// [`RETENTION_CHECK_MAX_INTERVAL`]) it removes records older than
/// `retention` under a signed checkpoint, as `keyhole audit prune` does,
/// and records that it did (token `retention`) in the trail itself. A check
/// that finds nothing old enough writes nothing. Rows that do not verify
/// are never pruned: the refusal is recorded and logged (once per change of
/// it), the records stay as evidence, and the next check waits an hour.
pub fn start_audit_retention(
    store: Arc<dyn crate::store::Store>,
    retention: Duration,
    stop: watch::Receiver<bool>,
) -> std::io::Result<JoinHandle<()>> {
    let interval = (retention / 4).clamp(Duration::from_secs(1), RETENTION_CHECK_MAX_INTERVAL);
    std::thread::Builder::new()
        .name("keyhole-retention".into())
        .spawn(move || {
            let mut last_error: Option<String> = None;
            let mut next = Instant::now();
            while !*stop.borrow() {
                if Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                next = Instant::now() + interval;
                let age_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
                let before_ms = crate::audit::now_ms().saturating_sub(age_ms);
                match prune_for_retention(&*store, before_ms) {
                    Ok(Some(removed)) => {
                        tracing::info!(removed, "audit retention removed old records");
                        last_error = None;
                    }
                    Ok(None) => last_error = None,
                    Err(e) => {
                        let message = e.to_string();
                        if last_error.as_ref() != Some(&message) {
                            tracing::error!("audit retention: {message}");
                        }
                        last_error = Some(message);
                        next = Instant::now() + RETENTION_RETRY_AFTER_REFUSAL;
                    }
                }
            }
        })
}

/// The longest a node waits between two retention checks.
pub const RETENTION_CHECK_MAX_INTERVAL: Duration = Duration::from_secs(600);
/// How long retention waits after a pruning was refused (each refusal is
/// an audit record of its own).
const RETENTION_RETRY_AFTER_REFUSAL: Duration = Duration::from_secs(3600);

/// One retention check: prunes (recorded as the `retention` token's
/// `audit.prune`) if anything is old enough, and says how many records
/// went.
fn prune_for_retention(
    store: &dyn crate::store::Store,
    before_ms: crate::audit::Millis,
) -> Result<Option<u64>, String> {
    if !store.audit_prunable(before_ms).map_err(|e| e.to_string())? {
        return Ok(None);
    }
    let event = crate::audit::AdminEvent {
        token: "retention".into(),
        role: "node".into(),
        action: "audit.prune".into(),
        target: "audit".into(),
        function: None,
        secret: None,
        outcome: "ok".into(),
        detail: None,
    };
    let report = crate::store::audited(store, event, |record| store.prune_audit(before_ms, record))
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(Some(report.removed))
}
