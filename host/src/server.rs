//! The node's HTTP front door: accept connections, route each request by
//! path prefix, and keep the catalog current.

use crate::catalog::Catalog;
use crate::invoke::{invoke, text_response};
use hyper::StatusCode;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;

/// How often a running node checks the store for changes.
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(250);

/// Serves HTTP on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    catalog: Arc<Catalog>,
    shutdown: impl Future<Output = ()>,
) {
    let refresher = tokio::spawn(refresh_loop(Arc::clone(&catalog)));
    let next_id = Arc::new(AtomicU64::new(1));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let catalog = Arc::clone(&catalog);
        let next_id = Arc::clone(&next_id);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                move |request: hyper::Request<hyper::body::Incoming>| {
                    let catalog = Arc::clone(&catalog);
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    async move {
                        let snapshot = catalog.snapshot();
                        let response = match snapshot.route(request.uri().path()) {
                            Some(function) => invoke(Arc::clone(function), request, id).await,
                            None => text_response(
                                StatusCode::NOT_FOUND,
                                format!("no function serves {}\n", request.uri().path()),
                            ),
                        };
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
    refresher.abort();
}

async fn refresh_loop(catalog: Arc<Catalog>) {
    let mut ticker = tokio::time::interval(REFRESH_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let catalog = Arc::clone(&catalog);
        match tokio::task::spawn_blocking(move || catalog.refresh()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!("reloading from the store failed: {e}"),
            Err(e) => tracing::error!("reloading from the store panicked: {e}"),
        }
    }
}
