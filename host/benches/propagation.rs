//! Prints how fast an acknowledged change is in force on the nodes that
//! serve it: for each change (a rotation, a revocation, a grant, a
//! deployment), the time from the admin API's answer to the first request
//! on each node that sees the change, as a distribution over every change
//! and node.
//!
//! Two setups, each with `KEYHOLE_BENCH_FUNCTIONS` functions deployed
//! (default 1 000) and `KEYHOLE_BENCH_CHANGES` changes (default 200):
//! - **single node**: one node on its SQLite store, changed through its own
//!   admin API;
//! - **fleet**: three NATS servers (JetStream R3) and three nodes, changed
//!   through node A's admin API; B and C learn of each change from NATS.
//!
//! `cargo bench -p keyhole-host --bench propagation` (needs `nats-server`:
//! `./scripts/test` installs it into `target/test-python`, or set
//! `KEYHOLE_TEST_NATS_SERVER`). `bench/run propagation` runs it.
//!
//! `KEYHOLE_BENCH_NODE_LOG=1` also prints the single node's last log lines
//! (each load says how many functions it reloaded and how long it took).
//!
//! A request is made to one node at a time, round-robin, so the figures
//! include up to one request per node of the probe's own delay (a few
//! hundred microseconds each on loopback).

#[path = "../../tests/all/common/mod.rs"]
mod common;

use base64::Engine as _;
use common::{Nats, Node, artifacts, github_signature};
use std::time::{Duration, Instant};

/// How long a node may take to show a change before the run gives up on it.
const GIVE_UP: Duration = Duration::from_secs(30);

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn env_number(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, not {v:?}")),
        Err(_) => default,
    }
}

/// The four kinds of change measured, in the order they cycle.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Rotation,
    Revocation,
    Grant,
    Deployment,
}

const KINDS: [Kind; 4] = [
    Kind::Rotation,
    Kind::Revocation,
    Kind::Grant,
    Kind::Deployment,
];

/// The admin API of the node the changes are made through.
struct Writer<'a> {
    node: &'a Node,
    token: String,
}

impl Writer<'_> {
    /// Sends one admin request and panics unless it succeeded.
    fn send(&self, method: &str, path: &str, body: &[u8]) {
        let reply = self
            .node
            .admin_request(method, path, Some(&self.token), body);
        assert!(
            (200..300).contains(&reply.status),
            "{method} {path}: {reply:?}"
        );
    }
}

/// A deploy body for `plain-hello` as function `name` at `route`.
fn deploy_body(component: &str, name: &str, route: &str) -> Vec<u8> {
    let manifest = format!("name = \"{name}\"\ncomponent = \"c.wasm\"\nroutes = [\"{route}\"]\n");
    serde_json::to_vec(&serde_json::json!({
        "manifest": manifest,
        "manifest_path": format!("{name}.toml"),
        "component_base64": component,
    }))
    .unwrap()
}

/// The status `node` answers a webhook signed with `key`.
fn webhook(node: &Node, key: &[u8]) -> u16 {
    let body = b"propagation";
    node.post(
        "/webhook",
        &[("x-hub-signature-256", &github_signature(key, body))],
        body,
    )
    .status
}

/// Waits until every node serves `path`.
fn wait_serving(nodes: &[&Node], what: &str, check: impl Fn(&Node) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(600);
    for node in nodes {
        while !check(node) {
            assert!(Instant::now() < deadline, "not within 600 s: {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Deploys `count` copies of `plain-hello` (`f0`…) through `writer`.
fn deploy_many(writer: &Writer<'_>, component: &str, count: usize) {
    let began = Instant::now();
    for i in 0..count {
        let body = deploy_body(component, &format!("f{i}"), &format!("/f{i}"));
        writer.send("POST", "/v1/functions", &body);
    }
    println!(
        "  deployed {count} functions through the admin API in {:.1} s",
        began.elapsed().as_secs_f64()
    );
}

/// One measured change: its kind, which node, how long until it showed.
struct Seen {
    kind: Kind,
    node: usize,
    after: Duration,
}

/// Makes `changes` changes through `writer` and times each on `nodes`.
/// Returns what was seen and each change's admin round trip.
fn measure(
    writer: &Writer<'_>,
    nodes: &[&Node],
    component: &str,
    changes: usize,
) -> (Vec<Seen>, Vec<Duration>) {
    let mut seen = Vec::new();
    let mut writes = Vec::new();
    let mut key = b"webhook key 0".to_vec();
    for round in 0..changes {
        let kind = KINDS[round % KINDS.len()];
        let extra = format!("/extra{round}");
        let sent = Instant::now();
        match kind {
            Kind::Rotation => {
                key = format!("webhook key {}", round + 1).into_bytes();
                let body = serde_json::json!({ "value": b64(&key) }).to_string();
                writer.send("POST", "/v1/secrets/gh-webhook/rotate", body.as_bytes());
            }
            Kind::Revocation => {
                writer.send("DELETE", "/v1/grants/webhook-verify/GITHUB_WEBHOOK", b"");
            }
            Kind::Grant => {
                writer.send(
                    "PUT",
                    "/v1/grants/webhook-verify/GITHUB_WEBHOOK",
                    br#"{"secret":"gh-webhook","allow":["hmac"]}"#,
                );
            }
            Kind::Deployment => {
                let body = deploy_body(component, &format!("extra{round}"), &extra);
                writer.send("POST", "/v1/functions", &body);
            }
        }
        let acknowledged = Instant::now();
        writes.push(acknowledged - sent);
        let shows = |node: &Node| match kind {
            Kind::Rotation | Kind::Grant => webhook(node, &key) == 200,
            Kind::Revocation => webhook(node, &key) != 200,
            Kind::Deployment => node.get(&extra).status == 200,
        };
        let mut pending: Vec<usize> = (0..nodes.len()).collect();
        while !pending.is_empty() {
            pending.retain(|&i| {
                if shows(nodes[i]) {
                    seen.push(Seen {
                        kind,
                        node: i,
                        after: acknowledged.elapsed(),
                    });
                    false
                } else {
                    true
                }
            });
            assert!(
                acknowledged.elapsed() < GIVE_UP,
                "change {round} ({kind:?}) not seen on nodes {pending:?} within {GIVE_UP:?}"
            );
        }
    }
    (seen, writes)
}

/// `p50 … max` of `times`, in milliseconds.
fn distribution(times: &mut [Duration]) -> String {
    times.sort_unstable();
    let at = |p: f64| {
        let i = ((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1;
        times[i].as_secs_f64() * 1000.0
    };
    format!(
        "n {:>4}   p50 {:>7.2} ms   p90 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms",
        times.len(),
        at(0.50),
        at(0.90),
        at(0.99),
        at(1.0)
    )
}

/// Prints the distributions: all, per node, per kind, and the writes'.
fn report(names: &[&str], seen: &[Seen], writes: &mut [Duration]) {
    let mut all: Vec<Duration> = seen.iter().map(|s| s.after).collect();
    println!(
        "  {:<34} {}",
        "every change on every node",
        distribution(&mut all)
    );
    for (i, name) in names.iter().enumerate() {
        let mut times: Vec<Duration> = seen
            .iter()
            .filter(|s| s.node == i)
            .map(|s| s.after)
            .collect();
        println!(
            "  {:<34} {}",
            format!("on {name}"),
            distribution(&mut times)
        );
    }
    for kind in KINDS {
        let mut times: Vec<Duration> = seen
            .iter()
            .filter(|s| s.kind == kind)
            .map(|s| s.after)
            .collect();
        println!(
            "  {:<34} {}",
            format!("{kind:?}s, every node").to_lowercase(),
            distribution(&mut times)
        );
    }
    println!(
        "  {:<34} {}",
        "admin request round trip",
        distribution(writes)
    );
}

/// Puts the webhook secret, deploys `webhook-verify` granted it, and makes
/// an admin token, on `node`'s data directory (before it starts).
fn prepare(node: &Node) -> String {
    node.put_secret("gh-webhook", b"webhook key 0");
    node.deploy_granted(
        artifacts::WEBHOOK_VERIFY_MANIFEST,
        "webhook-verify",
        "GITHUB_WEBHOOK",
        "gh-webhook",
        "hmac",
    );
    node.token(&["--name", "bench", "--role", "admin"])
}

fn single_node(component: &str, functions: usize, changes: usize) {
    println!(
        "==> single node (SQLite): {functions} functions, {changes} changes through its admin API"
    );
    let mut node = Node::new();
    let token = prepare(&node);
    node.start_admin();
    let writer = Writer { node: &node, token };
    deploy_many(&writer, component, functions.saturating_sub(1));
    let last = format!("/f{}", functions.saturating_sub(2));
    wait_serving(&[&node], "every function serves", |n| {
        n.get(&last).status == 200
    });
    let (seen, mut writes) = measure(&writer, &[&node], component, changes);
    report(&["the node"], &seen, &mut writes);
    if std::env::var_os("KEYHOLE_BENCH_NODE_LOG").is_some() {
        let logs = node.logs();
        let lines: Vec<&str> = logs.lines().collect();
        for line in &lines[lines.len().saturating_sub(60)..] {
            println!("    {line}");
        }
    }
}

fn fleet(component: &str, functions: usize, changes: usize) {
    println!(
        "==> fleet: 3 NATS servers, 3 nodes, {functions} functions, {changes} changes through node A's admin API"
    );
    let nats = Nats::cluster();
    let mut a = Node::in_fleet(&nats.urls());
    let token = prepare(&a);
    let mut b = Node::in_same_fleet(&a);
    let mut c = Node::in_same_fleet(&a);
    a.start_admin();
    b.start();
    c.start();
    let writer = Writer { node: &a, token };
    deploy_many(&writer, component, functions.saturating_sub(1));
    let last = format!("/f{}", functions.saturating_sub(2));
    let began = Instant::now();
    wait_serving(&[&a, &b, &c], "every function serves everywhere", |n| {
        n.get(&last).status == 200 && webhook(n, b"webhook key 0") == 200
    });
    println!(
        "  every node served them all {:.1} s after the last deploy",
        began.elapsed().as_secs_f64()
    );
    let (seen, mut writes) = measure(&writer, &[&a, &b, &c], component, changes);
    report(
        &["A (the writer)", "B (through NATS)", "C (through NATS)"],
        &seen,
        &mut writes,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a filter names one setup.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let functions = env_number("KEYHOLE_BENCH_FUNCTIONS", 1000).max(2);
    let changes = env_number("KEYHOLE_BENCH_CHANGES", 200).max(1);
    let component = b64(&std::fs::read(artifacts::PLAIN_HELLO).unwrap());
    if wanted("single") {
        single_node(&component, functions, changes);
    }
    if wanted("fleet") {
        fleet(&component, functions, changes);
    }
}
