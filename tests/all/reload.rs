//! What a change makes a running node reload: the functions it touched —
//! by their deployment, routes or grants, or through a secret they are
//! granted — and nothing else, whichever process wrote it.

use crate::common;

use common::{Node, artifacts};
use std::time::{Duration, Instant};

/// The number of catalog loads the node has logged, and the `reloaded=`
/// figure of the last one.
fn loads(node: &Node) -> (usize, Option<usize>) {
    let logs = node.logs();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("loaded functions and grants"))
        .collect();
    let reloaded = lines.last().map(|line| common::log_field(line, "reloaded"));
    (lines.len(), reloaded)
}

/// Runs `change` (a CLI command: another process) and returns how many
/// functions the node's next load reloaded.
fn reloaded_by(node: &Node, change: &[&str]) -> usize {
    let (before, _) = loads(node);
    node.ok(change);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match loads(node) {
            (count, Some(reloaded)) if count > before => return reloaded,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "no load after {change:?}:\n{}",
            node.logs()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_change_reloads_only_the_functions_it_touches() {
    let mut node = Node::new();
    node.put_secret("shared", b"shared-secret-value-1");
    node.put_secret("own", b"own-secret-value-1");
    node.granted_probe("one", "/one", "shared", "hmac", "");
    node.granted_probe("two", "/two", "shared", "hmac", "");
    node.granted_probe("three", "/three", "own", "hmac", "");
    let plain = node.write_manifest("plain", artifacts::PLAIN_HELLO, "/plain", "");
    node.ok(&["deploy", plain.to_str().unwrap()]);
    node.start();
    // The node's log reaches the test a little after the node listens.
    let deadline = Instant::now() + Duration::from_secs(10);
    while loads(&node).1.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(loads(&node).1, Some(4), "the first load loads everything");
    let one = node.get("/one/hmac?binding=KEY");
    let three = node.get("/three/hmac?binding=KEY");
    assert_eq!((one.status, three.status), (200, 200));

    // A secret two functions are granted: those two.
    let file = node.data.path().join("rotated");
    std::fs::write(&file, b"shared-secret-value-2").unwrap();
    let rotate = [
        "secret",
        "rotate",
        "shared",
        "--from-file",
        file.to_str().unwrap(),
    ];
    assert_eq!(reloaded_by(&node, &rotate), 2);
    assert_ne!(node.get("/one/hmac?binding=KEY").body, one.body);
    assert_eq!(node.get("/three/hmac?binding=KEY").body, three.body);

    // One function's grant: that function.
    assert_eq!(reloaded_by(&node, &["revoke", "three", "KEY"]), 1);
    assert_eq!(node.get("/three/hmac?binding=KEY").status, 403);
    assert_eq!(node.get("/two/hmac?binding=KEY").status, 200);

    // A secret no function is granted: none.
    let put = [
        "secret",
        "put",
        "unused",
        "--from-file",
        file.to_str().unwrap(),
    ];
    assert_eq!(reloaded_by(&node, &put), 0);

    // A deployment, then its removal: that function.
    let more = node.write_manifest("more", artifacts::PLAIN_HELLO, "/more", "");
    assert_eq!(reloaded_by(&node, &["deploy", more.to_str().unwrap()]), 1);
    assert_eq!(node.get("/more").status, 200);
    assert_eq!(reloaded_by(&node, &["undeploy", "plain"]), 1);
    assert_eq!(node.get("/plain").status, 404);
    assert_eq!(node.get("/more").status, 200);
    assert_eq!(node.get("/two/hmac?binding=KEY").status, 200);

    // What its data directory says: no fleet, what is deployed.
    let status = node.ok(&["status"]);
    assert!(status.contains("fleet: none"), "{status}");
    assert!(status.contains("functions deployed: 4"), "{status}");
}

#[test]
fn a_forged_grant_is_never_loaded_and_status_fails() {
    let mut node = Node::new();
    node.put_secret("s", b"forged-grant-secret-value");
    node.deploy_probe(
        "p",
        "/p",
        "[bindings.KEY]\nallow = [\"hmac\", \"reveal\"]\n",
    );
    node.ok(&["grant", "p", "KEY", "--secret", "s", "--allow", "hmac"]);
    let token = node.token(&["--name", "ops", "--role", "admin"]);
    node.start_admin();
    assert_eq!(node.get("/p/reveal?binding=KEY").status, 403);
    let status = || {
        let out = node.remote_command(&token).arg("status").output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(status().0, "{}", status().1);

    // Someone with write access to the database, but not the key, widens
    // the grant to `reveal` and moves the revision so nodes look.
    node.db()
        .execute_batch(
            "UPDATE grants SET allow = 'hmac,reveal';
             UPDATE meta SET value = value + 1 WHERE key = 'revision';",
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let err = loop {
        let (ok, err) = status();
        if !ok {
            break err;
        }
        assert!(
            Instant::now() < deadline,
            "the node never said its load failed"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // The admin API trusts no token on a store that does not verify, so
    // the check fails there; the node's log names the forged row.
    assert!(err.contains("integrity check"), "{err}");
    assert!(
        node.logs().contains("grants/p/KEY"),
        "the forged row is named: {}",
        node.logs()
    );
    assert_eq!(node.get("/p/reveal?binding=KEY").status, 403);
    assert_eq!(node.get("/p/hmac?binding=KEY").status, 200);
}
