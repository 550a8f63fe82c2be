//! The admin listener: JSON over HTTP for token bearers, `/metrics`, and
//! the operator's console at `/ui/` ([`super::console`]).
//!
//! Every request is authenticated from its headers before its body is
//! read; bodies are size-limited by endpoint and caller (only a caller who
//! may deploy may send a deploy-sized body: [`super::wire::body_limit`])
//! and must arrive within [`BODY_TIMEOUT`]; requests in progress and
//! connections are capped ([`super::slots`]). Actions run on the blocking
//! pool, since they write the database (and a deploy compiles a component).

use super::slots::{self, AdminSlots};
use super::{Admin, AdminError, ErrorKind, console, wire};
use crate::admin::access::{Caller, Permission};
use crate::node::observe::{METRICS_CONTENT_TYPE, Observer};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use zeroize::Zeroizing;

/// How much of a too-large body is read (and dropped) before answering 413.
const DRAIN_LIMIT: usize = 4 * 1024 * 1024;

/// How long a client may take to send a request body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

type Response = hyper::Response<Full<Bytes>>;

fn respond(status: u16, content_type: &'static str, body: Vec<u8>) -> Response {
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    add_common_headers(response.headers_mut());
    response
}

/// Headers every admin answer carries, API or console: no MIME sniffing,
/// no referrer, and no caching (a reply may carry a token being created).
pub fn add_common_headers(headers: &mut hyper::HeaderMap) {
    use hyper::header::{CACHE_CONTROL, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS};
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn json_response(status: u16, value: &serde_json::Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    respond(status, "application/json", body)
}

fn error_response(e: &AdminError) -> Response {
    json_response(e.status(), &serde_json::json!({ "error": e }))
}

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the admin API on `listener` until `shutdown` completes: over TLS
/// with `tls`, in clear text (loopback only, as `keyhole serve` checks)
/// without it.
pub async fn serve(
    listener: TcpListener,
    admin: Arc<Admin>,
    observer: Arc<Observer>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let connections = Arc::new(tokio::sync::Semaphore::new(slots::MAX_CONNECTIONS));
    let requests = Arc::new(AdminSlots::default());
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let Ok((stream, peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Ok(connection) = Arc::clone(&connections).try_acquire_owned() else {
            tracing::debug!(
                %peer,
                "admin connection closed: {} are open already",
                slots::MAX_CONNECTIONS
            );
            continue;
        };
        let node = Node {
            admin: Arc::clone(&admin),
            observer: Arc::clone(&observer),
            slots: Arc::clone(&requests),
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _connection = connection;
            match acceptor {
                None => serve_connection(stream, peer, node).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, peer, node).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "admin TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "admin TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// What every admin connection serves from.
#[derive(Clone)]
struct Node {
    admin: Arc<Admin>,
    observer: Arc<Observer>,
    slots: Arc<AdminSlots>,
}

/// Serves the requests of one admin connection.
async fn serve_connection<S>(stream: S, peer: std::net::SocketAddr, node: Node)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let node = node.clone();
        async move {
            let response = answer(&node, peer.ip(), request).await;
            node.observer.admin_request(response.status().as_u16());
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    if let Err(e) = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(%peer, "admin connection ended: {e}");
    }
}

/// Authenticates, takes a slot, reads the body, and runs one request.
async fn answer(
    node: &Node,
    peer: std::net::IpAddr,
    request: hyper::Request<hyper::body::Incoming>,
) -> Response {
    let Node {
        admin,
        observer,
        slots,
    } = node;
    let (parts, body) = request.into_parts();
    // The console's pages hold no data: served to anyone, before (and
    // without) authentication; what they show comes from the API below.
    if console::is_console_path(parts.uri.path()) {
        drain(&parts.headers, body).await;
        return console::answer(parts.method.as_str(), parts.uri.path());
    }
    let authorization = parts
        .headers
        .get(hyper::header::AUTHORIZATION)
        .map(|v| Zeroizing::new(v.as_bytes().to_vec()));
    let caller = {
        let admin = Arc::clone(admin);
        match tokio::task::spawn_blocking(move || {
            admin.authenticate(peer, authorization.as_ref().map(|a| a.as_slice()))
        })
        .await
        {
            Ok(Ok(caller)) => caller,
            Ok(Err(e)) => {
                drain(&parts.headers, body).await;
                return error_response(&e);
            }
            Err(_) => {
                return error_response(&AdminError::new(
                    ErrorKind::Internal,
                    "authentication failed",
                ));
            }
        }
    };
    let method = parts.method.as_str().to_owned();
    let path = parts.uri.path().to_owned();
    if path == "/metrics" {
        return metrics(&caller, &method, observer);
    }
    if wire::is_deploy(&method, &path) {
        let refused = {
            let (admin, caller) = (Arc::clone(admin), caller.clone());
            tokio::task::spawn_blocking(move || admin.refuse_unread_deploy(&caller)).await
        };
        match refused {
            Ok(None) => {}
            Ok(Some(e)) => {
                drain(&parts.headers, body).await;
                return error_response(&e);
            }
            Err(_) => {
                return error_response(&AdminError::new(
                    ErrorKind::Internal,
                    "authorization failed",
                ));
            }
        }
    }
    let limit = wire::body_limit(
        &method,
        &path,
        caller.role().allows(Permission::FunctionsDeploy),
    );
    let _slot = match slots.take(&caller, limit > wire::MAX_BODY) {
        Ok(slot) => slot,
        Err(e) => {
            let mut response =
                error_response(&AdminError::new(ErrorKind::Unavailable, e.to_string()));
            response
                .headers_mut()
                .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
    };
    let body = match read_body(&parts.headers, body, limit).await {
        Ok(body) => body,
        Err(e) => return error_response(&e),
    };
    let query = parts.uri.query().map(str::to_owned);
    let admin = Arc::clone(admin);
    let outcome = tokio::task::spawn_blocking(move || {
        let request = wire::parse(&method, &path, query.as_deref(), &body)?;
        drop(body);
        admin.handle(&caller, request)
    })
    .await;
    match outcome {
        Ok(Ok(value)) => json_response(200, &value),
        Ok(Err(e)) => error_response(&e),
        Err(_) => error_response(&AdminError::new(
            ErrorKind::Internal,
            "the request failed inside the node",
        )),
    }
}

fn metrics(caller: &Caller, method: &str, observer: &Observer) -> Response {
    if method != "GET" {
        return error_response(&AdminError::new(
            ErrorKind::MethodNotAllowed,
            "/metrics answers GET only",
        ));
    }
    if !caller.role().allows(Permission::MetricsRead) {
        return error_response(&AdminError::forbidden(caller, Permission::MetricsRead));
    }
    respond(
        200,
        METRICS_CONTENT_TYPE,
        observer.render_metrics().into_bytes(),
    )
}

/// Reads a body of at most `limit` bytes into memory that is wiped after
/// use (it may hold a secret value).
/// Reads and drops the body of a refused request, if it is small, so the
/// client gets the refusal rather than a reset connection; a large or slow
/// one is left unread.
async fn drain(headers: &hyper::HeaderMap, mut body: hyper::body::Incoming) {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > DRAIN_LIMIT) {
        return;
    }
    let read = async {
        let mut received = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                received += data.len();
                if received > DRAIN_LIMIT {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
}

async fn read_body(
    headers: &hyper::HeaderMap,
    mut body: hyper::body::Incoming,
    limit: usize,
) -> Result<Zeroizing<Vec<u8>>, AdminError> {
    let too_large = || {
        AdminError::new(
            ErrorKind::TooLarge,
            format!("the request body is larger than this endpoint's limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    // A body a little too large is read and dropped, so the client gets
    // the 413 instead of a reset connection; a huge one is not read at all.
    if declared.is_some_and(|len| len > limit.max(DRAIN_LIMIT)) {
        return Err(too_large());
    }
    // Sized up front, so growing never leaves an unwiped copy behind: to the
    // declared length, or to the limit for bodies that may carry a value
    // (a deploy's component is no secret).
    let capacity = match declared {
        Some(len) => len.min(limit),
        None if limit <= wire::MAX_BODY => limit,
        None => 0,
    };
    let mut buffer = Zeroizing::new(Vec::with_capacity(capacity));
    let mut over = false;
    let mut received = 0usize;
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame
                .map_err(|e| AdminError::bad_request(format!("reading the body failed: {e}")))?;
            if let Ok(data) = frame.into_data() {
                received += data.len();
                if over || buffer.len() + data.len() > limit {
                    over = true;
                    if received > limit.max(DRAIN_LIMIT) {
                        break;
                    }
                    continue;
                }
                buffer.extend_from_slice(&data);
            }
        }
        if over { Err(too_large()) } else { Ok(()) }
    };
    match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Ok(())) => Ok(buffer),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(AdminError::new(
            ErrorKind::Timeout,
            format!(
                "the request body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        )),
    }
}
