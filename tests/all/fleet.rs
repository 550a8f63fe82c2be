//! A fleet: Keyhole nodes sharing one state through real NATS JetStream
//! servers on loopback, each node serving from its own replica.

use crate::common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{CutProxy, Nats, Node, artifacts, github_signature};
use std::time::{Duration, Instant};

/// Waits (up to 30 s: a node may be compiling a component first) until
/// `check` holds, saying what it waited for.
fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "not within 30 s: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The reply `node` gives a webhook signed with `key`: status and body.
fn webhook_reply(node: &Node, key: &[u8]) -> (u16, String) {
    let body = b"fleet";
    let reply = node.post(
        "/webhook",
        &[("x-hub-signature-256", &github_signature(key, body))],
        body,
    );
    (reply.status, reply.text())
}

/// The status `node` answers a webhook signed with `key`.
fn webhook(node: &Node, key: &[u8]) -> u16 {
    webhook_reply(node, key).0
}

/// The first replica of a fleet at `urls`, holding the webhook key `key`
/// as secret `gh-webhook`, with `webhook-verify` deployed and granted it.
fn fleet_serving_webhook(urls: &str, key: &[u8]) -> Node {
    let a = Node::in_fleet(urls);
    a.put_secret("gh-webhook", key);
    a.deploy_granted(
        artifacts::WEBHOOK_VERIFY_MANIFEST,
        "webhook-verify",
        "GITHUB_WEBHOOK",
        "gh-webhook",
        "hmac",
    );
    a
}

/// Another replica of `a`'s fleet, reaching the single NATS server of
/// `nats` only through a proxy the test can cut.
fn replica_behind_proxy(a: &Node, nats: &Nats) -> (Node, CutProxy) {
    let server = format!("127.0.0.1:{}", nats.servers[0].port);
    let proxy = CutProxy::start(server.parse().unwrap());
    let mut b = Node::in_same_fleet(a);
    b.cluster = Some(format!("nats://127.0.0.1:{}", proxy.port));
    (b, proxy)
}

#[test]
fn what_one_replica_is_told_every_node_of_the_fleet_serves() {
    let nats = Nats::cluster();
    let old_key = b"first webhook key";
    let a = fleet_serving_webhook(&nats.urls(), old_key);
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

    // NATS's own storage holds ciphertext only (and is where the test
    // looks: the fleet's genesis is there).
    let stored = nats.stored_files();
    assert!(stored.iter().any(|(_, bytes)| {
        common::found_in(b"keyhole-fleet/v1", bytes).contains(&"raw".to_owned())
    }));
    for (path, bytes) in stored {
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
fn a_component_the_fleet_holds_is_not_stored_again_and_every_node_runs_it() {
    let nats = Nats::single();
    let key = b"shared component key";
    let a = fleet_serving_webhook(&nats.urls(), key);
    let mut b = Node::in_same_fleet(&a);
    b.start();
    eventually("the first function serves on B", || webhook(&b, key) == 200);
    let stored = nats
        .last_sequence("OBJ_keyhole-components")
        .expect("the component bucket's stream");

    // The same component under another function: a re-store would replace
    // the chunks a follower may be reading at that moment.
    let manifest = a.write_manifest(
        "second-hook",
        artifacts::WEBHOOK_VERIFY,
        "/second",
        "[bindings.GITHUB_WEBHOOK]\nallow = [\"hmac\"]\n",
    );
    a.ok(&["deploy", manifest.to_str().unwrap()]);
    a.ok(&[
        "grant",
        "second-hook",
        "GITHUB_WEBHOOK",
        "--secret",
        "gh-webhook",
        "--allow",
        "hmac",
    ]);
    assert_eq!(
        nats.last_sequence("OBJ_keyhole-components"),
        Some(stored),
        "the component was stored again"
    );
    let body = b"fleet";
    eventually("the second function serves on B", || {
        b.post(
            "/second",
            &[("x-hub-signature-256", &github_signature(key, body))],
            body,
        )
        .status
            == 200
    });
}

#[test]
fn a_ten_mib_component_goes_through_the_object_store_and_serves_on_another_node() {
    let nats = Nats::single();
    let key = b"big component key";
    let a = fleet_serving_webhook(&nats.urls(), key);

    // webhook-verify with a 10 MiB custom section appended: a valid
    // component ten times the size of a JetStream message's limit.
    let mut component = std::fs::read(artifacts::WEBHOOK_VERIFY).unwrap();
    let name = b"keyhole-test-padding";
    let padding = vec![0x5a_u8; 10 * 1024 * 1024];
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(&padding);
    component.push(0); // a custom section
    let mut size = section.len();
    loop {
        let byte = (size & 0x7f) as u8;
        size >>= 7;
        if size == 0 {
            component.push(byte);
            break;
        }
        component.push(byte | 0x80);
    }
    component.extend_from_slice(&section);
    assert!(component.len() > 10 * 1024 * 1024);
    let path = a.data.path().join("big-webhook.wasm");
    std::fs::write(&path, &component).unwrap();
    let manifest = a.write_manifest(
        "big-hook",
        path.to_str().unwrap(),
        "/big",
        "[bindings.GITHUB_WEBHOOK]\nallow = [\"hmac\"]\n",
    );
    a.ok(&["deploy", manifest.to_str().unwrap()]);
    a.ok(&[
        "grant",
        "big-hook",
        "GITHUB_WEBHOOK",
        "--secret",
        "gh-webhook",
        "--allow",
        "hmac",
    ]);

    let mut b = Node::in_same_fleet(&a);
    b.start();
    let body = b"big";
    eventually("the 10 MiB component serves on B", || {
        b.post(
            "/big",
            &[("x-hub-signature-256", &github_signature(key, body))],
            body,
        )
        .status
            == 200
    });
    let listed = b.ok(&["functions", "--json"]);
    let functions: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let big = functions
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "big-hook")
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(
        big["component_size"].as_u64(),
        Some(component.len() as u64),
        "{big}"
    );
}

#[test]
fn rotations_racing_from_three_nodes_make_versions_without_gaps_or_twins() {
    let nats = Nats::cluster();
    let first = b"version one";
    let mut a = fleet_serving_webhook(&nats.urls(), first);
    let token = a.token(&["--name", "racer", "--role", "admin"]);
    let mut b = Node::in_same_fleet(&a);
    let mut c = Node::in_same_fleet(&a);
    for node in [&mut a, &mut b, &mut c] {
        node.start_admin();
    }
    let nodes = [&a, &b, &c];
    for node in nodes {
        eventually("every node serves the fleet's function", || {
            webhook(node, first) == 200
        });
    }

    // Each round, every node rotates the one secret at the same moment,
    // through its own admin API.
    let rounds = 100;
    let mut acknowledged: Vec<(u64, String)> = Vec::new();
    for round in 0..rounds {
        let start = std::sync::Barrier::new(nodes.len());
        let answers: Vec<(String, common::Reply)> = std::thread::scope(|scope| {
            let racers: Vec<_> = nodes
                .iter()
                .enumerate()
                .map(|(i, node)| {
                    let (start, token) = (&start, &token);
                    scope.spawn(move || {
                        let value = format!("round {round} node {i}");
                        let body =
                            serde_json::json!({ "value": STANDARD.encode(value.as_bytes()) });
                        start.wait();
                        let reply = node.admin_request(
                            "POST",
                            "/v1/secrets/gh-webhook/rotate",
                            Some(token),
                            body.to_string().as_bytes(),
                        );
                        (value, reply)
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        for (value, reply) in answers {
            assert_eq!(reply.status, 200, "round {round}: {}", reply.text());
            let said: serde_json::Value = serde_json::from_str(&reply.text()).unwrap();
            let version = said["version"].as_u64().expect("the version rotated to");
            acknowledged.push((version, value));
        }
    }

    // Versions 1..n, with no gap and no twin, on every node's replica.
    let expected: Vec<u64> = (1..=(1 + 3 * rounds as u64)).collect();
    for node in nodes {
        eventually("the node has applied every rotation", || {
            let listed: serde_json::Value =
                serde_json::from_str(&node.ok(&["secret", "versions", "gh-webhook", "--json"]))
                    .unwrap();
            let mut numbers: Vec<u64> = listed
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["version"].as_u64().unwrap())
                .collect();
            numbers.sort_unstable();
            numbers == expected
        });
    }
    // Every acknowledgement named a version of its own…
    let mut said: Vec<u64> = acknowledged.iter().map(|(version, _)| *version).collect();
    said.sort_unstable();
    said.dedup();
    assert_eq!(said.len(), 3 * rounds, "{acknowledged:?}");

    // …holding the value it acknowledged: made current again through A, each
    // one is the key another node then verifies with.
    for (version, value) in &acknowledged {
        let body = serde_json::json!({ "to": version });
        let reply = a.admin_request(
            "POST",
            "/v1/secrets/gh-webhook/rollback",
            Some(&token),
            body.to_string().as_bytes(),
        );
        assert_eq!(reply.status, 200, "rollback to {version}: {}", reply.text());
        let other = nodes[1 + (*version as usize) % 2];
        eventually(
            &format!("version {version} verifies with its value"),
            || webhook(other, value.as_bytes()) == 200,
        );
    }
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
    assert!(!listed.contains("\nt "), "{listed}");
    let stranger_rows: i64 = stranger
        .db()
        .query_row("SELECT COUNT(*) FROM secrets", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stranger_rows, 0, "nothing written");

    // A fleet's replica opened without its fleet takes no admin write.
    let out = first
        .command()
        .env_remove("KEYHOLE_CLUSTER")
        .args([
            "secret",
            "put",
            "local",
            "--from-file",
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is a replica of fleet"), "{err}");

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

#[test]
fn wrong_cluster_credentials_are_a_clear_error_that_prints_no_password_and_writes_nothing() {
    let password = "right-horse-battery";
    let nats = Nats::single_with_user("keyhole", password);
    let port = nats.servers[0].port;
    let good = Node::in_fleet(&format!("nats://keyhole:{password}@127.0.0.1:{port}"));
    good.put_secret("s", b"value");

    let wrong = "wrong-staple-guess";
    let file = good.data.path().join("v");
    std::fs::write(&file, b"other").unwrap();
    for (what, url, says) in [
        (
            "a wrong password",
            format!("nats://keyhole:{wrong}@127.0.0.1:{port}"),
            format!("the cluster at nats://…@127.0.0.1:{port} refused these credentials"),
        ),
        (
            "no credentials",
            format!("nats://127.0.0.1:{port}"),
            format!("the cluster at nats://127.0.0.1:{port} asks for a login and none was given"),
        ),
    ] {
        let stranger = Node::new_sharing_key(&good);
        let out = stranger
            .command()
            .env("KEYHOLE_CLUSTER", &url)
            .args(["secret", "put", "t", "--from-file", file.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{what}: accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&says) && err.contains("authorization violation"),
            "{what}: {err}"
        );
        assert!(
            !err.contains(wrong) && !err.contains(password),
            "{what}: {err}"
        );
        let rows: i64 = stranger
            .db()
            .query_row("SELECT COUNT(*) FROM secrets", [], |r| r.get(0))
            .unwrap_or(0);
        assert_eq!(rows, 0, "{what}: nothing written");
    }
    // A credentials file that is not there is named.
    let out = good
        .command()
        .env(
            "KEYHOLE_CLUSTER_CREDS",
            good.data.path().join("missing.creds"),
        )
        .args(["secret", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing.creds"), "{err}");
    // The fleet holds only what the right credentials wrote.
    let listed = good.ok(&["secret", "list"]);
    assert!(
        listed.contains("s ") && !listed.contains("\nt "),
        "{listed}"
    );
}

/// A metric's value from `node`'s `/metrics` on its admin listener.
fn metric(node: &Node, token: &str, name: &str) -> Option<f64> {
    let reply = node.admin_request("GET", "/metrics", Some(token), b"");
    if reply.status != 200 {
        return None;
    }
    reply
        .text()
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

#[test]
fn a_node_cut_off_serves_its_last_state_and_catches_up_when_it_is_back() {
    let nats = Nats::single();
    let key = b"partition webhook key";
    let a = fleet_serving_webhook(&nats.urls(), key);
    let (mut b, proxy) = replica_behind_proxy(&a, &nats);
    let token = a.token(&["--name", "ops", "--role", "admin"]);
    b.start_admin();
    eventually("B serves the fleet's state", || webhook(&b, key) == 200);
    eventually("B says it is connected", || {
        metric(&b, &token, "keyhole_cluster_connected") == Some(1.0)
    });

    // Cut off: B serves what it has, says so, and misses the revocation.
    proxy.cut();
    eventually("B says it is cut off", || {
        metric(&b, &token, "keyhole_cluster_connected") == Some(0.0)
    });
    a.ok(&["revoke", "webhook-verify", "GITHUB_WEBHOOK"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(webhook(&b, key), 200, "cut off, B serves its last state");
    assert!(metric(&b, &token, "keyhole_cluster_seconds_since_sync").unwrap() > 0.3);
    assert!(b.logs().contains("cut off from"), "{}", b.logs());
    // `keyhole status` says so too, and fails, as a health check should.
    let (ok, out, err) = status(&b, &token);
    assert!(!ok, "a cut-off node is reported healthy:\n{out}");
    assert!(out.contains("connected: no"), "{out}");
    assert!(err.contains("cut off from the fleet"), "{err}");

    // Back: the revocation made meanwhile is in force.
    proxy.restore();
    eventually("B applies the revocation once back", || {
        webhook(&b, key) != 200
    });
    assert!(
        webhook_reply(&b, key).1.contains("no grant"),
        "{:?}",
        webhook_reply(&b, key)
    );
    let applied = metric(&b, &token, "keyhole_cluster_applied_revision").unwrap();
    assert!(
        applied >= 5.0,
        "genesis, put, deploy, grant, revoke: {applied}"
    );

    // Restarted while cut off, B serves its replica.
    a.ok(&[
        "grant",
        "webhook-verify",
        "GITHUB_WEBHOOK",
        "--secret",
        "gh-webhook",
        "--allow",
        "hmac",
    ]);
    eventually("B serves the new grant", || webhook(&b, key) == 200);
    proxy.cut();
    b.kill();
    b.start_admin();
    assert_eq!(webhook(&b, key), 200, "restarted while cut off, B serves");
    assert_eq!(metric(&b, &token, "keyhole_cluster_connected"), Some(0.0));

    // Its admin writes are refused, clearly, and change nothing.
    let out = b
        .remote_command(&token)
        .args(["revoke", "webhook-verify", "GITHUB_WEBHOOK"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cluster"), "{err}");
    assert_eq!(webhook(&b, key), 200);
    proxy.restore();
    eventually("B joins the fleet again", || {
        metric(&b, &token, "keyhole_cluster_connected") == Some(1.0)
    });
    let (ok, out, err) = status(&b, &token);
    assert!(ok, "{out}{err}");
    assert!(out.contains("connected: yes"), "{out}");
    let fleet = a.ok(&["status", "--json"]);
    let fleet: serde_json::Value = serde_json::from_str(&fleet).unwrap();
    assert_eq!(fleet["running"], false);
    assert!(fleet["fleet"]["applied"].as_u64().unwrap() >= 6, "{fleet}");
}

/// The name `node`'s records carry in the fleet's audit trail.
fn audit_node_name(node: &Node) -> String {
    node.db()
        .query_row("SELECT value FROM meta WHERE key = 'node_id'", [], |r| {
            r.get(0)
        })
        .unwrap()
}

/// `keyhole status` through `node`'s admin API: success, stdout, stderr.
fn status(node: &Node, token: &str) -> (bool, String, String) {
    let out = node.remote_command(token).arg("status").output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn with_max_stale_a_node_cut_off_too_long_refuses_secret_operations() {
    let nats = Nats::single();
    let key = b"stale webhook key";
    let a = fleet_serving_webhook(&nats.urls(), key);
    let (mut b, proxy) = replica_behind_proxy(&a, &nats);
    b.start_with_args(&["--max-stale", "2s"]);
    eventually("B serves the fleet's state", || webhook(&b, key) == 200);
    proxy.cut();
    let cut = Instant::now();
    eventually("B turns unavailable once cut off past --max-stale", || {
        webhook(&b, key) == 503
    });
    // Not before 2 s from the node's last contact, which was up to 100 ms
    // before the cut (the link is checked every 100 ms).
    assert!(
        cut.elapsed() >= Duration::from_millis(1_850),
        "not before 2 s: {:?}",
        cut.elapsed()
    );
    let (_, text) = webhook_reply(&b, key);
    assert!(text.contains("--max-stale"), "{text}");
    assert!(b.logs().contains("past --max-stale"), "{}", b.logs());
    proxy.restore();
    eventually("B serves again once back", || webhook(&b, key) == 200);
}

#[test]
fn an_entry_forged_without_the_master_key_is_never_applied() {
    use async_nats::jetstream;
    let nats = Nats::single();
    let a = Node::in_fleet(&nats.urls());
    let key = b"forgery webhook key";
    a.put_secret("gh-webhook", key);
    a.ok(&["deploy", artifacts::WEBHOOK_VERIFY_MANIFEST]);
    let mut b = Node::in_same_fleet(&a);
    b.start();
    eventually("B has the deployment", || webhook(&b, key) == 503);

    // Someone who can publish to NATS, but has no master key, appends a
    // grant: the rows a real grant would carry, with no valid MAC.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = async_nats::connect(nats.urls()).await.unwrap();
        let js = jetstream::new(client);
        let mut stream = js.get_stream("KEYHOLE_STATE").await.unwrap();
        let last = stream.info().await.unwrap().state.last_sequence;
        let digest: String = a
            .db()
            .query_row("SELECT component_sha256 FROM functions", [], |r| r.get(0))
            .unwrap();
        let forged = serde_json::json!({"rows": [{
            "table": "grants",
            "key": [{"t":"s","v":"webhook-verify"},{"t":"s","v":"GITHUB_WEBHOOK"}],
            "row": [
                ["function", {"t":"s","v":"webhook-verify"}],
                ["binding", {"t":"s","v":"GITHUB_WEBHOOK"}],
                ["secret", {"t":"s","v":"gh-webhook"}],
                ["allow", {"t":"s","v":"hmac,reveal"}],
                ["egress", {"t":"s","v":""}],
                ["digest", {"t":"s","v":digest}],
                ["follow_redeploys", {"t":"i","v":0}]
            ]
        }]});
        for mac in [None, Some("00".repeat(32))] {
            let mut publish = jetstream::message::PublishMessage::build()
                .payload(serde_json::to_vec(&forged).unwrap().into());
            if let Some(mac) = mac {
                publish = publish.header("Keyhole-Mac", mac.as_str());
            }
            js.send_publish("keyhole.state", publish)
                .await
                .unwrap()
                .await
                .unwrap();
        }
        assert_eq!(stream.info().await.unwrap().state.last_sequence, last + 2);
    });
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(webhook(&b, key), 503, "the forged grant is not in force");
    assert!(
        b.logs().contains("fails its authentication"),
        "{}",
        b.logs()
    );
    let grants: i64 = b
        .db()
        .query_row("SELECT COUNT(*) FROM grants", [], |r| r.get(0))
        .unwrap();
    assert_eq!(grants, 0);
    // Every replica rejects them alike, so the fleet goes on past them.
    a.ok(&[
        "grant",
        "webhook-verify",
        "GITHUB_WEBHOOK",
        "--secret",
        "gh-webhook",
        "--allow",
        "hmac",
    ]);
    eventually("a real grant after the forgeries is in force", || {
        webhook(&b, key) == 200
    });
    let allow: String = b
        .db()
        .query_row("SELECT allow FROM grants", [], |r| r.get(0))
        .unwrap();
    assert!(!allow.contains("reveal"), "{allow}");
}

#[test]
fn killing_the_meta_leader_and_the_stream_leader_loses_no_acknowledged_write() {
    let mut nats = Nats::cluster();
    let key = b"leader webhook key";
    let a = fleet_serving_webhook(&nats.urls(), key);
    let mut b = Node::in_same_fleet(&a);
    b.start();
    eventually("B serves", || webhook(&b, key) == 200);

    // A stream of writes from A, while B serves and is polled throughout.
    let writer = std::thread::spawn({
        let data = a.data.path().to_owned();
        let key = a.env_key().unwrap().to_owned();
        let urls = nats.urls();
        move || {
            let mut acknowledged = Vec::new();
            for i in 0..80 {
                let file = data.join("w.value");
                std::fs::write(&file, format!("value {i}")).unwrap();
                let out = std::process::Command::new(common::KEYHOLE)
                    .env("KEYHOLE_DATA", &data)
                    .env("KEYHOLE_MASTER_KEY", &key)
                    .env("KEYHOLE_CLUSTER", &urls)
                    .args([
                        "secret",
                        "put",
                        &format!("w{i}"),
                        "--from-file",
                        file.to_str().unwrap(),
                    ])
                    .output()
                    .unwrap();
                if out.status.success() {
                    acknowledged.push(format!("w{i}"));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            acknowledged
        }
    });
    // One server down at a time, so a quorum remains: first the meta
    // leader, back after 2 s, then the stream's leader (as elected by then).
    std::thread::sleep(Duration::from_millis(500));
    let meta = nats.meta_leader().expect("a meta leader");
    nats.servers[meta].kill();
    let started = Instant::now();
    let mut served = 0;
    let mut meta_back = false;
    let mut stream_leader = None;
    while !writer.is_finished() {
        assert_eq!(webhook(&b, key), 200, "B keeps serving throughout");
        served += 1;
        if !meta_back && started.elapsed() > Duration::from_secs(2) {
            nats.servers[meta].restart();
            meta_back = true;
        }
        if meta_back
            && stream_leader.is_none()
            && started.elapsed() > Duration::from_secs(3)
            && let Some(leader) = nats.stream_leader("KEYHOLE_STATE")
        {
            nats.servers[leader].kill();
            stream_leader = Some(leader);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let stream_leader = stream_leader.expect("the stream leader was found and killed");
    let acknowledged = writer.join().unwrap();
    assert!(served > 10);
    assert!(
        acknowledged.len() >= 40,
        "most writes were acknowledged: {acknowledged:?}"
    );

    // Read the fleet back from a fresh replica, every server up again.
    nats.servers[stream_leader].restart();
    nats.wait_healthy();
    let reader = Node::in_same_fleet(&a);
    let listed = reader.ok(&["secret", "list"]);
    for name in &acknowledged {
        assert!(
            listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "acknowledged write {name} lost:\n{listed}"
        );
    }
}

/// Issue 26 §6. Every node's audit chain reaches the fleet's stream: a
/// node cut off under load spools its records in its replica and delivers
/// them when it is back, each exactly once; `keyhole audit` merges every
/// node's records; `keyhole audit verify` checks each node's chain and
/// names the node and record where one was edited.
#[test]
fn the_fleets_audit_trail_gets_every_record_once_through_a_cut_and_names_an_edit() {
    let nats = Nats::single();
    let a = Node::in_fleet(&nats.urls());
    a.put_secret("k", b"the fleet audit test's key bytes");
    a.granted_probe("busy", "/busy", "k", "hmac", "");
    let (mut b, proxy) = replica_behind_proxy(&a, &nats);
    b.start();
    eventually("B serves the probe", || {
        b.get("/busy/hmac?binding=KEY").status == 200
    });

    // Under load, B is cut off for 5 s, and serves throughout.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let ids: Vec<u64> = std::thread::scope(|s| {
        let load: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut ids = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let (reply, id) = b.get_with_id("/busy/hmac?binding=KEY");
                        assert_eq!(reply.status, 200, "{reply:?}");
                        ids.push(id);
                    }
                    ids
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(700));
        proxy.cut();
        std::thread::sleep(Duration::from_secs(5));
        proxy.restore();
        std::thread::sleep(Duration::from_millis(700));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        load.into_iter().flat_map(|t| t.join().unwrap()).collect()
    });
    assert!(ids.len() > 100, "only {} requests", ids.len());
    let b_node = audit_node_name(&b);

    // Every request's records are in the fleet's trail exactly once.
    let records_of_b = || -> Vec<serde_json::Value> {
        let listed = a.ok(&["audit", "--function", "busy", "--json", "--limit", "100000"]);
        let listed: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
        listed
            .into_iter()
            .filter(|e| e["node"] == b_node.as_str())
            .collect()
    };
    let wanted: std::collections::HashSet<u64> = ids.iter().copied().collect();
    eventually("B's spooled records reach the fleet's trail", || {
        let seen: std::collections::HashSet<u64> = records_of_b()
            .iter()
            .filter_map(|e| e["request"].as_u64())
            .collect();
        wanted.is_subset(&seen)
    });
    let mut per_call = std::collections::HashMap::new();
    for record in records_of_b() {
        assert_ne!(record["kind"], "lost", "{record}");
        if let Some(request) = record["request"].as_u64() {
            *per_call
                .entry((request, record["operation"].to_string()))
                .or_insert(0) += 1;
        }
    }
    let doubled: Vec<_> = per_call.iter().filter(|(_, n)| **n != 1).collect();
    assert!(doubled.is_empty(), "records not exactly once: {doubled:?}");
    for id in &wanted {
        assert!(
            per_call.contains_key(&(*id, "\"hmac-sha256\"".to_owned())),
            "request {id} has no hmac record"
        );
    }
    // `secret dependents`, asked of A's replica (which serves nothing),
    // shows the last use B recorded.
    eventually("B's last use reaches the dependents A lists", || {
        let listed: serde_json::Value =
            serde_json::from_str(&a.ok(&["secret", "dependents", "k", "--json"])).unwrap();
        listed[0]["last_use"]["version"] == 1
    });
    assert!(
        a.db()
            .query_row("SELECT COUNT(*) FROM secret_uses", [], |r| r
                .get::<_, i64>(0))
            .unwrap()
            == 0,
        "A's own replica records no use"
    );

    // A's own admin records (the put, deploy and grant) are merged in.
    let everything = a.ok(&["audit", "--limit", "100000"]);
    assert!(
        everything.contains("admin local (admin) grant"),
        "{everything}"
    );
    let verified = a.ok(&["audit", "verify"]);
    assert!(
        verified.contains(&format!("node {b_node}: intact")),
        "{verified}"
    );

    // Listed since a time, too.
    let recent: Vec<serde_json::Value> = serde_json::from_str(&a.ok(&[
        "audit",
        "--function",
        "busy",
        "--since",
        "1h",
        "--json",
        "--limit",
        "100000",
    ]))
    .unwrap();
    assert!(
        recent
            .iter()
            .filter(|e| e["node"] == b_node.as_str())
            .count()
            >= wanted.len(),
        "{} records since an hour ago",
        recent.len()
    );

    // Someone who can publish to NATS (no master key) puts a row and a key
    // of their own on B's subjects: nothing of theirs is listed, and B's
    // records keep coming after them.
    let outsider_row = serde_json::json!({
        "seq": 999_999, "at_ms": 1, "kind": "admin", "function": null, "secret": null,
        "body": "{}", "prev": "00", "mac": "00"
    });
    nats.publish_as_outsider(
        &format!("keyhole.audit.rows.{b_node}"),
        outsider_row.to_string().as_bytes(),
    );
    nats.publish_as_outsider(&format!("keyhole.audit.key.{b_node}"), b"not a sealed key");
    let (_, later) = b.get_with_id("/busy/hmac?binding=KEY");
    eventually("B's records keep reaching the fleet's trail", || {
        records_of_b()
            .iter()
            .any(|e| e["request"].as_u64() == Some(later))
    });
    assert!(!records_of_b().iter().any(|e| e["seq"] == 999_999));
    assert!(
        b.logs().contains("is not one of this node's records"),
        "{}",
        b.logs()
    );

    // Edited in B's replica before it reached the fleet, a record is named
    // by its node and number.
    proxy.cut();
    let before: i64 = b
        .db()
        .query_row("SELECT MAX(seq) FROM audit", [], |r| r.get(0))
        .unwrap();
    for _ in 0..5 {
        assert_eq!(b.get("/busy/hmac?binding=KEY").status, 200);
    }
    eventually("B writes the records to its replica", || {
        b.db()
            .query_row("SELECT MAX(seq) FROM audit", [], |r| r.get::<_, i64>(0))
            .unwrap()
            > before
    });
    b.kill();
    let edited: i64 = b
        .db()
        .query_row(
            "SELECT MAX(seq) FROM audit WHERE kind = 'function'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    b.db()
        .execute(
            "UPDATE audit SET body = body || ' ' WHERE seq = ?1",
            [edited],
        )
        .unwrap();
    proxy.restore();
    b.start();
    eventually("the edited record reaches the fleet's trail", || {
        let out = a.cli(&["audit", "verify"]);
        let err = String::from_utf8_lossy(&out.stderr);
        !out.status.success() && err.contains(&format!("node {b_node} record {edited}"))
    });
    let out = a.cli(&["audit", "verify"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not match its MAC"), "{err}");
}

/// Issue 26 §8. `keyhole cluster import` moves a single node's store, with
/// its own master key, into an empty fleet: every version (one in its grace
/// window still verifying), the deployment, the grant, the token; its audit
/// trail becomes a node of the fleet's trail, verified with its own MACs,
/// and the import's record names its head. A store whose trail does not
/// verify is refused with nothing written, and so is a second import.
#[test]
fn a_single_nodes_store_moves_into_an_empty_fleet_with_its_history() {
    let (old_key, new_key) = (b"imported webhook key one", b"imported webhook key two");
    let single = Node::with_key_file();
    single.put_secret("gh-webhook", old_key);
    single.deploy_granted(
        artifacts::WEBHOOK_VERIFY_MANIFEST,
        "webhook-verify",
        "GITHUB_WEBHOOK",
        "gh-webhook",
        "hmac",
    );
    let file = single.data.path().join("new.key");
    std::fs::write(&file, new_key).unwrap();
    single.ok(&[
        "secret",
        "rotate",
        "gh-webhook",
        "--from-file",
        file.to_str().unwrap(),
        "--grace",
        "1h",
    ]);
    let token = single.token(&["--name", "ops", "--role", "admin"]);
    let single_verified: serde_json::Value =
        serde_json::from_str(&single.ok(&["audit", "verify", "--json"])).unwrap();

    let nats = Nats::single();
    let a = Node::in_fleet(&nats.urls());
    let from = |node: &Node| node.data.path().to_str().unwrap().to_owned();

    // A store whose trail was edited is refused; nothing is written.
    let damaged = Node::with_key_file();
    damaged.put_secret("other", b"value");
    damaged
        .db()
        .execute("UPDATE audit SET body = body || ' ' WHERE seq = 1", [])
        .unwrap();
    let out = a.cli(&["cluster", "import", "--from", &from(&damaged)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not verify at record 1"), "{err}");
    assert!(!a.ok(&["secret", "list"]).contains("other"));

    let imported: serde_json::Value =
        serde_json::from_str(&a.ok(&["cluster", "import", "--from", &from(&single), "--json"]))
            .unwrap();
    assert_eq!(
        (
            &imported["secrets"],
            &imported["versions"],
            &imported["functions"],
            &imported["grants"],
            &imported["tokens"]
        ),
        (
            &serde_json::json!(1),
            &serde_json::json!(2),
            &serde_json::json!(1),
            &serde_json::json!(1),
            &serde_json::json!(1)
        ),
        "{imported}"
    );
    // Its trail as verified, and the record of that verification.
    let records = single_verified["records"].as_u64().unwrap() + 1;
    assert_eq!(imported["audit_records"], records, "{imported}");
    let node = imported["audit_node"].as_str().unwrap().to_owned();
    assert!(node.starts_with("imported-"), "{node}");

    // A node of the fleet serves it: the current version and the one in
    // its grace window; the imported token works through it.
    let mut b = Node::in_same_fleet(&a);
    b.start_admin();
    eventually("the imported function serves", || {
        webhook(&b, new_key) == 200
    });
    assert_eq!(webhook(&b, old_key), 200, "the grace window came along");
    assert_eq!(webhook(&b, b"a wrong key"), 401);
    let out = b
        .remote_command(&token)
        .args(["secret", "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("gh-webhook"));

    // Its history is a node of the fleet's trail, intact, and the import's
    // record names its head.
    let verified = a.ok(&["audit", "verify"]);
    assert!(
        verified.contains(&format!("node {node}: intact, {records} records")),
        "{verified}"
    );
    let head_mac = imported["audit_head"][1].as_str().unwrap();
    let trail = a.ok(&["audit", "--json", "--limit", "100000"]);
    let trail: Vec<serde_json::Value> = serde_json::from_str(&trail).unwrap();
    let import = trail
        .iter()
        .find(|e| e["action"] == "cluster.import")
        .expect("the import is recorded");
    assert!(
        import["detail"].as_str().unwrap().contains(head_mac),
        "{import}"
    );
    assert!(
        trail
            .iter()
            .any(|e| e["node"] == node.as_str() && e["action"] == "token.create"),
        "the single node's records are in the fleet's trail"
    );

    // A second import is refused before anything of it is shipped: the
    // fleet is not empty, and its trail gains no node.
    let another = Node::with_key_file();
    another.put_secret("late", b"value");
    let out = a.cli(&["cluster", "import", "--from", &from(&another)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not empty"), "{err}");
    let verified = a.ok(&["audit", "verify"]);
    assert_eq!(verified.matches("node imported-").count(), 1, "{verified}");
}

/// Issue 26 §9. An edge site: a NATS leaf server with its own JetStream
/// domain, connected to the hub. A node there, told the hub's domain
/// (`KEYHOLE_CLUSTER_DOMAIN`), follows the fleet whose streams live at the
/// hub — what the operator does at the hub is in force at the edge, and the
/// edge node's records reach the hub's trail — and the leaf's own
/// JetStream holds none of the fleet's streams.
#[test]
fn a_node_at_an_edge_site_follows_the_hub_through_its_leaf_server() {
    let nats = Nats::hub_and_leaf();
    let key = b"edge site webhook key";
    let a = fleet_serving_webhook(&format!("nats://127.0.0.1:{}", nats.servers[0].port), key);
    let mut edge = Node::in_same_fleet(&a);
    edge.cluster = Some(format!("nats://127.0.0.1:{}", nats.servers[1].port));
    edge.cluster_domain = Some("hub".into());
    edge.start();
    eventually("the edge node serves the hub's state", || {
        webhook(&edge, key) == 200
    });
    a.ok(&["revoke", "webhook-verify", "GITHUB_WEBHOOK"]);
    eventually("the revocation at the hub is in force at the edge", || {
        webhook(&edge, key) != 200
    });
    let edge_node = audit_node_name(&edge);
    eventually("the edge node's records reach the hub's trail", || {
        a.ok(&["audit", "--function", "webhook-verify"])
            .contains(&edge_node)
    });
    let leaf_streams = nats.streams_on(1);
    assert!(
        !leaf_streams.iter().any(|s| s.starts_with("KEYHOLE")),
        "{leaf_streams:?}"
    );
    assert!(nats.streams_on(0).contains(&"KEYHOLE_STATE".to_owned()));

    // A domain that is no name is refused before anything connects.
    let out = edge
        .command()
        .env("KEYHOLE_CLUSTER_DOMAIN", "hub.eu")
        .args(["secret", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a JetStream domain"),
        "{out:?}"
    );
}

/// A fresh master key, base64 as `KEYHOLE_MASTER_KEY` takes it.
fn fresh_master_key() -> String {
    use base64::Engine as _;
    let key: [u8; 32] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(key)
}

#[test]
fn a_fleets_master_key_rotation_reaches_the_nodes_given_the_new_key_and_stops_the_rest_safely() {
    let nats = Nats::single();
    let webhook_key = b"webhook key before the rotation";
    let mut a = fleet_serving_webhook(&nats.urls(), webhook_key);
    let old = a.env_key().unwrap().to_owned();
    let new = fresh_master_key();
    let token = a.token(&["--name", "ops", "--role", "admin"]);

    // The order the docs give: the new key reaches the nodes first. B is
    // given it; C is not; E (a replica yet to be built) has the old key only.
    let mut b = Node::in_same_fleet(&a);
    b.new_master_key = Some(new.clone());
    b.start();
    let mut c = Node::in_same_fleet(&a);
    c.start_admin();
    let e = Node::in_same_fleet(&a);
    for node in [&b, &c] {
        eventually("the fleet serves on B and C", || {
            webhook(node, webhook_key) == 200
        });
    }

    // A fleet's rotation needs the new key named: it cannot be made up on
    // one machine and reach the others.
    let out = a.cli(&["master-key", "rotate"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("KEYHOLE_NEW_MASTER_KEY") && err.contains("nothing was changed"),
        "{err}"
    );

    a.new_master_key = Some(new.clone());
    let out = a.ok(&["master-key", "rotate"]);
    assert!(out.contains("re-wrapped 1 secret version(s)"), "{out}");
    // Run again, it says the fleet is there already.
    let again = a.cli(&["master-key", "rotate"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("sealed under that master key already"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // From now on the new key alone works, and the fleet takes writes
    // (authenticated under the entry key the rotation started).
    a.set_master_key(&new);
    a.new_master_key = None;
    let second = b"webhook key after the rotation";
    let file = a.data.path().join("second.key");
    std::fs::write(&file, second).unwrap();
    a.ok(&[
        "secret",
        "rotate",
        "gh-webhook",
        "--from-file",
        file.to_str().unwrap(),
    ]);
    eventually("B, given the new key, follows past the rotation", || {
        webhook(&b, second) == 200 && webhook(&b, webhook_key) == 401
    });
    assert!(
        b.logs().contains("switched to the fleet's new master key"),
        "{}",
        b.logs()
    );

    // C, not given it, stops at the rotation: it serves the state before
    // it (opened under the key it holds), never the later one, and says why.
    eventually("C says why it stopped", || {
        let (_, out, err) = status(&c, &token);
        format!("{out}{err}").contains("rotates the fleet's master key")
    });
    assert_eq!(webhook(&c, webhook_key), 200);
    assert_eq!(webhook(&c, second), 401);
    assert!(c.logs().contains("KEYHOLE_NEW_MASTER_KEY"), "{}", c.logs());
    // Its records wait: it would key them under the entry key the rotation
    // retired, which vouches for nothing stored after it.
    eventually("C keeps its records", || {
        let (_, out, _) = status(&c, &token);
        out.contains("audit records waiting to reach the fleet")
    });

    // A replica with the old key alone cannot get past the rotation: a
    // command there fails, naming why, and writes nothing.
    let out = e.cli(&[
        "secret",
        "put",
        "late",
        "--from-file",
        file.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rotates the fleet's master key"), "{err}");
    assert!(!a.ok(&["secret", "list"]).contains("late"));

    // C restarted with both keys catches up, and switches.
    c.kill();
    c.new_master_key = Some(new.clone());
    c.start_admin();
    eventually("C, given the new key, follows past the rotation", || {
        webhook(&c, second) == 200 && webhook(&c, webhook_key) == 401
    });
    eventually("C ships what it kept", || {
        let (_, out, _) = status(&c, &token);
        !out.contains("audit records waiting")
    });
    let verified = a.ok(&["audit", "verify"]);
    assert!(!verified.contains("broken"), "{verified}");
    // Restarted again with the new key alone, it opens its replica.
    c.kill();
    c.set_master_key(&new);
    c.new_master_key = None;
    c.start_admin();
    eventually("C serves with the new key alone", || {
        webhook(&c, second) == 200
    });

    // A node that joins afterwards with the new key alone gets the fleet's
    // keyring from the rotation, and serves.
    let mut d = Node::in_same_fleet(&a);
    d.start();
    eventually("a new node with the new key alone serves", || {
        webhook(&d, second) == 200
    });
    // The old key opens no replica that followed the rotation.
    let out = a.cli_with_key(&["secret", "list"], Some(&old));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sealed under another master key"), "{err}");

    // A second rotation; a node built afterwards with only the newest key
    // replays both (the first's rows as any entry's, since the second
    // re-wraps every data key again) and serves.
    let third = fresh_master_key();
    a.new_master_key = Some(third.clone());
    a.ok(&["master-key", "rotate"]);
    a.set_master_key(&third);
    a.new_master_key = None;
    let mut f = Node::in_same_fleet(&a);
    f.start();
    eventually(
        "a node with only the newest of two rotations' keys serves",
        || webhook(&f, second) == 200,
    );

    // NATS holds no master key in any encoding.
    for (path, bytes) in nats.stored_files() {
        for key in [&old, &new, &third] {
            use base64::Engine as _;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(key)
                .unwrap();
            let found = common::found_in(&raw, &bytes);
            assert!(
                found.is_empty(),
                "{} holds a master key as {found:?}",
                path.display()
            );
        }
    }
}

/// HMAC-SHA256 of `parts` under `key`, as the fleet computes its keyed
/// values (`store/fleet/entry.rs`): what anyone holding an entry key can
/// compute, written here from the outside as an attacker would.
fn fleet_hmac(key: &[u8], label: &[u8], purpose: &str, parts: &[&[u8]], prefixed: bool) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(label);
    mac.update(purpose.as_bytes());
    for part in parts {
        if prefixed {
            mac.update(&(part.len() as u64).to_be_bytes());
        }
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// The point of rotating a master key is often that the old one got out.
/// Whoever kept it can still open the fleet's first entry key in the
/// genesis, and with it the key nodes' audit chain keys are sealed under:
/// enough to add a node of their own to the fleet's audit trail, every
/// row's MAC in order, to append to a real node's chain, and to forge its
/// use marks. After the rotation (and its grace), what they publish is
/// named by `audit verify` and left out of the trail's listing and of last
/// uses; the records the fleet's nodes ship under the new key still verify,
/// and a node ships on past a forgery on its subject.
#[test]
fn a_retired_master_key_vouches_for_nothing_published_after_its_rotation() {
    use keyhole_host::audit::chain::{ChainKey, GENESIS};
    use keyhole_host::crypto::AesKey;
    let nats = Nats::single();
    let mut a = fleet_serving_webhook(&nats.urls(), b"webhook key");
    let old = a.env_key().unwrap().to_owned();
    let new = fresh_master_key();
    a.new_master_key = Some(new.clone());
    a.ok(&["master-key", "rotate"]);
    let rotated = Instant::now();
    a.set_master_key(&new);
    a.new_master_key = None;
    // Records made after the rotation, shipped under the new entry key.
    a.put_secret("after-the-rotation", b"value");
    let a_node = audit_node_name(&a);

    // The attacker: the retired master key, and the right to publish.
    let genesis: serde_json::Value =
        serde_json::from_slice(&nats.stream_message("KEYHOLE_STATE", r#"{"seq":1}"#)).unwrap();
    let fleet = genesis["fleet"].as_str().unwrap().to_owned();
    let retired = AesKey::from_slice(&STANDARD.decode(&old).unwrap()).unwrap();
    let sealed_entry_key = STANDARD
        .decode(genesis["fleet_key"].as_str().unwrap())
        .unwrap();
    let entry_key = retired
        .open(&sealed_entry_key, b"keyhole/v1/fleet-key")
        .expect("the retired key opens the genesis's entry key");
    let wrapping = AesKey::from_slice(&fleet_hmac(
        &entry_key,
        b"keyhole/v1/fleet-derived-key\0",
        "audit chain keys",
        &[],
        false,
    ))
    .unwrap();
    let mac_header = |subject: &str, payload: &[u8]| {
        let tag = fleet_hmac(
            &entry_key,
            b"keyhole/v1/fleet-tag\0",
            "audit messages",
            &[subject.as_bytes(), fleet.as_bytes(), payload],
            true,
        );
        format!("2:{}", hex::encode(tag))
    };
    // A use of gh-webhook by A that A never made, as the marks were MAC'd
    // before this keying (the first entry key's MAC alone).
    let forge_use = |version: u32| {
        use sha2::Digest as _;
        let digest = sha2::Sha256::new()
            .chain_update(b"webhook-verify")
            .chain_update([0])
            .chain_update(b"GITHUB_WEBHOOK")
            .finalize();
        let subject = format!("keyhole.uses.{a_node}.{}", hex::encode(&digest[..16]));
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mark = serde_json::to_vec(&serde_json::json!({
            "function": "webhook-verify", "binding": "GITHUB_WEBHOOK", "secret": "gh-webhook",
            "last_use": { "at": at, "version": version }, "last_grace_use": null,
        }))
        .unwrap();
        let tag = fleet_hmac(
            &entry_key,
            b"keyhole/v1/fleet-tag\0",
            "use marks",
            &[subject.as_bytes(), fleet.as_bytes(), &mark],
            true,
        );
        nats.publish_as_outsider_with_header(&subject, "Keyhole-Mac", &hex::encode(tag), &mark);
    };
    let dependents = || a.ok(&["secret", "dependents", "gh-webhook", "--json"]);
    // Within the grace it still counts (which shows the forgery is well made).
    forge_use(4241);
    assert!(
        rotated.elapsed() < Duration::from_secs(8),
        "the test was too slow to publish within the grace"
    );
    let listed = dependents();
    assert!(listed.contains("4241"), "{listed}");

    // What a node's chain key is sealed with, beside the wrapping key.
    let chain_key_aad = |node: &str| {
        [
            &b"keyhole/v1/fleet-audit-chain-key\0"[..],
            fleet.as_bytes(),
            b"\0",
            node.as_bytes(),
        ]
        .concat()
    };
    // What `audit verify --json` through A says of A's own chain.
    let a_verified = || {
        let verified: serde_json::Value =
            serde_json::from_slice(&a.cli(&["audit", "verify", "--json"]).stdout).unwrap();
        verified["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"] == a_node.as_str())
            .unwrap_or_else(|| panic!("{verified}"))["verification"]
            .clone()
    };
    let node = "forged-node";
    let chain = ChainKey::from_slice(&common::random_secret()[..32]).unwrap();
    let sealed_chain_key = chain.sealed_under(&wrapping, &chain_key_aad(node));
    // Its first record: one of A's, chained anew under the attacker's key.
    let shipped: serde_json::Value = serde_json::from_slice(&nats.stream_message(
        "KEYHOLE_AUDIT",
        &format!(r#"{{"last_by_subj":"keyhole.audit.rows.{a_node}"}}"#),
    ))
    .unwrap();
    let mut row = shipped
        .as_array()
        .map_or(shipped.clone(), |rows| rows[0].clone());
    let body = row["body"].as_str().unwrap().to_owned();
    row["seq"] = 1.into();
    row["prev"] = hex::encode(GENESIS).into();
    row["mac"] = hex::encode(chain.link(&GENESIS, 1, &body)).into();
    let rows = serde_json::to_vec(&serde_json::json!([row])).unwrap();

    // Past the rotation's grace (10 s), as anyone publishing later is.
    let grace = Duration::from_secs(11);
    std::thread::sleep(grace.saturating_sub(rotated.elapsed()));
    let key_subject = format!("keyhole.audit.key.{node}");
    nats.publish_as_outsider_with_header(
        &key_subject,
        "Keyhole-Mac",
        &mac_header(&key_subject, &sealed_chain_key),
        &sealed_chain_key,
    );
    // A later forged use replaces it in the stream, and counts for nothing.
    forge_use(4242);
    let listed = dependents();
    assert!(
        !listed.contains("4242") && !listed.contains("4241"),
        "{listed}"
    );
    let rows_subject = format!("keyhole.audit.rows.{node}");
    nats.publish_as_outsider_with_header(
        &rows_subject,
        "Keyhole-Mac",
        &mac_header(&rows_subject, &rows),
        &rows,
    );

    let out = a.cli(&["audit", "verify"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the forged node verified: {err}");
    assert!(
        err.lines()
            .any(|l| l.contains(&format!("node {node}")) && l.contains("retired master key")),
        "{err}"
    );
    // The fleet's own node verifies, its records after the rotation too.
    let ours = a_verified();
    assert!(ours["first_bad"].is_null(), "{ours}");
    let listed = a.ok(&["audit", "--json"]);
    assert!(listed.contains("after-the-rotation"), "{listed}");
    assert!(!listed.contains(node), "{listed}");

    // A row appended to A's own chain, under A's chain key (which the
    // retired key opens too), does not count either, and A ships on past it.
    let a_key_subject = format!("keyhole.audit.key.{a_node}");
    let sealed = nats.stream_message(
        "KEYHOLE_AUDIT",
        &format!(r#"{{"last_by_subj":"{a_key_subject}"}}"#),
    );
    let a_chain = ChainKey::open_sealed(&wrapping, &sealed, &chain_key_aad(&a_node))
        .expect("the retired key opens A's chain key");
    let shipped: serde_json::Value = serde_json::from_slice(&nats.stream_message(
        "KEYHOLE_AUDIT",
        &format!(r#"{{"last_by_subj":"keyhole.audit.rows.{a_node}"}}"#),
    ))
    .unwrap();
    let last = shipped
        .as_array()
        .map_or(shipped.clone(), |rows| rows.last().unwrap().clone());
    let head = hex::decode(last["mac"].as_str().unwrap()).unwrap();
    let next = last["seq"].as_u64().unwrap() + 1;
    let mut forged = last.clone();
    forged["seq"] = next.into();
    forged["prev"] = hex::encode(&head).into();
    forged["mac"] = hex::encode(a_chain.link(&head, next, last["body"].as_str().unwrap())).into();
    let forged = serde_json::to_vec(&serde_json::json!([forged])).unwrap();
    let a_rows_subject = format!("keyhole.audit.rows.{a_node}");
    nats.publish_as_outsider_with_header(
        &a_rows_subject,
        "Keyhole-Mac",
        &mac_header(&a_rows_subject, &forged),
        &forged,
    );
    a.put_secret("after-the-forgery", b"value");
    let ours = a_verified();
    let problem = ours["first_bad"]["problem"]
        .as_str()
        .unwrap_or_else(|| panic!("A's forged row was not named: {ours}"));
    assert!(problem.contains("retired master key"), "{problem}");
    let listed = a.ok(&["audit", "--json"]);
    assert!(listed.contains("after-the-forgery"), "A ships on: {listed}");
}
