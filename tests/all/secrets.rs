//! Grants, end to end: a real node, real components, real HTTP.

use crate::common;

use common::{Held, Node, artifacts, github_signature};

#[test]
fn webhook_verify_checks_github_signatures_on_the_host() {
    let mut node = Node::new();
    let key = b"It's a Secret to Everybody";
    node.put_secret("gh-webhook-prod", key);
    node.deploy_granted(
        artifacts::WEBHOOK_VERIFY_MANIFEST,
        "webhook-verify",
        "GITHUB_WEBHOOK",
        "gh-webhook-prod",
        "hmac",
    );
    node.start();

    // GitHub's own documented test vector.
    let body = b"Hello, World!";
    let signature = github_signature(key, body);
    assert_eq!(
        signature,
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    );
    let good = node.post("/webhook", &[("x-hub-signature-256", &signature)], body);
    assert_eq!(good.status, 200, "{good:?}");

    let tampered = node.post(
        "/webhook",
        &[("x-hub-signature-256", &signature)],
        b"Hello, World?",
    );
    assert_eq!(tampered.status, 401, "{tampered:?}");
    let wrong_key = github_signature(b"another key", body);
    assert_eq!(
        node.post("/webhook", &[("x-hub-signature-256", &wrong_key)], body)
            .status,
        401
    );
    assert_eq!(node.post("/webhook", &[], body).status, 401);
    assert_eq!(
        node.post("/webhook", &[("x-hub-signature-256", "sha256=zz")], body)
            .status,
        401
    );
}

#[test]
fn hello_secret_is_pending_until_granted_and_never_shows_the_value() {
    let mut node = Node::new();
    node.put_secret("greeting", b"do-not-print-this-value");
    let deployed = node.ok(&["deploy", artifacts::HELLO_SECRET_MANIFEST]);
    assert!(
        deployed.contains("GREETING_KEY [hmac]: pending"),
        "{deployed}"
    );
    node.start();

    let refused = node.get("/hello");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(refused.text().contains("not-granted"), "{refused:?}");

    node.ok(&[
        "grant",
        "hello-secret",
        "GREETING_KEY",
        "--secret",
        "greeting",
        "--allow",
        "hmac",
    ]);
    let granted = node.wait_for("/hello", |r| r.status == 200);
    assert_eq!(
        granted.text(),
        "hello from keyhole: binding GREETING_KEY is at version 1\n"
    );

    // A new version is in force on a later request, with no restart.
    node.put_secret("greeting", b"second-value");
    node.wait_for("/hello", |r| r.text().contains("version 2"));
    assert!(!node.logs().contains("do-not-print-this-value"));
}

#[test]
fn reveal_needs_its_own_grant() {
    let mut node = Node::new();
    node.put_secret("db-password", b"correct horse battery staple");
    node.ok(&["deploy", artifacts::REVEAL_DEMO_MANIFEST]);
    node.ok(&[
        "grant",
        "reveal-demo",
        "DB_PASSWORD",
        "--secret",
        "db-password",
        "--allow",
        "hmac",
    ]);
    node.start();

    let denied = node.get("/reveal");
    assert_eq!(denied.status, 403, "{denied:?}");
    assert!(
        denied
            .text()
            .contains("denied: binding `DB_PASSWORD` is not granted `reveal`"),
        "{denied:?}"
    );

    node.ok(&[
        "grant",
        "reveal-demo",
        "DB_PASSWORD",
        "--secret",
        "db-password",
        "--allow",
        "reveal",
    ]);
    let revealed = node.wait_for("/reveal", |r| r.status == 200);
    assert_eq!(
        revealed.text(),
        "revealed DB_PASSWORD version 1: 28 bytes\n"
    );
}

#[test]
fn revoke_is_in_force_on_the_next_request() {
    let mut node = Node::new();
    node.put_secret("k", b"key-bytes");
    node.granted_probe("fn-a", "/a", "k", "hmac", "");
    node.start();
    assert_eq!(node.get("/a/hmac?binding=KEY").status, 200);

    node.ok(&["revoke", "fn-a", "KEY"]);
    let revoked = node.wait_for("/a/hmac?binding=KEY", |r| r.status != 200);
    assert!(revoked.text().contains("not-granted"), "{revoked:?}");
}

#[test]
fn what_an_operator_withdraws_reaches_requests_already_running() {
    let mut node = Node::new();
    for secret in ["ka", "kb", "kc"] {
        node.put_secret(secret, b"first value of 32 bytes, exactly");
    }
    node.granted_probe("fn-a", "/a", "ka", "hmac,reveal", "");
    node.granted_probe("fn-b", "/b", "kb", "hmac,reveal", "");
    node.granted_probe("fn-c", "/c", "kc", "hmac,reveal", "");
    node.start();

    // Three requests that opened their handle before anything changed.
    let (mut a, opened) = Held::open(&node, "/a/hold?binding=KEY");
    assert_eq!(opened, "get ok version 1");
    let (mut b, _) = Held::open(&node, "/b/hold?binding=KEY");
    let (mut c, _) = Held::open(&node, "/c/hold?binding=KEY");
    for held in [&mut a, &mut b, &mut c] {
        assert!(held.run("hmac").starts_with("hmac ok "));
        assert_eq!(held.run("reveal"), "reveal ok 32 bytes");
    }

    // fn-a's grant is revoked; kb is rotated with no grace (the urgent
    // rotation after a leak); kc is rotated with a grace window, which
    // withdraws nothing.
    node.ok(&["revoke", "fn-a", "KEY"]);
    let rotate = |name: &str, extra: &[&str]| {
        let mut args = vec!["secret", "rotate", name];
        args.extend_from_slice(extra);
        let out = node.cli_stdin(&args, b"second value of 32 bytes, too!!!");
        assert!(out.status.success(), "{out:?}");
    };
    rotate("kb", &[]);
    rotate("kc", &["--grace", "1h"]);
    node.wait_for("/c/version?binding=KEY", |r| r.text().contains('2'));

    for op in ["hmac", "reveal", "token", "get"] {
        let answer = a.run(op);
        assert!(
            answer.starts_with(&format!("{op} error denied:"))
                && answer.contains("after this request began"),
            "a revoked grant still serves a running request: {answer}"
        );
    }
    for op in ["hmac", "reveal", "get"] {
        let answer = b.run(op);
        assert!(
            answer.starts_with(&format!("{op} error denied:"))
                && answer.contains("after this request began"),
            "a version retired without grace still serves a running request: {answer}"
        );
    }
    // In its grace window the old version still serves what opened it.
    assert!(c.run("hmac").starts_with("hmac ok "));
    assert_eq!(c.run("reveal"), "reveal ok 32 bytes");

    // Narrowing a grant takes away only what it no longer allows.
    node.ok(&["grant", "fn-c", "KEY", "--secret", "kc", "--allow", "hmac"]);
    node.wait_for("/c/reveal?binding=KEY", |r| r.status == 403);
    let refused = c.run("reveal");
    assert!(
        refused.starts_with("reveal error denied: binding `KEY` is not granted `reveal`"),
        "{refused}"
    );
    assert!(c.run("hmac").starts_with("hmac ok "));

    // Each refusal is in the audit trail, naming why.
    let trail = node.ok(&["audit", "--function", "fn-a"]);
    assert!(trail.contains("after this request began"), "{trail}");
}

#[test]
fn one_function_cannot_use_another_functions_grant() {
    let mut node = Node::new();
    node.put_secret("k", b"key-bytes");
    node.granted_probe("fn-a", "/a", "k", "hmac,reveal", "");
    // fn-b requests the same binding name, but nobody granted it.
    node.deploy_probe(
        "fn-b",
        "/b",
        "[bindings.KEY]
allow = [\"hmac\", \"reveal\"]
",
    );
    node.start();

    assert_eq!(node.get("/a/hmac?binding=KEY").status, 200);
    for probe in ["hmac", "reveal", "version"] {
        let reply = node.get(&format!("/b/{probe}?binding=KEY"));
        assert_eq!(reply.status, 403, "{probe}: {reply:?}");
        assert!(
            reply
                .text()
                .contains("error not-granted: function `fn-b` has no grant"),
            "{reply:?}"
        );
    }
}

#[test]
fn ungranted_and_unrequested_bindings_are_not_granted() {
    let mut node = Node::new();
    node.put_secret("k", b"key-bytes");
    node.granted_probe("fn-a", "/a", "k", "hmac", "");
    node.start();

    let reply = node.get("/a/hmac?binding=OTHER");
    assert_eq!(reply.status, 403);
    assert!(reply.text().contains("not-granted"), "{reply:?}");
    // The manifest asked for hmac only, so a reveal is denied even though
    // the binding is granted.
    let reply = node.get("/a/reveal?binding=KEY");
    assert!(reply.text().contains("error denied"), "{reply:?}");
    let reply = node.get("/a/hmac?binding=");
    assert!(reply.text().contains("invalid-argument"), "{reply:?}");
}

#[test]
fn hmac_matches_an_independent_implementation() {
    let mut node = Node::new();
    let key = common::random_secret();
    node.put_secret("k", &key);
    node.granted_probe("fn-a", "/a", "k", "hmac", "");
    node.start();
    let expected = common::hmac_sha256_hex(&key, b"probe");
    assert_eq!(node.get("/a/hmac?binding=KEY").text().trim(), expected);
    assert_eq!(node.get("/a/verify?binding=KEY").text().trim(), "false");
}

#[test]
fn removed_secret_makes_its_bindings_unavailable() {
    let mut node = Node::new();
    node.put_secret("k", b"key-bytes");
    node.granted_probe("fn-a", "/a", "k", "hmac", "");
    node.start();
    assert_eq!(node.get("/a/hmac?binding=KEY").status, 200);
    // Refused while a grant names it; forced, it says what now fails.
    assert!(!node.cli(&["secret", "rm", "k"]).status.success());
    assert_eq!(node.get("/a/hmac?binding=KEY").status, 200);
    let removed = node.ok(&["secret", "rm", "k", "--force"]);
    assert!(
        removed.contains("`fn-a` binding `KEY` now gets `unavailable`"),
        "{removed}"
    );
    let reply = node.wait_for("/a/hmac?binding=KEY", |r| r.status != 200);
    assert!(reply.text().contains("unavailable"), "{reply:?}");
}

#[test]
fn deployments_take_effect_while_serving() {
    let mut node = Node::new();
    node.put_secret("k", b"key-bytes");
    node.start();
    assert_eq!(node.get("/late").status, 404);

    node.granted_probe("late", "/late", "k", "hmac", "");
    node.wait_for("/late/hmac?binding=KEY", |r| r.status == 200);

    node.ok(&["undeploy", "late"]);
    node.wait_for("/late/hmac?binding=KEY", |r| r.status == 404);
    // Redeployed under the same name, it does not inherit the old grant.
    node.deploy_probe("late", "/late", "[bindings.KEY]\nallow = [\"hmac\"]\n");
    let reply = node.wait_for("/late/hmac?binding=KEY", |r| r.status != 404);
    assert!(reply.text().contains("not-granted"), "{reply:?}");
}

#[test]
fn a_function_built_against_keyhole_secrets_0_1_0_still_runs() {
    let mut node = Node::new();
    let key = common::random_secret();
    node.put_secret("legacy-key", &key);
    let manifest = node.write_manifest(
        "legacy",
        artifacts::LEGACY,
        "/legacy",
        "[bindings.KEY]\nallow = [\"hmac\"]\n",
    );
    let deployed = node.ok(&["deploy", manifest.to_str().unwrap()]);
    assert!(deployed.contains("deployed"), "{deployed}");
    node.ok(&[
        "grant",
        "legacy",
        "KEY",
        "--secret",
        "legacy-key",
        "--allow",
        "hmac",
    ]);
    node.start();
    let reply = node.get("/legacy");
    assert_eq!(
        (reply.status, reply.text()),
        (200, common::hmac_sha256_hex(&key, b"legacy"))
    );
}
