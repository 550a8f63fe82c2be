//! A fleet: Keyhole nodes sharing one state through real NATS JetStream
//! servers on loopback, each node serving from its own replica.

use crate::common;

use common::{Nats, Node, artifacts};
use std::time::{Duration, Instant};

fn github_signature(key: &[u8], body: &[u8]) -> String {
    format!("sha256={}", common::hmac_sha256_hex(key, body))
}

/// Waits (up to 10 s) until `check` holds, saying what it waited for.
fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "not within 10 s: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The status `node` answers a webhook signed with `key`.
fn webhook(node: &Node, key: &[u8]) -> u16 {
    let body = b"fleet";
    node.post(
        "/webhook",
        &[("x-hub-signature-256", &github_signature(key, body))],
        body,
    )
    .status
}

#[test]
fn what_one_replica_is_told_every_node_of_the_fleet_serves() {
    let nats = Nats::cluster();
    let a = Node::in_fleet(&nats.urls());
    let old_key = b"first webhook key";
    a.put_secret("gh-webhook", old_key);
    a.deploy_granted(
        artifacts::WEBHOOK_VERIFY_MANIFEST,
        "webhook-verify",
        "GITHUB_WEBHOOK",
        "gh-webhook",
        "hmac",
    );
    let mut b = Node::in_same_fleet(&a);
    let mut c = Node::in_same_fleet(&a);
    b.start();
    c.start();
    for node in [&b, &c] {
        eventually(
            "the fleet's deployment and grant serve on a new node",
            || webhook(node, old_key) == 200,
        );
        assert_eq!(webhook(node, b"a wrong key"), 401);
    }

    // Rotated on A without grace: B and C follow.
    let new_key = b"second webhook key";
    let file = a.data.path().join("new.key");
    std::fs::write(&file, new_key).unwrap();
    a.ok(&[
        "secret",
        "rotate",
        "gh-webhook",
        "--from-file",
        file.to_str().unwrap(),
    ]);
    for node in [&b, &c] {
        eventually("the rotation is in force", || {
            webhook(node, new_key) == 200 && webhook(node, old_key) == 401
        });
    }

    // Revoked on A: B and C refuse.
    a.ok(&["revoke", "webhook-verify", "GITHUB_WEBHOOK"]);
    for node in [&b, &c] {
        eventually("the revocation is in force", || {
            webhook(node, new_key) != 200
        });
    }

    // Granted again through a node's admin API, with a token made for the fleet.
    let token = a.token(&["--name", "fleet-admin", "--role", "admin"]);
    let mut a_node = a;
    a_node.start_admin();
    let out = a_node
        .remote_command(&token)
        .args([
            "grant",
            "webhook-verify",
            "GITHUB_WEBHOOK",
            "--secret",
            "gh-webhook",
            "--allow",
            "hmac",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for node in [&b, &c] {
        eventually("the grant made through the admin API is in force", || {
            webhook(node, new_key) == 200
        });
    }

    // NATS's own storage holds ciphertext only.
    for (path, bytes) in nats.stored_files() {
        for key in [&old_key[..], &new_key[..]] {
            let found = common::found_in(key, &bytes);
            assert!(
                found.is_empty(),
                "{} holds a secret as {found:?}",
                path.display()
            );
        }
    }
}

#[test]
fn rotations_racing_from_three_replicas_make_versions_without_gaps_or_twins() {
    let nats = Nats::cluster();
    let a = Node::in_fleet(&nats.urls());
    a.put_secret("raced", b"version one");
    let b = Node::in_same_fleet(&a);
    let c = Node::in_same_fleet(&a);
    let replicas = [&a, &b, &c];
    let rounds = 34;
    let mut acknowledged = Vec::new();
    for round in 0..rounds {
        let children: Vec<_> = replicas
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let file = node.data.path().join("value");
                std::fs::write(&file, format!("round {round} replica {i}")).unwrap();
                node.command()
                    .args([
                        "secret",
                        "rotate",
                        "raced",
                        "--from-file",
                        file.to_str().unwrap(),
                    ])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            acknowledged.push(stdout);
        }
    }
    let versions = a.ok(&["secret", "versions", "raced", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&versions).unwrap();
    let mut numbers: Vec<u64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    numbers.sort_unstable();
    let expected: Vec<u64> = (1..=(1 + 3 * rounds as u64)).collect();
    assert_eq!(numbers, expected, "versions 1..n, no gap, no twin");
    // Every acknowledged rotation named a version of its own.
    let mut said: Vec<String> = acknowledged
        .iter()
        .map(|s| {
            s.split("to version ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap_or_else(|| panic!("no version in `{s}`"))
                .to_owned()
        })
        .collect();
    said.sort();
    said.dedup();
    assert_eq!(said.len(), 3 * rounds, "{acknowledged:?}");
}

#[test]
fn a_cluster_that_cannot_be_used_is_a_clear_error_and_nothing_is_written() {
    // Nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let lonely = Node::in_fleet(&format!("nats://127.0.0.1:{port}"));
    let out = lonely.cli(&["secret", "list"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the cluster at nats://127.0.0.1:"),
        "{err}"
    );

    let bad = Node::in_fleet("http://127.0.0.1:4222");
    let err = String::from_utf8_lossy(&bad.cli(&["secret", "list"]).stderr).into_owned();
    assert!(err.contains("nats:// or tls://"), "{err}");

    // A fleet made under one master key refuses another.
    let nats = Nats::single();
    let first = Node::in_fleet(&nats.urls());
    first.put_secret("s", b"value");
    let stranger = Node::in_fleet(&nats.urls());
    let file = stranger.data.path().join("v");
    std::fs::write(&file, b"other").unwrap();
    let out = stranger.cli(&["secret", "put", "t", "--from-file", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("created under another master key"), "{err}");
    let listed = first.ok(&["secret", "list"]);
    assert!(listed.contains('s') && !listed.contains("t "), "{listed}");

    // A single node's store is not silently merged into a fleet.
    let single = Node::new_sharing_key(&first);
    single.put_secret("local", b"value");
    let out = single
        .command()
        .env("KEYHOLE_CLUSTER", nats.urls())
        .args(["secret", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds a single node's store"), "{err}");
}
