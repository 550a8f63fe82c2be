//! Running one request in a fresh instance of a function.
//!
//! Every request gets its own store and instance, so nothing a request
//! opened or revealed survives it. A trap or a timeout fails that request
//! alone (500 / 504); the node keeps serving. The instance lives no longer
//! than someone waits for it: if the client goes away before the response
//! head, or its body arrives slower than [`crate::node::paced_body`]'s floor
//! (408), the instance is ended at once and its admission ticket, which it
//! carries, gives its slot back.

use crate::engine::runtime::{MAX_COMPONENT_HANDLES, MAX_HOSTCALL_INPUT_BYTES, RequestState};
use crate::node::admission::{Admitted, Limit};
use crate::node::catalog::LoadedFunction;
use crate::node::paced_body::PacedBody;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::Resource;
use wasmtime::{PoolConcurrencyLimitError, Store, Trap, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p2::types::{HostIncomingRequest, HostResponseOutparam};

/// How a request that never got a response from its guest failed.
#[derive(Debug)]
enum Failure {
    /// The guest trapped (including running out of memory).
    Trap(wasmtime::Error),
    /// The request's wall-clock limit ran out.
    Timeout,
    /// The guest returned without setting a response.
    NoResponse,
    /// Every instance slot of the node is in use.
    Overloaded,
    /// The request body arrived too slowly (after the response head).
    SlowBody,
}

/// A plain-text response made by the node itself.
pub fn text_response(
    status: StatusCode,
    text: impl Into<String>,
) -> hyper::Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from(text.into()))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = hyper::Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// How many Keyhole nodes `request` passed through ([`crate::outbound::HOPS_HEADER`]),
/// 0 without the header; `None` when the header is not a small number (or
/// is repeated), which is treated as too many.
fn incoming_hops(request: &hyper::Request<hyper::body::Incoming>) -> Option<u8> {
    let mut values = request
        .headers()
        .get_all(crate::outbound::HOPS_HEADER)
        .iter();
    match (values.next(), values.next()) {
        (None, _) => Some(0),
        (Some(value), None) => value.to_str().ok()?.trim().parse().ok(),
        _ => None,
    }
}

/// Aborts a task when dropped, unless disarmed: what ends an instance when
/// nobody waits for its response any more.
struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl AbortOnDrop {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
}

/// Serves `request` with a fresh instance of `function`, in the place
/// `ticket` admitted it to (held until the instance is gone). `id` tags
/// log lines.
pub async fn invoke(
    function: Arc<LoadedFunction>,
    request: hyper::Request<hyper::body::Incoming>,
    id: u64,
    ticket: Admitted,
) -> hyper::Response<HyperOutgoingBody> {
    let name = Arc::clone(&function.name);
    let metrics = Arc::clone(&function.metrics);
    let hops = match incoming_hops(&request) {
        Some(hops) if hops < crate::outbound::MAX_HOPS => hops,
        _ => {
            tracing::warn!(request = id, function = %name, "refused: the request passed through too many Keyhole nodes (a function calling back into the node?)");
            return text_response(
                StatusCode::LOOP_DETECTED,
                format!(
                    "loop detected: this request passed through {} Keyhole nodes or more\n",
                    crate::outbound::MAX_HOPS
                ),
            );
        }
    };
    let mut store = request_store(&function, id);
    store.data_mut().set_hops(hops);

    let (sender, mut receiver) = tokio::sync::oneshot::channel();
    let (parts, body) = request.into_parts();
    let (body, pace) = PacedBody::new(body);
    let request = hyper::Request::from_parts(parts, body);
    let (req, out) = match request_resources(&mut store, request, sender) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(
                request = id,
                function = %name,
                "bad request: {}",
                crate::redact::guest_log::escape_for_log(&e.to_string())
            );
            return text_response(
                StatusCode::BAD_REQUEST,
                "bad request: no usable Host header or authority\n",
            );
        }
    };

    let timeout = function.timeout;
    let admission = Arc::clone(ticket.admission());
    let client = ticket.client();
    let observer = Arc::clone(metrics.observer());
    let task_pace = Arc::clone(&pace);
    let task = tokio::spawn(async move {
        // Declared before the store is moved in, so it is dropped after
        // it: the slot is given back once the pool has its instance back.
        let _ticket = ticket;
        let mut store = store;
        let run = async {
            let instance = function.pre.instantiate_async(&mut store).await?;
            instance
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        };
        // The body's pace is watched here too, so a guest that answers
        // first and reads its body after is not dribbled to its timeout.
        tokio::select! {
            ran = tokio::time::timeout(timeout, run) => match ran {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(classify(e)),
                Err(_elapsed) => Some(Failure::Timeout),
            },
            () = task_pace.until_too_slow() => Some(Failure::SlowBody),
        }
    });

    // If the client goes away, this future is dropped, and the instance
    // with it.
    let mut abort = AbortOnDrop(Some(task.abort_handle()));
    let received = tokio::select! {
        received = &mut receiver => received,
        () = pace.until_too_slow() => {
            return slow_body(&name, id, client, &admission, &observer);
        }
    };
    match received {
        Ok(Ok(response)) => {
            // The guest may still be writing the body: let it.
            abort.disarm();
            response
        }
        Ok(Err(_code)) => {
            // The error code may carry guest-chosen text: keep it out of the log.
            tracing::warn!(request = id, function = %name, "function answered with an error code");
            text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("function `{name}` failed to answer\n"),
            )
        }
        Err(_dropped) => {
            let failure = match task.await {
                Ok(Some(failure)) => failure,
                Ok(None) => Failure::NoResponse,
                Err(join) => Failure::Trap(wasmtime::Error::msg(join.to_string())),
            };
            match failure {
                Failure::Trap(_) => metrics.trap(),
                Failure::Timeout => metrics.timeout(),
                Failure::NoResponse | Failure::Overloaded | Failure::SlowBody => {}
            }
            failure_response(&name, id, failure)
        }
    }
}

/// The answer to a request whose body arrived too slowly; dropping the
/// caller's abort guard ends the instance.
fn slow_body(
    name: &str,
    id: u64,
    client: std::net::IpAddr,
    admission: &crate::node::admission::Admission,
    observer: &crate::node::observe::Observer,
) -> hyper::Response<HyperOutgoingBody> {
    observer.refused(Limit::SlowBody);
    if admission.should_log(Limit::SlowBody) {
        tracing::warn!(
            request = id,
            function = name,
            %client,
            limit = Limit::SlowBody.as_str(),
            "request ended: its body arrived slower than {} bytes/s after {} s of waiting",
            crate::node::paced_body::BODY_FLOOR_BYTES_PER_SEC,
            crate::node::paced_body::BODY_GRACE.as_secs()
        );
    }
    let mut response = text_response(StatusCode::REQUEST_TIMEOUT, Limit::SlowBody.explain(name));
    response.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    response
}

/// A fresh store for request `id` of `function`, with the function's
/// memory limit, the per-request limits, and its deadline (counted from
/// now) armed: what every request's instance lives in.
pub fn request_store(function: &LoadedFunction, id: u64) -> Store<RequestState> {
    let state = RequestState::new(
        Arc::clone(&function.name),
        id,
        Arc::clone(&function.secrets),
        Arc::clone(&function.config),
        function.memory_bytes,
        Arc::clone(&function.metrics),
    );
    let mut store = Store::new(function.pre.engine(), state);
    store.limiter(|state| &mut state.limits);
    store.set_hostcall_fuel(MAX_HOSTCALL_INPUT_BYTES);
    store.set_max_component_handles(MAX_COMPONENT_HANDLES);
    let deadline = Instant::now() + function.timeout;
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |mut store| {
        Ok(if Instant::now() >= deadline {
            UpdateDeadline::Interrupt
        } else if let Some(wait) = store.data_mut().audit_backpressure() {
            // Its audit records outran the writer: this request waits, its
            // worker serves others meanwhile.
            UpdateDeadline::YieldCustom(1, wait)
        } else {
            // Tokio's own yield lets the worker poll its sockets before
            // the guest runs again; a plain yield requeues the guest at
            // once, and a worker polls for I/O only every 61 task turns,
            // which behind a guest running 10 ms slices is over half a
            // second for every other request on that worker.
            UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now()))
        })
    });
    store
}

/// The guest's view of the request and of where its response goes.
fn request_resources(
    store: &mut Store<RequestState>,
    request: hyper::Request<PacedBody<hyper::body::Incoming>>,
    sender: ResponseSender,
) -> wasmtime::Result<(
    Resource<HostIncomingRequest>,
    Resource<HostResponseOutparam>,
)> {
    let req = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, request)?;
    let out = store.data_mut().http().new_response_outparam(sender)?;
    Ok((req, out))
}

type ResponseSender =
    tokio::sync::oneshot::Sender<Result<hyper::Response<HyperOutgoingBody>, ErrorCode>>;

fn classify(error: wasmtime::Error) -> Failure {
    if error.is::<PoolConcurrencyLimitError>() {
        return Failure::Overloaded;
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Failure::Timeout,
        _ => Failure::Trap(error),
    }
}

fn failure_response(name: &str, id: u64, failure: Failure) -> hyper::Response<HyperOutgoingBody> {
    match failure {
        Failure::SlowBody => {
            text_response(StatusCode::REQUEST_TIMEOUT, Limit::SlowBody.explain(name))
        }
        Failure::Timeout => {
            tracing::warn!(request = id, function = name, "request timed out");
            text_response(
                StatusCode::GATEWAY_TIMEOUT,
                format!("function `{name}` timed out\n"),
            )
        }
        Failure::Trap(e) => {
            // The backtrace quotes the guest's own function names.
            tracing::warn!(
                request = id,
                function = name,
                "function trapped: {}",
                crate::redact::guest_log::escape_for_log(&format!("{e:#}"))
            );
            text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("function `{name}` failed\n"),
            )
        }
        Failure::Overloaded => {
            // Admission keeps the pool's slots for the requests it admits;
            // a component needing more core instances than it was weighed
            // at can still find the pool full.
            tracing::warn!(
                request = id,
                function = name,
                limit = Limit::NodeSlots.as_str(),
                "no free instance slot in the pool"
            );
            text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                Limit::NodeSlots.explain(name),
            )
        }
        Failure::NoResponse => {
            tracing::warn!(
                request = id,
                function = name,
                "function returned without a response"
            );
            text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("function `{name}` returned no response\n"),
            )
        }
    }
}
