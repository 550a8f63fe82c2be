//! Rotation without fear, end to end: versions, grace windows, rollback,
//! maximum age, blast radius (dependents, `rm`), and master-key rotation,
//! against a real node serving real components.

use crate::common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{Node, artifacts};
use keyhole_host::audit::{AdminEvent, Entry, Millis, PruneReport, Query, Timed, Verification};
use keyhole_host::crypto::AesKey;
use keyhole_host::engine::runtime::Runtime;
use keyhole_host::node::catalog::{Catalog, Snapshot};
use keyhole_host::node::observe::Observer;
use keyhole_host::operations::{Operation, OperationSet};
use keyhole_host::store::{
    AdminRecord, AuditLog, Changes, CheckReport, Dependent, Deployment, FunctionInfo,
    FunctionStore, Grant, GrantStore, KeyCustody, NestPolicy, NewVersion, RemovedSecret,
    RolledBack, SecretInfo, SecretStore, ServedState, StoreError, Stored, TokenInfo, TokenStore,
    UsableVersions, UseRecord, VersionInfo,
};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn signature(key: &[u8], body: &[u8]) -> String {
    format!("sha256={}", common::hmac_sha256_hex(key, body))
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `value` to a file in the data directory and returns its path.
fn value_file(node: &Node, name: &str, value: &[u8]) -> String {
    let path = node.data.path().join(name);
    std::fs::write(&path, value).unwrap();
    path.to_str().unwrap().to_owned()
}

/// `keyhole secret rotate SECRET` to `value`, with a grace window if given;
/// returns what it printed.
fn rotate(node: &Node, secret: &str, value: &[u8], grace: Option<&str>) -> String {
    let file = value_file(node, &format!("{secret}.next"), value);
    let mut args = vec!["secret", "rotate", secret, "--from-file", &file];
    if let Some(grace) = grace {
        args.extend(["--grace", grace]);
    }
    node.ok(&args)
}

/// A node serving `webhook-verify`, its binding granted secret `hook`
/// holding `key`.
fn webhook_node(key: &[u8]) -> Node {
    let node = Node::new();
    grant_webhook(&node, key);
    node
}

/// Stores `key` as secret `hook` and deploys `webhook-verify` granted it.
fn grant_webhook(node: &Node, key: &[u8]) {
    node.put_secret("hook", key);
    node.deploy_granted(
        artifacts::WEBHOOK_VERIFY_MANIFEST,
        "webhook-verify",
        "GITHUB_WEBHOOK",
        "hook",
        "hmac",
    );
}

fn webhook_status(node: &Node, key: &[u8]) -> u16 {
    let body = br#"{"zen":"Rotate often."}"#;
    node.post(
        "/webhook",
        &[("x-hub-signature-256", &signature(key, body))],
        body,
    )
    .status
}

/// Polls until the webhook answers `status` for a body signed with `key`.
fn wait_for_status(node: &Node, key: &[u8], status: u16) {
    let start = Instant::now();
    while webhook_status(node, key) != status {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "webhook never answered {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn dependents_json(node: &Node, secret: &str) -> serde_json::Value {
    serde_json::from_str(&node.ok(&["secret", "dependents", secret, "--json"])).unwrap()
}

#[test]
fn rotation_under_load_fails_no_request_and_answers_for_the_version_of_its_time() {
    const OLD: &[u8] = b"old-webhook-key-0001";
    const NEW: &[u8] = b"new-webhook-key-0002";
    let mut node = webhook_node(OLD);
    node.start();
    let node = Arc::new(node);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();

    // Clients that keep signing with the old key (a sender that has not
    // switched yet) and with the new key (one that already has).
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (node, stop) = (Arc::clone(&node), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut old = Vec::new();
                let mut new = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    old.push((started.elapsed(), webhook_status(&node, OLD)));
                    new.push((started.elapsed(), webhook_status(&node, NEW)));
                }
                (old, new)
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(400));
    let rotate_started = started.elapsed();
    let stdout = rotate(&node, "hook", NEW, Some("1h"));
    let rotate_done = started.elapsed();
    assert!(
        stdout.contains("rotated secret `hook` to version 2"),
        "{stdout}"
    );
    assert!(
        stdout.contains("webhook-verify (binding GITHUB_WEBHOOK"),
        "{stdout}"
    );
    // Keep the load on until the node has switched, and a while after.
    let switch = Instant::now();
    while webhook_status(&node, NEW) != 200 {
        assert!(
            switch.elapsed() < Duration::from_secs(10),
            "the node never switched"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);

    let mut old_count = 0;
    let mut new_accepted_after = 0;
    for client in clients {
        let (old, new) = client.join().unwrap();
        // The old key is current, then in grace: it never fails.
        for (at, status) in &old {
            assert_eq!(*status, 200, "old-key request at {at:?} answered {status}");
        }
        old_count += old.len();
        // The new key fails before the rotation, passes once the node has
        // it, and never flips back.
        let mut seen_accepted = false;
        for (at, status) in &new {
            match *status {
                200 => {
                    assert!(
                        *at >= rotate_started,
                        "new key accepted at {at:?} before the rotation"
                    );
                    seen_accepted = true;
                }
                401 => {
                    assert!(
                        !seen_accepted,
                        "new key refused at {at:?} after it was accepted"
                    );
                    assert!(
                        *at < rotate_done + Duration::from_secs(10),
                        "new key still refused at {at:?}, rotation done at {rotate_done:?}"
                    );
                }
                other => panic!("new-key request at {at:?} answered {other}"),
            }
        }
        assert!(seen_accepted, "the new key was never accepted");
        new_accepted_after += new.iter().filter(|(_, s)| *s == 200).count();
    }
    eprintln!(
        "under load: {old_count} old-key requests, all 200; {new_accepted_after} new-key requests accepted after the switch"
    );
    assert!(
        old_count > 100 && new_accepted_after > 10,
        "too little load: {old_count}"
    );

    // The node recorded which versions the function used: the new one on
    // every open, and the old one through the grace window.
    let start = Instant::now();
    loop {
        let dependents = dependents_json(&node, "hook");
        let d = &dependents[0];
        if d["last_use"]["version"] == 2 && d["last_grace_use"]["version"] == 1 {
            assert_eq!(d["function"], "webhook-verify");
            assert_eq!(d["binding"], "GITHUB_WEBHOOK");
            assert_eq!(d["allow"], serde_json::json!(["hmac"]));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "uses not recorded: {dependents}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let versions = node.ok(&["secret", "versions", "hook"]);
    let lines: Vec<&str> = versions.lines().collect();
    assert!(
        lines[1].starts_with('2') && lines[1].ends_with("current"),
        "{versions}"
    );
    assert!(
        lines[2].starts_with('1') && lines[2].contains("grace until"),
        "{versions}"
    );
}

#[test]
fn a_grace_window_ends_and_a_rotation_without_one_retires_at_once() {
    const V1: &[u8] = b"webhook-key-version-1";
    const V2: &[u8] = b"webhook-key-version-2";
    const V3: &[u8] = b"webhook-key-version-3";
    let mut node = webhook_node(V1);
    node.start();
    assert_eq!(webhook_status(&node, V1), 200);

    rotate(&node, "hook", V2, Some("3s"));
    wait_for_status(&node, V2, 200);
    assert_eq!(webhook_status(&node, V1), 200, "in grace");
    let versions: serde_json::Value =
        serde_json::from_str(&node.ok(&["secret", "versions", "hook", "--json"])).unwrap();
    assert_eq!(versions[1]["state"], "grace");
    // The window closes within its 3 s (to the second), without any write
    // to the store.
    wait_for_status(&node, V1, 401);
    let versions: serde_json::Value =
        serde_json::from_str(&node.ok(&["secret", "versions", "hook", "--json"])).unwrap();
    assert_eq!(versions[1]["state"], "retired");
    assert_eq!(webhook_status(&node, V2), 200);

    let out = rotate(&node, "hook", V3, None);
    assert!(out.contains("version 2 is retired"), "{out}");
    wait_for_status(&node, V3, 200);
    assert_eq!(webhook_status(&node, V2), 401, "no grace: retired at once");
}

/// Logs in to `session-seal` and returns the sealed cookie.
fn login(node: &Node, user: &str) -> String {
    let reply = node.post(&format!("/session/login?user={user}"), &[], b"");
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.text().trim().to_owned()
}

fn session_status(node: &Node, cookie: &str) -> u16 {
    node.post("/session", &[("cookie", cookie)], b"").status
}

#[test]
fn sealed_data_opens_during_the_grace_window_and_new_seals_use_the_new_key() {
    let mut node = Node::new();
    let v1 = value_file(&node, "v1.key", &rand::random::<[u8; 32]>());
    node.ok(&[
        "secret",
        "put",
        "session-key",
        "--kind",
        "aes-256",
        "--from-file",
        &v1,
    ]);
    node.deploy_granted(
        artifacts::SESSION_SEAL_MANIFEST,
        "session-seal",
        "SESSION_KEY",
        "session-key",
        "seal",
    );
    node.start();
    let alice = login(&node, "alice");
    assert_eq!(session_status(&node, &alice), 200);

    // Rotate with a grace window: alice's cookie (version 1) still opens,
    // and new cookies are sealed under version 2.
    rotate(
        &node,
        "session-key",
        &rand::random::<[u8; 32]>(),
        Some("1h"),
    );
    // Once the node reports a use of version 2, it seals under it.
    let start = Instant::now();
    loop {
        // A cookie from version 1 keeps opening throughout.
        assert_eq!(session_status(&node, &alice), 200);
        // Alice's cookie opened only with the grace version.
        let d = &dependents_json(&node, "session-key")[0];
        if d["last_use"]["version"] == 2 && d["last_grace_use"]["version"] == 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "uses never recorded: {d}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let bob = login(&node, "bob");
    assert_eq!(session_status(&node, &bob), 200);

    // Rotate again without grace: version 2 retires at once, so bob's
    // cookie (if sealed under it) no longer opens, while version 1 is still
    // inside the window the first rotation gave it.
    rotate(&node, "session-key", &rand::random::<[u8; 32]>(), None);
    let start = Instant::now();
    while session_status(&node, &bob) != 401 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "version 2 never retired"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        session_status(&node, &alice),
        200,
        "version 1 is still in grace"
    );
    let carol = login(&node, "carol");
    assert_eq!(session_status(&node, &carol), 200);
    let versions: serde_json::Value =
        serde_json::from_str(&node.ok(&["secret", "versions", "session-key", "--json"])).unwrap();
    let states: Vec<&str> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["current", "retired", "grace"]);
}

#[test]
fn rollback_makes_an_earlier_version_current_again() {
    const V1: &[u8] = b"rollback-key-version-1";
    const V2: &[u8] = b"rollback-key-version-2";
    let mut node = webhook_node(V1);
    node.start();
    rotate(&node, "hook", V2, None);
    wait_for_status(&node, V2, 200);
    assert_eq!(webhook_status(&node, V1), 401);

    let out = node.ok(&["secret", "rollback", "hook", "--to", "1"]);
    assert!(out.contains("version 1 is current again (was 2)"), "{out}");
    wait_for_status(&node, V1, 200);
    assert_eq!(webhook_status(&node, V2), 401);
    let list = node.ok(&["secret", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(
        (
            list[0]["current_version"].clone(),
            list[0]["versions"].clone()
        ),
        (1.into(), 2.into())
    );

    for (args, expected) in [
        (
            &["secret", "rollback", "hook", "--to", "1"][..],
            "version 1 of secret `hook` is already current",
        ),
        (
            &["secret", "rollback", "hook", "--to", "7"][..],
            "secret `hook` has no version 7",
        ),
        (
            &["secret", "rollback", "nope", "--to", "1"][..],
            "no secret named `nope`",
        ),
        (&["secret", "rotate", "nope"][..], "no secret named `nope`"),
        (
            &["secret", "rotate", "hook", "--grace", "soon"][..],
            "invalid value 'soon'",
        ),
    ] {
        let out = node.cli(args);
        let (_, stderr) = text(&out);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    // The refusals changed nothing.
    assert_eq!(webhook_status(&node, V1), 200);
    // The next rotation replaces the version that is current (1), not the
    // latest (2).
    let out = rotate(&node, "hook", b"rollback-key-version-3", None);
    assert!(
        out.contains("to version 3") && out.contains("version 1 is retired"),
        "{out}"
    );
}

#[test]
fn dependents_are_listed_and_rm_refuses_while_they_exist() {
    let key = b"blast-radius-key-123";
    let mut node = webhook_node(key);
    node.granted_probe("probe-a", "/probe-a", "hook", "hmac", "");
    node.start();

    let table = node.ok(&["secret", "dependents", "hook"]);
    assert!(table.starts_with("FUNCTION"), "{table}");
    assert!(
        table.contains("probe-a") && table.contains("webhook-verify"),
        "{table}"
    );
    assert!(table.contains("not recorded"), "no use yet: {table}");

    assert_eq!(webhook_status(&node, key), 200);
    let start = Instant::now();
    while dependents_json(&node, "hook")
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["last_use"].is_null())
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "use never recorded"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let dependents = dependents_json(&node, "hook");
    let webhook = dependents
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["function"] == "webhook-verify")
        .unwrap();
    assert_eq!(webhook["last_use"]["version"], 1);
    let probe = dependents
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["function"] == "probe-a")
        .unwrap();
    assert!(
        probe["last_use"].is_null(),
        "probe-a never opened it: {probe}"
    );

    let out = node.cli(&["secret", "rm", "hook"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("`probe-a` (binding `KEY`)")
            && stderr.contains("`webhook-verify` (binding `GITHUB_WEBHOOK`)")
            && stderr.contains("--force"),
        "{stderr}"
    );
    assert!(
        node.ok(&["secret", "list"]).contains("hook"),
        "refusal removed it"
    );
    assert_eq!(webhook_status(&node, key), 200);

    let out = node.ok(&["secret", "rm", "hook", "--force"]);
    assert!(
        out.contains("function `webhook-verify` binding `GITHUB_WEBHOOK` now gets `unavailable`"),
        "{out}"
    );
    wait_for_status(&node, key, 503);
    let body = br#"{}"#;
    let reply = node.post(
        "/webhook",
        &[("x-hub-signature-256", &signature(key, body))],
        body,
    );
    assert!(reply.text().contains("unavailable"), "{reply:?}");
}

#[test]
fn rotation_keeps_the_kind_and_refuses_a_value_that_is_not_one() {
    let node = Node::new();
    let aes = value_file(&node, "aes.key", &[7u8; 32]);
    node.ok(&[
        "secret",
        "put",
        "sess",
        "--kind",
        "aes-256",
        "--from-file",
        &aes,
    ]);
    let short = value_file(&node, "short.key", &[7u8; 16]);
    let out = node.cli(&["secret", "rotate", "sess", "--from-file", &short]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("not a valid aes-256 key") && stderr.contains("nothing was stored"),
        "{stderr}"
    );
    // `put` without --kind keeps the kind too.
    let out = node.cli(&["secret", "put", "sess", "--from-file", &short]);
    assert!(!out.status.success(), "{}", text(&out).1);
    let list: serde_json::Value =
        serde_json::from_str(&node.ok(&["secret", "list", "--json"])).unwrap();
    assert_eq!(
        (list[0]["kind"].clone(), list[0]["versions"].clone()),
        ("aes-256".into(), 1.into())
    );
    let fresh = value_file(&node, "fresh.key", &[9u8; 32]);
    let out = node.ok(&["secret", "rotate", "sess", "--from-file", &fresh]);
    assert!(
        out.contains("version 2") && out.contains("aes-256"),
        "{out}"
    );
    assert!(out.contains("no function is granted `sess`"), "{out}");
}

#[test]
fn overdue_secrets_are_marked_and_the_node_warns_once() {
    let mut node = Node::new();
    let file = value_file(&node, "old.key", b"an-old-value-123");
    node.ok(&[
        "secret",
        "put",
        "stale",
        "--from-file",
        &file,
        "--max-age",
        "1s",
    ]);
    node.ok(&[
        "secret",
        "put",
        "fresh",
        "--from-file",
        &file,
        "--max-age",
        "90d",
    ]);
    std::thread::sleep(Duration::from_millis(2100));
    let table = node.ok(&["secret", "list"]);
    let stale = table.lines().find(|l| l.starts_with("stale")).unwrap();
    let fresh = table.lines().find(|l| l.starts_with("fresh")).unwrap();
    assert!(stale.ends_with("1s OVERDUE"), "{table}");
    assert!(fresh.ends_with("90d"), "{table}");
    let list: serde_json::Value =
        serde_json::from_str(&node.ok(&["secret", "list", "--json"])).unwrap();
    let overdue: Vec<bool> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["overdue"].as_bool().unwrap())
        .collect();
    assert_eq!(overdue, vec![false, true], "{list}");

    node.start();
    std::thread::sleep(Duration::from_millis(1500));
    let logs = node.logs();
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("overdue for rotation"))
        .collect();
    assert_eq!(warnings.len(), 1, "{logs}");
    assert!(warnings[0].contains("secret=stale"), "{logs}");

    // Rotating makes it current again; `--max-age none` removes the limit.
    node.ok(&[
        "secret",
        "rotate",
        "stale",
        "--from-file",
        &file,
        "--max-age",
        "none",
    ]);
    let table = node.ok(&["secret", "list"]);
    assert!(!table.contains("OVERDUE"), "{table}");
}

/// Every secret version decrypts with the store's key: `keyhole check`.
fn check_ok(node: &Node, key: Option<&str>) -> Result<String, String> {
    let out = node.cli_with_key(&["check"], key);
    let (stdout, stderr) = text(&out);
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(stderr)
    }
}

fn key_b64() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
}

#[test]
fn master_key_rotation_from_the_environment_retires_the_old_key() {
    let node = Node::new();
    let old = node.env_key().unwrap().to_owned();
    for i in 0..5 {
        node.put_secret(&format!("s{i}"), format!("value-number-{i}").as_bytes());
    }
    node.put_secret("s0", b"value-number-0-v2");
    let new = key_b64();

    // Without a new key from the environment, an environment key is not
    // replaced by a generated one.
    let out = node.cli(&["master-key", "rotate"]);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("KEYHOLE_NEW_MASTER_KEY"),
        "{}",
        text(&out).1
    );
    let out = node
        .command()
        .env("KEYHOLE_NEW_MASTER_KEY", "not base64!")
        .args(["master-key", "rotate"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("nothing was changed"),
        "{}",
        text(&out).1
    );
    assert!(
        check_ok(&node, Some(&old)).is_ok(),
        "refusals changed nothing"
    );

    let out = node
        .command()
        .env("KEYHOLE_NEW_MASTER_KEY", &new)
        .args(["master-key", "rotate"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("re-wrapped 6 secret version(s)"),
        "{stdout}"
    );
    let err = check_ok(&node, Some(&old)).unwrap_err();
    assert!(
        err.contains("the master key does not open this store"),
        "{err}"
    );
    assert!(
        check_ok(&node, Some(&new))
            .unwrap()
            .contains("6 ok, 0 failed")
    );
}

#[test]
fn master_key_rotation_in_the_key_file_is_picked_up_by_a_running_node() {
    let mut node = Node::with_key_file();
    let key = b"file-keyed-webhook-key";
    grant_webhook(&node, key);
    let key_file = node.data.path().join("master.key");
    let old = std::fs::read_to_string(&key_file).unwrap();
    node.start();
    assert_eq!(webhook_status(&node, key), 200);

    let out = node.ok(&["master-key", "rotate"]);
    assert!(out.contains("re-wrapped 1 secret version(s)"), "{out}");
    let new = std::fs::read_to_string(&key_file).unwrap();
    assert_ne!(old.trim(), new.trim());
    assert!(!node.data.path().join("master.key.new").exists());
    assert!(check_ok(&node, Some(old.trim())).is_err());

    // A write after the rotation makes the node reload: it must have
    // switched to the new key to decrypt anything.
    let v2 = b"file-keyed-webhook-key-2";
    rotate(&node, "hook", v2, Some("1h"));
    wait_for_status(&node, v2, 200);
    assert_eq!(
        webhook_status(&node, key),
        200,
        "the grace version decrypted too"
    );
    assert!(
        node.logs().contains("now using the new key"),
        "{}",
        node.logs()
    );
}

/// Starts `keyhole master-key rotate` (with the store's key `old_key` and
/// the new key `new_key` in the environment, when given), kills it with
/// SIGKILL after `delay`, and returns whether it had finished by then.
fn rotate_and_kill(
    node: &Node,
    old_key: Option<&str>,
    new_key: Option<&str>,
    delay: Duration,
) -> bool {
    let mut command = node.command();
    if let Some(key) = old_key {
        command.env("KEYHOLE_MASTER_KEY", key);
    }
    if let Some(key) = new_key {
        command.env("KEYHOLE_NEW_MASTER_KEY", key);
    }
    let mut child = command
        .args(["master-key", "rotate"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let finished = child.try_wait().unwrap().is_some();
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    finished
}

/// Store with many versions, so a rotation takes long enough to be
/// interrupted in every phase.
fn populated(node: &Node) -> usize {
    let mut versions = 0;
    for i in 0..40 {
        node.put_secret(
            &format!("s{i:02}"),
            format!("value-{i:02}-first").as_bytes(),
        );
        versions += 1;
    }
    versions
}

#[test]
fn an_interrupted_key_file_rotation_opens_with_exactly_one_key_and_loses_nothing() {
    let node = Node::with_key_file();
    let versions = populated(&node);
    let key_file = node.data.path().join("master.key");
    // Time a full run on a throwaway copy to spread the kills over it.
    let copy = Node::with_key_file();
    populated(&copy);
    let full = {
        let start = Instant::now();
        let out = copy.cli(&["master-key", "rotate"]);
        assert!(out.status.success());
        start.elapsed()
    };
    let mut completed = 0;
    for round in 0..40u32 {
        let old = std::fs::read_to_string(&key_file).unwrap();
        let delay = full.mul_f64(f64::from(round % 20) / 16.0);
        if rotate_and_kill(&node, None, None, delay) {
            completed += 1;
        }
        // Whatever was interrupted, the next command finds a consistent
        // store, opens it with exactly one key, and every version decrypts.
        let report = check_ok(&node, None).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(
            report.contains(&format!(
                "checked {versions} secret version(s): {versions} ok"
            )),
            "round {round}: {report}"
        );
        let now = std::fs::read_to_string(&key_file).unwrap();
        assert!(
            !node.data.path().join("master.key.new").exists(),
            "round {round}"
        );
        let opens_old = check_ok(&node, Some(old.trim())).is_ok();
        let opens_now = check_ok(&node, Some(now.trim())).is_ok();
        assert!(
            opens_now,
            "round {round}: the key file does not open the store"
        );
        if old != now {
            assert!(
                !opens_old,
                "round {round}: the old key still opens the store"
            );
        }
    }
    eprintln!("{completed} of 40 rotations finished before their kill ({full:?} each)");
}

#[test]
fn an_interrupted_environment_rotation_opens_with_exactly_one_key() {
    let node = Node::new();
    let versions = populated(&node);
    // One uninterrupted rotation, timed, to spread the kills over.
    let mut current = key_b64();
    let start = Instant::now();
    let out = node
        .command()
        .env("KEYHOLE_NEW_MASTER_KEY", &current)
        .args(["master-key", "rotate"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out).1);
    let full = start.elapsed();
    for round in 0..30u32 {
        let candidate = key_b64();
        let delay = full.mul_f64(f64::from(round % 15) / 12.0);
        rotate_and_kill(&node, Some(&current), Some(&candidate), delay);
        let with_old = check_ok(&node, Some(&current));
        let with_new = check_ok(&node, Some(&candidate));
        match (with_old, with_new) {
            (Ok(report), Err(_)) => assert!(report.contains(&format!("{versions} ok")), "{report}"),
            (Err(_), Ok(report)) => {
                assert!(report.contains(&format!("{versions} ok")), "{report}");
                current = candidate;
            }
            (old, new) => panic!("round {round}: old {old:?}, new {new:?}: not exactly one key"),
        }
    }
}

#[test]
fn check_names_a_damaged_version_and_master_key_rotation_refuses_to_lose_it() {
    let node = Node::new();
    node.put_secret("intact", b"intact-value-123");
    node.put_secret("damaged", b"damaged-value-456");
    assert!(
        check_ok(&node, node.env_key())
            .unwrap()
            .contains("checked 2 secret version(s): 2 ok, 0 failed")
    );
    // Flip one bit of the damaged secret's ciphertext.
    let db = node.db();
    let mut ciphertext: Vec<u8> = db
        .query_row(
            "SELECT ciphertext FROM secret_versions WHERE name = 'damaged'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    ciphertext[20] ^= 1;
    db.execute(
        "UPDATE secret_versions SET ciphertext = ?1 WHERE name = 'damaged'",
        [ciphertext],
    )
    .unwrap();
    drop(db);

    let err = check_ok(&node, node.env_key()).unwrap_err();
    assert!(
        err.contains("secret `damaged` version 1 failed its integrity check"),
        "{err}"
    );
    assert!(!err.contains("intact"), "{err}");
    assert!(err.contains("1 secret version(s) failed"), "{err}");

    // A version whose data key does not open refuses a master-key
    // rotation whole, rather than leaving it behind under the old key.
    let db = node.db();
    db.execute(
        "UPDATE secret_versions SET wrapped_key = zeroblob(60) WHERE name = 'damaged'",
        [],
    )
    .unwrap();
    drop(db);
    let out = node
        .command()
        .env("KEYHOLE_NEW_MASTER_KEY", key_b64())
        .args(["master-key", "rotate"])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("secret `damaged` version 1 failed its integrity check"),
        "{stderr}"
    );
    // Nothing changed: the old key still opens the intact version.
    let out = node.cli(&["check"]);
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("2 secret version(s): 1 ok, 1 failed"),
        "{stdout}"
    );
}

/// The node's store, rotating the master key (through a second handle on
/// the same file, as another process would) at the moment a load reads its
/// first secret: after the reload has checked the key, before it decrypts.
/// With `regrant`, it instead gives the first grant (widened) and then the
/// second (as it was) around the moment a load reads a function's grants.
struct RotatesMidLoad {
    inner: Arc<keyhole_host::store::SqliteStore>,
    other: keyhole_host::store::SqliteStore,
    new_key: [u8; 32],
    armed: AtomicBool,
    regrant: Option<(Grant, Grant)>,
    regrant_armed: AtomicBool,
}

/// An admin record for a write the test makes behind the node's back.
fn test_record(action: &str) -> AdminRecord {
    AdminRecord::new(AdminEvent {
        token: "(test)".into(),
        role: "admin".into(),
        action: action.into(),
        target: "test".into(),
        function: None,
        secret: None,
        outcome: "ok".into(),
        detail: None,
    })
}

/// Writes the trait methods that only hand the call to `self.inner`.
macro_rules! delegate {
    ($($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        $(fn $name(&self, $($arg: $ty),*) -> Result<$ret, StoreError> {
            self.inner.$name($($arg),*)
        })*
    };
}

impl SecretStore for RotatesMidLoad {
    delegate! {
        put_secret(name: &str, new: &NewVersion<'_>, record: &AdminRecord) -> Stored;
        rotate_secret(name: &str, new: &NewVersion<'_>, record: &AdminRecord) -> Stored;
        list_secrets() -> Vec<SecretInfo>;
        secret(name: &str) -> SecretInfo;
        versions(name: &str) -> Vec<VersionInfo>;
        rollback(name: &str, to: u32, grace: Option<i64>, record: &AdminRecord) -> RolledBack;
        remove_secret(name: &str, force: bool, record: &AdminRecord) -> RemovedSecret;
        dependents(name: &str) -> Vec<Dependent>;
        record_uses(uses: &[UseRecord]) -> ();
    }
    fn usable_versions(&self, name: &str) -> Result<Option<UsableVersions>, StoreError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            let new = AesKey::from_slice(&self.new_key).unwrap();
            let record = test_record("master-key.rotate");
            self.other.rotate_master_key(new, &record).unwrap();
        }
        self.inner.usable_versions(name)
    }
}

impl FunctionStore for RotatesMidLoad {
    delegate! {
        deploy(deployment: &Deployment, may_nest: &NestPolicy<'_>, record: &AdminRecord) -> ();
        undeploy(name: &str, record: &AdminRecord) -> usize;
        functions() -> Vec<FunctionInfo>;
        function(name: &str) -> Option<FunctionInfo>;
        component(name: &str) -> (Vec<u8>, String);
        approve(function: &str, digest: Option<&str>, record: &AdminRecord) -> FunctionInfo;
    }
}

impl GrantStore for RotatesMidLoad {
    delegate! {
        grant(grant: &Grant, record: &AdminRecord) -> ();
        revoke(function: &str, binding: &str, record: &AdminRecord) -> Grant;
    }
    fn grants(&self, function: Option<&str>) -> Result<Vec<Grant>, StoreError> {
        let Some((widened, original)) = self
            .regrant
            .as_ref()
            .filter(|_| self.regrant_armed.swap(false, Ordering::SeqCst))
        else {
            return self.inner.grants(function);
        };
        self.other.grant(widened, &test_record("grant")).unwrap();
        let read = self.inner.grants(function);
        self.other.grant(original, &test_record("grant")).unwrap();
        read
    }
}

impl TokenStore for RotatesMidLoad {
    delegate! {
        create_token(info: &TokenInfo, hash: &[u8], record: &AdminRecord) -> ();
        tokens() -> Vec<TokenInfo>;
        token_by_id(id: &str) -> Option<(TokenInfo, Vec<u8>)>;
        revoke_token(name: &str, record: &AdminRecord) -> TokenInfo;
    }
}

impl AuditLog for RotatesMidLoad {
    delegate! {
        append_audit(batch: &[Timed]) -> ();
        audit_entries(query: &Query) -> Vec<Entry>;
        verify_audit() -> Verification;
        audit_prunable(before_ms: Millis) -> bool;
        prune_audit(before_ms: Millis, record: &AdminRecord) -> PruneReport;
    }
}

impl KeyCustody for RotatesMidLoad {
    delegate! {
        check_master_key() -> ();
        rekey(key: AesKey) -> ();
        rotate_master_key(new: AesKey, record: &AdminRecord) -> usize;
        verify_integrity() -> ();
        check_all() -> CheckReport;
        module_cache_key() -> zeroize::Zeroizing<[u8; 32]>;
    }
}

impl Changes for RotatesMidLoad {
    delegate! {
        revision() -> u64;
        served_state() -> ServedState;
    }
}

#[test]
fn a_master_key_rotation_committed_mid_load_leaves_the_previous_snapshot_serving() {
    let node = Node::new();
    let value = b"mid-load-rotation-key";
    node.put_secret("hook", value);
    node.granted_probe("probe", "/probe", "hook", "hmac", "");
    let old_key = STANDARD.decode(node.env_key().unwrap()).unwrap();
    let open = |key: &[u8]| {
        keyhole_host::store::SqliteStore::open(node.data.path(), AesKey::from_slice(key).unwrap())
            .unwrap()
    };
    let inner = Arc::new(open(&old_key));
    let store = Arc::new(RotatesMidLoad {
        inner: Arc::clone(&inner),
        other: open(&old_key),
        new_key: rand::random(),
        armed: AtomicBool::new(false),
        regrant: None,
        regrant_armed: AtomicBool::new(false),
    });
    let catalog = Catalog::new(
        Arc::clone(&store) as _,
        Arc::new(Runtime::with_max_instances(4).unwrap()),
        Arc::new(Observer::default()),
    );
    let bound = |snapshot: &Snapshot| {
        let function = snapshot.route("/probe").expect("the probe is served");
        let current = function.secrets.get("KEY").unwrap().current.clone();
        current.map(|material| material.value().expose().to_vec())
    };
    assert!(catalog.refresh().unwrap());
    let before = catalog.snapshot();
    assert_eq!(bound(&before).as_deref(), Some(&value[..]));

    // A change to the probe's secret makes the next refresh decrypt it
    // again; the rotation lands in its midst.
    let second = b"mid-load-rotation-key-2";
    node.put_secret("hook", second);
    store.armed.store(true, Ordering::SeqCst);
    let err = catalog.refresh().unwrap_err();
    assert!(matches!(err, StoreError::WrongMasterKey), "{err}");
    assert!(
        Arc::ptr_eq(&before, &catalog.snapshot()),
        "a load that could not decrypt its secrets replaced the snapshot"
    );
    assert!(
        !store.armed.load(Ordering::SeqCst),
        "the rotation never ran"
    );

    // Under the new key the next refresh loads everything.
    inner
        .rekey(AesKey::from_slice(&store.new_key).unwrap())
        .unwrap();
    assert!(catalog.refresh().unwrap());
    assert_eq!(bound(&catalog.snapshot()).as_deref(), Some(&second[..]));
}

#[test]
fn a_grant_widened_and_narrowed_back_while_a_load_reads_is_not_left_in_force() {
    let node = Node::new();
    node.put_secret("hook", b"widened-mid-load-key");
    node.deploy_probe(
        "probe",
        "/probe",
        "[bindings.KEY]\nallow = [\"hmac\", \"reveal\"]\n",
    );
    node.ok(&[
        "grant", "probe", "KEY", "--secret", "hook", "--allow", "hmac",
    ]);
    let key = STANDARD.decode(node.env_key().unwrap()).unwrap();
    let open = || {
        keyhole_host::store::SqliteStore::open(node.data.path(), AesKey::from_slice(&key).unwrap())
            .unwrap()
    };
    let inner = Arc::new(open());
    let original = inner.grants(Some("probe")).unwrap().remove(0);
    let widened = Grant {
        allow: original.allow.with(Operation::Reveal),
        ..original.clone()
    };
    let store = Arc::new(RotatesMidLoad {
        inner,
        other: open(),
        new_key: [0; 32],
        armed: AtomicBool::new(false),
        regrant: Some((widened, original)),
        regrant_armed: AtomicBool::new(false),
    });
    let catalog = Catalog::new(
        Arc::clone(&store) as _,
        Arc::new(Runtime::with_max_instances(4).unwrap()),
        Arc::new(Observer::default()),
    );
    let allowed = |catalog: &Catalog| {
        let snapshot = catalog.snapshot();
        let function = snapshot.route("/probe").expect("the probe is served");
        function.secrets.get("KEY").unwrap().allowed
    };
    assert!(catalog.refresh().unwrap());
    let hmac_only = OperationSet::EMPTY.with(Operation::Hmac);
    assert_eq!(allowed(&catalog), hmac_only);

    // A rotation makes the next load read the probe again; while it reads
    // the probe's grant, the grant is widened to `reveal` and narrowed
    // back, which leaves its tag as it was.
    node.put_secret("hook", b"widened-mid-load-key-2");
    store.regrant_armed.store(true, Ordering::SeqCst);
    assert!(catalog.refresh().unwrap());
    assert!(
        !store.regrant_armed.load(Ordering::SeqCst),
        "the grant was never widened"
    );
    // That load saw the store move under it: the next one reads again.
    assert!(catalog.refresh().unwrap());
    assert_eq!(
        allowed(&catalog),
        hmac_only,
        "a grant narrowed back while a load read it stayed widened"
    );
}
