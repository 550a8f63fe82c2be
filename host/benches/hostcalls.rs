//! Micro-benchmarks of what every request pays before and besides its own
//! work: a fresh instance of a function (store, instantiation, teardown),
//! in-process with the node's own engine and request-store setup; and the
//! `keyhole:secrets` host-call round trips, timed from inside a guest on a
//! real node.
//!
//! `cargo bench -p keyhole-host --bench hostcalls` (`KEYHOLE_BENCH_ROUNDS`,
//! default 200 000). Prints nanoseconds per operation with `RUST_BACKTRACE`
//! as the environment has it: for instantiation the best of five batches;
//! for host calls the median over probe requests small enough that the
//! audit writer's pace does not enter, and then the sustained rate of one
//! request making every call, which a slow audit writer bounds.

#[path = "../../tests/all/common/mod.rs"]
mod common;

use common::{Node, ROUNDS_PER_REQUEST, artifacts};
use keyhole_host::engine::runtime::Runtime;
use keyhole_host::node::catalog::LoadedFunction;
use keyhole_host::node::invoke::request_store;
use keyhole_host::node::observe::Observer;
use keyhole_host::secrets::FunctionSecrets;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BATCHES: usize = 5;

/// The allocator the `keyhole` binary uses, so the figures are the node's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let rounds: u32 = std::env::var("KEYHOLE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    println!(
        "RUST_BACKTRACE {}",
        std::env::var("RUST_BACKTRACE").map_or("unset".into(), |v| format!("={v}"))
    );
    instantiation(rounds / 10);
    host_calls(rounds);
}

/// A loaded function as the catalog builds it, with no bindings.
fn loaded(runtime: &Runtime, observer: &Arc<Observer>, name: &str, path: &str) -> LoadedFunction {
    let bytes = std::fs::read(path).expect("the built component");
    let name: Arc<str> = name.into();
    LoadedFunction {
        pre: runtime.prepare(&bytes).expect("the component loads"),
        metrics: observer.function_metrics(&name),
        name,
        memory_bytes: 16 << 20,
        timeout: Duration::from_secs(2),
        secrets: Arc::new(FunctionSecrets::new(HashMap::new())),
        config: Arc::default(),
        share: Arc::default(),
        weight: 1,
        reserved_memory: 16 << 20,
    }
}

/// The best of [`BATCHES`] batches of `rounds` calls of `f`, in ns each.
fn best_ns(rounds: u32, mut f: impl FnMut()) -> f64 {
    (0..BATCHES)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..rounds {
                f();
            }
            start.elapsed().as_nanos() as f64 / f64::from(rounds)
        })
        .fold(f64::INFINITY, f64::min)
}

fn instantiation(rounds: u32) {
    let runtime = Runtime::new().expect("the engine");
    let observer = Arc::new(Observer::default());
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (name, path) in [
        ("plain-hello", artifacts::PLAIN_HELLO),
        ("hello-secret", artifacts::HELLO_SECRET),
        ("webhook-verify", artifacts::WEBHOOK_VERIFY),
    ] {
        let function = loaded(&runtime, &observer, name, path);
        let mut id = 0;
        let store_only = best_ns(rounds, || {
            id += 1;
            drop(std::hint::black_box(request_store(&function, id)));
        });
        let instantiate = best_ns(rounds, || {
            id += 1;
            let mut store = request_store(&function, id);
            let instance = tokio
                .block_on(function.pre.instantiate_async(&mut store))
                .expect("instantiates");
            std::hint::black_box(instance);
            drop(store);
        });
        println!("{name:<16} request store, made and dropped        {store_only:>8.0} ns");
        println!("{name:<16} store + instantiate + teardown         {instantiate:>8.0} ns");
    }
}

fn host_calls(rounds: u32) {
    let mut node = Node::new();
    node.put_secret("webhook", b"bench-webhook-key");
    node.granted_probe("probe", "/probe", "webhook", "hmac", "");
    node.start();
    let requests = (rounds / ROUNDS_PER_REQUEST).max(1);
    for (label, median) in node.probe_host_call_round_trips(requests) {
        println!(
            "host call round trip, timed in the guest: {label} {median} ns (median of {requests} requests of {ROUNDS_PER_REQUEST})"
        );
    }
    // One request making every call in a row, millions of audit records a
    // second: where the writer stores them slower (a slow disk), a full
    // queue makes the request wait for it.
    for line in node.probe_host_call_timings(rounds) {
        println!("sustained, {rounds} calls in one request: {line}");
    }
}
