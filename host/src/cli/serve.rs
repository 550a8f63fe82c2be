//! `keyhole serve`: run the node.

use super::{Access, open_store};
use anyhow::{Context, bail};
use clap::Args;
use keyhole_host::admin::Admin;
use keyhole_host::crypto::master_key;
use keyhole_host::engine::runtime::{self, Runtime};
use keyhole_host::node::admission::{self, Admission, Limits};
use keyhole_host::node::catalog::Catalog;
use keyhole_host::node::observe::Observer;
use keyhole_host::node::server;
use keyhole_host::node::status::{FleetReport, NodeStatus};
use keyhole_host::outbound::{AddressPolicy, IpNet};
use keyhole_host::secrets::standing::Freshness;
use keyhole_host::store::Store;
use keyhole_host::store::fleet::FleetStatus;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to serve HTTP on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Worker threads, each serving its own share of connections
    /// [default: one per core].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
    /// Function instances alive at once across the node; a request past
    /// them gets 503. Every one reserves address space (not memory) up
    /// front, so a small machine or a profiler may want fewer.
    #[arg(long, value_name = "N", default_value_t = runtime::DEFAULT_MAX_INSTANCES,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(runtime::MAX_INSTANCES_LIMIT)))]
    max_instances: u32,
    /// Also serve the admin API and /metrics on this address, e.g.
    /// 127.0.0.1:8081. Tokens travel in clear text: keep it on loopback (or
    /// behind a TLS-terminating proxy) unless --admin-allow-remote.
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// Allow --admin on an address other than loopback; needs
    /// --admin-tls-cert and --admin-tls-key.
    #[arg(long, requires = "admin")]
    admin_allow_remote: bool,
    /// Serve the admin API over TLS with this PEM certificate chain (the CLI
    /// then talks to https://…; KEYHOLE_NODE_CA names a CA it trusts).
    #[arg(long, value_name = "PEM", requires_all = ["admin", "admin_tls_key"])]
    admin_tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --admin-tls-cert.
    #[arg(long, value_name = "PEM", requires = "admin_tls_cert")]
    admin_tls_key: Option<std::path::PathBuf>,
    /// Non-public networks that functions' outgoing requests may reach,
    /// comma-separated addresses or CIDR networks (e.g. 127.0.0.1,
    /// 10.0.0.0/8). Without it they reach public addresses only; this
    /// node's own listeners are refused whatever is given.
    #[arg(long, value_name = "NETWORKS", env = "KEYHOLE_OUTBOUND_ALLOW_IP",
          value_delimiter = ',', value_parser = parse_network)]
    outbound_allow_ip: Vec<IpNet>,
    /// In a fleet (--cluster): how long this node may be cut off from the
    /// cluster and still honour grants it can no longer check for
    /// revocation, e.g. 5m; past it every secret operation answers
    /// `unavailable` until it is back [default: no limit, serve the last
    /// state however old].
    #[arg(long, value_name = "DURATION", env = "KEYHOLE_MAX_STALE",
          value_parser = super::secrets::parse_duration)]
    max_stale: Option<i64>,
    /// Keep audit records this long, e.g. 365d; older ones are removed
    /// under a signed checkpoint (as `keyhole audit prune` does), checked
    /// every quarter of it, at most every 10 minutes [default: keep all].
    #[arg(long, value_name = "DURATION", env = "KEYHOLE_AUDIT_RETENTION",
          value_parser = super::secrets::parse_duration)]
    audit_retention: Option<i64>,
    /// Free disk space kept for admin actions, e.g. 1GiB: below it the node
    /// stops writing function audit records (they are counted and dropped,
    /// with a `lost` record saying how many), so that `revoke`, `undeploy`
    /// and every other admin action can still write theirs [default:
    /// 256MiB].
    #[arg(long, value_name = "SIZE", env = "KEYHOLE_DISK_RESERVE",
          value_parser = keyhole_host::node::admission::parse_size)]
    disk_reserve: Option<u64>,
    /// Linear memory the node's requests may reserve at once, e.g. 8GiB:
    /// each request reserves its function's memory limit, and a request
    /// past the budget gets 503 [default: 75% of the machine's memory, or
    /// of the cgroup's limit if lower].
    #[arg(long, value_name = "SIZE", env = "KEYHOLE_MEMORY_BUDGET",
          value_parser = keyhole_host::node::admission::parse_size)]
    memory_budget: Option<u64>,
    /// The most of the node's instance slots and memory budget one function
    /// may hold at once, in percent; its requests past that get 503 while
    /// other functions go on.
    #[arg(long, value_name = "PERCENT",
          default_value_t = keyhole_host::node::admission::DEFAULT_FUNCTION_SHARE_PERCENT,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    max_function_share: u32,
    /// Requests one client address may have in flight at once (behind a
    /// proxy every client shares its address: raise it) [default: a quarter
    /// of --max-instances].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_client_requests: Option<u32>,
    /// Connections one client address may hold open at once; more are
    /// closed as they are accepted.
    #[arg(long, value_name = "N",
          default_value_t = keyhole_host::node::admission::DEFAULT_CLIENT_CONNECTIONS,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_client_connections: u32,
    /// Shut down when standard input closes: how `keyhole dev` makes sure
    /// the node it started never outlives it, however it ends.
    #[arg(long, hide = true)]
    stop_when_stdin_closes: bool,
}

fn parse_network(text: &str) -> Result<IpNet, String> {
    text.parse()
}

/// The admission limits `args` ask for, with the machine's defaults, said
/// in the log; also raises the open-file limit connections need.
fn admission_limits(args: &ServeArgs) -> Limits {
    let machine = admission::machine_memory();
    let mut limits = Limits::defaults(args.max_instances, machine.unwrap_or(u64::MAX / 100 * 75));
    if let Some(budget) = args.memory_budget {
        limits.memory_budget = budget;
    } else if machine.is_none() {
        tracing::warn!(
            "cannot read this machine's memory: no memory budget unless --memory-budget is given"
        );
    }
    limits.function_share_percent = args.max_function_share;
    if let Some(n) = args.max_client_requests {
        limits.client_requests = n;
    }
    limits.client_connections = args.max_client_connections;
    match admission::raise_open_file_limit() {
        Ok(files) => {
            if files < u64::from(limits.client_connections) + 64 {
                tracing::warn!(
                    open_files = files,
                    "the open-file limit is below what one client's connections may take: past it, new connections wait in the backlog"
                );
            }
            tracing::info!(open_files = files, "open-file limit");
        }
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
    tracing::info!(
        slots = limits.slots,
        memory_budget_mib = limits.memory_budget >> 20,
        function_share_percent = limits.function_share_percent,
        function_slots = limits.function_slots(),
        client_requests = limits.client_requests,
        client_connections = limits.client_connections,
        "admission limits"
    );
    limits
}

/// Marks the node stale while it has been out of touch with its fleet for
/// longer than `max_stale` seconds (since it started, if it has not been
/// in touch since), and fresh again once it is back; says so in the log.
fn watch_staleness(status: Arc<FleetStatus>, max_stale: i64, freshness: Arc<Freshness>) {
    let started = std::time::Instant::now();
    let limit = max_stale.max(0) as f64;
    std::thread::Builder::new()
        .name("keyhole-staleness".into())
        .spawn(move || loop {
            let since = status
                .seconds_since_sync()
                .unwrap_or_else(|| started.elapsed().as_secs_f64());
            let stale = !status.connected() && since > limit;
            if stale != freshness.is_stale() {
                if stale {
                    tracing::warn!(
                        "cluster: cut off for {since:.1} s, past --max-stale {max_stale}s: secret operations answer `unavailable` until the node is back in touch"
                    );
                } else {
                    tracing::info!("cluster: back in touch: secret operations are served again");
                }
            }
            freshness.set_stale(stale.then(|| {
                format!(
                    "this node has been cut off from its fleet for {since:.0} s, longer than its --max-stale of {max_stale} s: it cannot check its grants for revocation"
                )
            }));
            std::thread::sleep(std::time::Duration::from_millis(100));
        })
        .expect("a thread");
}

/// What the running node says of itself (`keyhole status`): what it
/// serves, and its link to its fleet if it joined one.
fn node_status(
    catalog: std::sync::Weak<Catalog>,
    freshness: Arc<Freshness>,
    max_stale: Option<i64>,
) -> impl Fn() -> NodeStatus + Send + Sync + 'static {
    move || {
        let catalog = catalog.upgrade();
        let fleet = super::cluster::joined().map(|fleet| {
            let link = fleet.status();
            FleetReport {
                id: fleet.id(),
                connected: link.connected(),
                applied: link.applied(),
                seconds_since_sync: link.seconds_since_sync(),
                rejected_entries: link.rejected_entries(),
                blocked: link.blocked(),
                max_stale_secs: max_stale,
                stale: freshness.check().err().map(|stale| stale.0),
                node: fleet.node(),
                audit_waiting: fleet.audit_waiting().unwrap_or(0),
            }
        });
        NodeStatus {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            running: true,
            functions: catalog
                .as_ref()
                .map_or(0, |c| c.snapshot().function_count()),
            revision: catalog.as_ref().and_then(|c| c.loaded_revision()),
            fleet,
            load_error: catalog.and_then(|c| c.load_error()),
        }
    }
}

/// Log lines waiting for the log's writer thread, at most.
const LOG_QUEUE_LINES: usize = 64 * 1024;

/// `keyhole serve`: open the store, load the catalog, serve until a signal.
pub fn run(
    data: &Path,
    cluster: Option<&keyhole_host::store::fleet::ClusterConfig>,
    args: ServeArgs,
) -> anyhow::Result<()> {
    // Written from a thread of its own: a slow reader of the node's stderr
    // stalls that thread, never a request's. Past the queue, lines are
    // dropped and counted (`keyhole_log_lost_lines_total`).
    let (log_writer, _flush_log_on_exit) =
        tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(LOG_QUEUE_LINES)
            .thread_name("keyhole-log")
            .finish(std::io::stderr());
    let log_losses = log_writer.error_counter();
    tracing_subscriber::fmt()
        .with_writer(log_writer)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEYHOLE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if let Some(admin) = args.admin
        && !admin.ip().is_loopback()
        && !args.admin_allow_remote
    {
        bail!(
            "--admin {admin} is not a loopback address: admin tokens would cross the network; bind it to 127.0.0.1 (reach it through an SSH tunnel), or pass --admin-allow-remote with --admin-tls-cert and --admin-tls-key"
        );
    }
    if args.admin_allow_remote && args.admin_tls_cert.is_none() {
        bail!(
            "--admin-allow-remote needs --admin-tls-cert and --admin-tls-key: admin tokens must not cross the network in clear text"
        );
    }
    let admin_tls = match (&args.admin_tls_cert, &args.admin_tls_key) {
        (Some(cert), Some(key)) => Some(keyhole_host::admin::tls::server_config(cert, key)?),
        _ => None,
    };
    if args.max_stale.is_some() && cluster.is_none() {
        bail!(
            "--max-stale bounds how long a fleet's node serves while cut off from the cluster: it needs --cluster"
        );
    }
    let admission = Arc::new(Admission::new(admission_limits(&args)));
    // In a fleet the node serves its replica at once, reached or not, and
    // follows the fleet from when it is.
    let store: Arc<dyn Store> = match cluster {
        Some(config) => super::cluster::open_replica(
            data,
            Access::CreateIfMissing,
            config,
            keyhole_host::store::fleet::Join::Serving,
        )?,
        None => Arc::new(open_store(data, Access::CreateIfMissing)?),
    };
    let runtime = Arc::new(
        Runtime::for_store(
            &*store,
            data.join(runtime::COMPILED_CACHE_DIR),
            args.max_instances,
        )
        .map_err(|e| anyhow::anyhow!("{e:#}"))?,
    );
    runtime::start_epoch_ticker(runtime.engine());
    let workers = match args.workers {
        Some(n) => usize::from(n),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let listeners = server::bind_listeners(args.listen, workers)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listeners[0].local_addr()?;

    let admin_listener = match args.admin {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .with_context(|| format!("cannot listen on {addr} for the admin API"))?,
        ),
        None => None,
    };
    // Functions never reach the node's own listeners, whatever is allowed.
    let addresses = Arc::new(AddressPolicy::new(args.outbound_allow_ip.clone()));
    addresses.add_own_listener(addr);
    if let Some(admin) = &admin_listener {
        addresses.add_own_listener(admin.local_addr()?);
    }
    if !args.outbound_allow_ip.is_empty() {
        let networks: Vec<String> = args
            .outbound_allow_ip
            .iter()
            .map(ToString::to_string)
            .collect();
        tracing::warn!(
            networks = %networks.join(","),
            "functions' outgoing requests may reach these non-public networks"
        );
    }

    let observer = Arc::new(Observer::default());
    observer.watch_log_losses(move || log_losses.dropped_lines() as u64);
    let freshness = Arc::new(Freshness::default());
    if let Some(fleet) = super::cluster::joined() {
        observer.watch_fleet(fleet.status());
        if let Some(max_stale) = args.max_stale {
            watch_staleness(fleet.status(), max_stale, Arc::clone(&freshness));
        }
    }
    let catalog = Arc::new(
        Catalog::new(
            Arc::clone(&store) as _,
            Arc::clone(&runtime),
            Arc::clone(&observer),
        )
        .with_address_policy(addresses)
        .with_admission(admission)
        .with_freshness(Arc::clone(&freshness)),
    );
    catalog.refresh()?;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    // The audit writer stops after the workers, so it writes what their
    // last requests recorded.
    let (stop_audit, audit_stopped) = tokio::sync::watch::channel(false);
    let reserve = keyhole_host::audit::disk_reserve::DiskReserve::new(
        data,
        args.disk_reserve
            .unwrap_or(keyhole_host::audit::disk_reserve::DEFAULT_DISK_RESERVE),
    );
    let audit_writer = server::start_audit_writer(
        Arc::clone(&store),
        Arc::clone(&observer),
        reserve,
        audit_stopped.clone(),
    )?;
    let retention = match args.audit_retention {
        Some(secs) => Some(server::start_audit_retention(
            Arc::clone(&store),
            std::time::Duration::from_secs(secs.unsigned_abs()),
            audit_stopped,
        )?),
        None => None,
    };
    let admin_server = match admin_listener {
        Some(listener) => {
            let mut admin = Admin::new(Arc::clone(&store))
                .with_runtime(Arc::clone(&runtime))
                .with_status(node_status(
                    Arc::downgrade(&catalog),
                    Arc::clone(&freshness),
                    args.max_stale,
                ));
            if let Some(fleet) = super::cluster::joined() {
                admin = admin.with_fleet_records(fleet.records());
            }
            // Tests shorten the window of coalesced refusals.
            if let Some(secs) = std::env::var("KEYHOLE_TEST_REFUSAL_WINDOW_SECS")
                .ok()
                .and_then(|s| s.parse().ok())
            {
                admin = admin.with_refusal_window(secs);
            }
            let admin = Arc::new(admin);
            let addr = listener.local_addr()?;
            let scheme = if admin_tls.is_some() { "https" } else { "http" };
            let thread = start_admin(
                listener,
                admin,
                Arc::clone(&observer),
                admin_tls.clone(),
                stopped.clone(),
            )?;
            println!("keyhole admin API on {scheme}://{addr}");
            tracing::info!(%addr, "admin API listening; the console is at {scheme}://{addr}/ui/");
            Some(thread)
        }
        None => None,
    };
    let data_dir = data.to_owned();
    let reload_master_key = move || {
        // A key file rotated by `keyhole master-key rotate` is picked up
        // here, also from the pending file of a rotation that was killed
        // before renaming it; a key from the environment needs a restart.
        let installed = master_key::load_existing(&data_dir)
            .ok()
            .is_some_and(|key| store.rekey(key).is_ok());
        installed
            || master_key::load_pending(&data_dir)
                .ok()
                .flatten()
                .is_some_and(|key| store.rekey(key).is_ok())
    };
    let refresher =
        server::start_refresher(Arc::clone(&catalog), stopped.clone(), reload_master_key)?;
    let workers_running = server::start_workers(listeners, &catalog, &stopped)?;
    println!("keyhole listening on http://{addr}");
    tracing::info!(%addr, workers, data = %data.display(), "serving");

    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(shutdown_signal(args.stop_when_stdin_closes));
    let _ = stop.send(true);
    for worker in workers_running {
        let _ = worker.join();
    }
    let _ = stop_audit.send(true);
    let _ = audit_writer.join();
    // The last records written go to the fleet's trail before the node
    // exits (or wait in its replica for its next start).
    super::cluster::deliver_audit(data);
    if let Some(retention) = retention {
        let _ = retention.join();
    }
    if let Some(admin) = admin_server {
        let _ = admin.join();
    }
    let _ = refresher.join();
    tracing::info!("shut down");
    Ok(())
}

/// Runs the admin API on its own thread until `stop` turns true; actions
/// run on that runtime's blocking pool.
fn start_admin(
    listener: std::net::TcpListener,
    admin: Arc<Admin>,
    observer: Arc<Observer>,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()?;
    Ok(std::thread::Builder::new()
        .name("keyhole-admin".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(e) => return tracing::error!("cannot register the admin listener: {e}"),
                };
                let shutdown = async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                };
                keyhole_host::admin::http::serve(listener, admin, observer, tls, shutdown).await;
            })
        })?)
}

/// Resolves on Ctrl-C or SIGTERM, or (with `stdin_closes`) when standard
/// input reaches its end.
async fn shutdown_signal(stdin_closes: bool) {
    if stdin_closes {
        let (closed, on_close) = tokio::sync::oneshot::channel::<()>();
        let watcher = std::thread::Builder::new()
            .name("keyhole-stdin".into())
            .spawn(move || {
                let mut sink = [0u8; 256];
                let mut stdin = std::io::stdin();
                loop {
                    match std::io::Read::read(&mut stdin, &mut sink) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                let _ = closed.send(());
            });
        if watcher.is_ok() {
            tokio::select! {
                () = signals() => {}
                _ = on_close => {}
            }
            return;
        }
    }
    signals().await;
}

/// Resolves on Ctrl-C or SIGTERM.
async fn signals() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
