//! The compiled-module cache: a deploy compiles once and a node start loads
//! the result instead of compiling; an entry that was changed, or that was
//! written under another store's key, is never loaded — the node compiles
//! the component again and serves it; entries of undeployed functions go.

use crate::common;

use common::{Node, artifacts};
use std::path::PathBuf;

/// The cache entries in `node`'s data directory.
fn entries(node: &Node) -> Vec<PathBuf> {
    let dir = node.data.path().join("compiled");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    found.retain(|p| p.extension().is_some_and(|e| e == "cwasm"));
    found.sort();
    found
}

/// The `compiled=… from_cache=…` figures of the node's `nth` catalog load
/// (counted from 1 over every start of `node`).
///
/// The node logs its load on stderr, which a thread of the harness copies
/// while the test reads the address from stdout: the line may arrive a
/// moment after the node answers, so this waits for it (bounded) instead of
/// taking an earlier start's line for this one's.
fn nth_load(node: &Node, nth: usize) -> (usize, usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let logs = node.logs();
        let loads: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains("loaded functions and grants"))
            .collect();
        if let Some(line) = loads.get(nth - 1) {
            return (
                common::log_field(line, "compiled"),
                common::log_field(line, "from_cache"),
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "load {nth} was not logged:\n{logs}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn deploy_plain(node: &Node, name: &str, route: &str) {
    let manifest = node.write_manifest(name, artifacts::PLAIN_HELLO, route, "");
    node.ok(&["deploy", manifest.to_str().unwrap()]);
}

#[test]
fn a_start_loads_what_deploy_compiled_and_refuses_entries_it_cannot_trust() {
    let mut node = Node::new();
    deploy_plain(&node, "plain", "/plain");
    let cached = entries(&node);
    assert_eq!(cached.len(), 1, "deploy caches its compilation: {cached:?}");

    // A deployment the store refuses (its route is taken) leaves no entry,
    // though its compilation was cached before the store was asked.
    let clash = node.write_manifest("clash", artifacts::PROBE, "/plain", "");
    let refused = node.cli(&["deploy", clash.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert_eq!(entries(&node), cached, "the refused component's entry went");

    node.start();
    assert_eq!(node.get("/plain").status, 200);
    assert_eq!(nth_load(&node, 1), (0, 1), "the start compiled nothing");
    node.kill();

    // One flipped byte in the artifact: refused, compiled afresh, rewritten.
    let mut bytes = std::fs::read(&cached[0]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&cached[0], &bytes).unwrap();
    node.start();
    let reply = node.get("/plain");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        nth_load(&node, 2),
        (1, 0),
        "the damaged entry was not loaded"
    );
    assert!(
        node.logs().contains("failed its integrity check"),
        "{}",
        node.logs()
    );
    let rewritten = std::fs::read(&cached[0]).expect("the entry is written again");
    assert_ne!(rewritten, bytes);
    node.kill();

    // An entry made by another store (its own key) for the same component
    // is refused as well, though it is a genuine compilation.
    let other = Node::new();
    deploy_plain(&other, "plain", "/plain");
    let foreign = entries(&other);
    assert_eq!(foreign.len(), 1);
    assert_eq!(
        foreign[0].file_name(),
        cached[0].file_name(),
        "same component, same engine: same entry name"
    );
    std::fs::copy(&foreign[0], &cached[0]).unwrap();
    node.start();
    assert_eq!(node.get("/plain").status, 200);
    assert_eq!(
        nth_load(&node, 3),
        (1, 0),
        "another store's entry was not loaded"
    );
    node.kill();
    assert_ne!(
        std::fs::read(&cached[0]).unwrap(),
        std::fs::read(&foreign[0]).unwrap()
    );

    // A second function with its own component, then undeploying the
    // first: the running node drops the first one's entry.
    node.start();
    let manifest = node.write_manifest("probe", artifacts::PROBE, "/probe", "");
    node.ok(&["deploy", manifest.to_str().unwrap()]);
    node.wait_for("/probe/ambient", |r| r.status != 404);
    assert_eq!(entries(&node).len(), 2);
    node.ok(&["undeploy", "plain"]);
    node.wait_for("/plain", |r| r.status == 404);
    // The node forgets unused code just after it serves the new snapshot:
    // give it that moment (bounded) before looking.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while entries(&node).len() > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let left = entries(&node);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_ne!(left[0], cached[0], "the undeployed function's entry went");
    assert_ne!(node.get("/probe/ambient").status, 404);
}
