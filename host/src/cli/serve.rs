//! `keyhole serve`: run the node.

use super::{Access, open_store};
use anyhow::Context;
use clap::Args;
use keyhole_host::catalog::Catalog;
use keyhole_host::master_key;
use keyhole_host::runtime::{self, Runtime};
use keyhole_host::server;
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
}

/// `keyhole serve`: open the store, load the catalog, serve until a signal.
pub fn run(data: &Path, args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEYHOLE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let store = Arc::new(open_store(data, Access::CreateIfMissing)?);
    let runtime = Arc::new(Runtime::new().map_err(|e| anyhow::anyhow!("{e:#}"))?);
    runtime::start_epoch_ticker(runtime.engine());
    let catalog = Arc::new(Catalog::new(Arc::clone(&store) as _, runtime));
    catalog.refresh()?;

    let workers = match args.workers {
        Some(n) => usize::from(n),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let listeners = server::bind_listeners(args.listen, workers)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listeners[0].local_addr()?;

    let (stop, stopped) = tokio::sync::watch::channel(false);
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
        .block_on(shutdown_signal());
    let _ = stop.send(true);
    for worker in workers_running {
        let _ = worker.join();
    }
    let _ = refresher.join();
    tracing::info!("shut down");
    Ok(())
}

async fn shutdown_signal() {
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
