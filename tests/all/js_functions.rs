//! Functions written in JavaScript: built from source with the JS guest SDK
//! (`guest-sdk/js`, ComponentizeJS from the npm registry), deployed and
//! served by a real node, held to the same rules as Rust functions — deny by
//! default, `reveal` only where granted, and no encoding of a secret in the
//! guest's memory after the host computed with it.

use crate::common;

use common::{Binding, Node, artifacts, build_js, found_in, repo_root};
use std::process::Command;

/// The JS probe (tests/programs/js/probe), built.
fn js_probe() -> String {
    build_js("tests/programs/js/probe", "dist/probe.wasm")
        .to_str()
        .unwrap()
        .to_owned()
}

/// Request headers, as `Node::post` takes them.
type Headers<'a> = &'a [(&'a str, &'a str)];

#[test]
fn the_js_examples_serve_what_their_rust_twins_serve() {
    let hello = build_js("examples/js/hello-secret", "dist/hello-secret.wasm");
    let webhook = build_js("examples/js/webhook-verify", "dist/webhook-verify.wasm");
    assert!(hello.exists() && webhook.exists());
    let root = repo_root();
    let mut node = Node::new();
    let key = b"webhook-key-for-the-js-twin".to_vec();
    node.put_secret("greeting", b"greeting-key-value");
    node.put_secret("gh", &key);
    for manifest in [
        root.join("examples/js/hello-secret/keyhole.toml"),
        root.join("examples/js/webhook-verify/keyhole.toml"),
    ] {
        node.ok(&["deploy", manifest.to_str().unwrap()]);
    }
    node.ok(&["deploy", artifacts::HELLO_SECRET_MANIFEST]);
    node.ok(&["deploy", artifacts::WEBHOOK_VERIFY_MANIFEST]);
    node.start();

    // Nothing granted yet: refused, by the host.
    let refused = node.get("/hello-js");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(refused.text().starts_with("not-granted: "), "{refused:?}");

    for (function, binding, secret) in [
        ("hello-secret-js", "GREETING_KEY", "greeting"),
        ("hello-secret", "GREETING_KEY", "greeting"),
        ("webhook-verify-js", "GITHUB_WEBHOOK", "gh"),
        ("webhook-verify", "GITHUB_WEBHOOK", "gh"),
    ] {
        node.ok(&[
            "grant", function, binding, "--secret", secret, "--allow", "hmac",
        ]);
    }
    let js = node.wait_for("/hello-js", |r| r.status == 200);
    let rust = node.wait_for("/hello", |r| r.status == 200);
    assert_eq!(
        js.text(),
        "hello from keyhole: binding GREETING_KEY is at version 1\n"
    );
    assert_eq!(js.text(), rust.text());

    let body = br#"{"action":"opened","number":7}"#;
    let good = common::github_signature(&key, body);
    let bad = common::github_signature(b"another key", body);
    let cases: [(Headers, u16, &str); 3] = [
        (&[("x-hub-signature-256", &good)], 200, "signature valid\n"),
        (
            &[("x-hub-signature-256", &bad)],
            401,
            "signature does not match\n",
        ),
        (&[], 401, "missing or malformed X-Hub-Signature-256\n"),
    ];
    // Each route once its grant is in force (the last one given is the
    // Rust twin's).
    node.wait_for("/webhook-js", |r| r.status != 503);
    node.wait_for("/webhook", |r| r.status != 503);
    for (headers, status, text) in cases {
        let js = node.post("/webhook-js", headers, body);
        let rust = node.post("/webhook", headers, body);
        assert_eq!(
            (js.status, js.text().as_str()),
            (status, text),
            "{headers:?}"
        );
        assert_eq!((rust.status, rust.text()), (js.status, js.text()));
    }
}

#[test]
fn a_js_guest_is_denied_by_default_and_reveals_only_where_granted() {
    let probe = js_probe();
    let mut node = Node::new();
    let value = common::random_token();
    node.put_secret("s", value.as_bytes());
    let manifest = node.write_manifest(
        "probe-js",
        &probe,
        "/js",
        "[limits]\nmemory-mib = 64\n\
         [bindings.KEY]\nallow = [\"hmac\"]\n\
         [bindings.OPEN]\nallow = [\"hmac\", \"reveal\"]\n",
    );
    node.ok(&["deploy", manifest.to_str().unwrap()]);
    node.start();
    let op = |op: &str, binding: &str| {
        let reply = node.get(&format!("/js/op?op={op}&binding={binding}"));
        assert_eq!(reply.status, 200, "{reply:?}");
        serde_json::from_str::<serde_json::Value>(&reply.text()).unwrap()
    };

    // Deny by default: requested in the manifest, not granted.
    for binding in ["KEY", "OPEN", "NEVER_REQUESTED"] {
        assert_eq!(op("get", binding)["kind"], "not-granted", "{binding}");
    }

    node.ok(&[
        "grant", "probe-js", "KEY", "--secret", "s", "--allow", "hmac",
    ]);
    let hmac = node.wait_for("/js/op?op=hmac&binding=KEY", |r| {
        r.text().contains("\"ok\":true")
    });
    let answer: serde_json::Value = serde_json::from_str(&hmac.text()).unwrap();
    assert_eq!(
        answer["result"],
        common::hmac_sha256_hex(value.as_bytes(), b"keyhole js probe message")
    );
    assert_eq!(op("verify", "KEY")["result"], "true");
    // Granted `hmac` only: every other operation is refused.
    assert_eq!(op("reveal", "KEY")["kind"], "denied");
    assert_eq!(op("seal", "KEY")["kind"], "denied");

    // `reveal` where the grant has it (and the manifest asked for it).
    node.ok(&[
        "grant",
        "probe-js",
        "OPEN",
        "--secret",
        "s",
        "--allow",
        "hmac,reveal",
    ]);
    let revealed = node.wait_for("/js/op?op=reveal&binding=OPEN", |r| {
        r.text().contains("\"ok\":true")
    });
    let answer: serde_json::Value = serde_json::from_str(&revealed.text()).unwrap();
    assert_eq!(answer["result"], hex::encode(value.as_bytes()));

    // Revoked: refused again, from the next request on.
    node.ok(&["revoke", "probe-js", "KEY"]);
    node.wait_for("/js/op?op=hmac&binding=KEY", |r| {
        r.text().contains("not-granted")
    });
}

#[test]
fn after_hmac_and_verify_a_js_guests_memory_holds_no_encoding_of_the_secret() {
    let probe = js_probe();
    let secret = common::random_secret();
    let trap_value = common::random_secret();
    let bindings = |allow: &'static str| {
        [
            Binding {
                name: "KEY",
                allow,
                value: &secret,
            },
            Binding {
                name: "TRAP",
                allow: "hmac",
                value: &trap_value,
            },
        ]
    };
    let component = std::path::Path::new(&probe);
    for op in ["hmac", "verify"] {
        let memories = common::memories_at_trap(
            component,
            &bindings("hmac"),
            &format!("/js/op?op={op}&binding=KEY&trap=TRAP"),
        );
        assert!(
            memories.iter().map(Vec::len).sum::<usize>() > 1 << 20,
            "a whole JS engine's memory"
        );
        for memory in &memories {
            let found = found_in(&secret, memory);
            assert!(found.is_empty(), "after {op}: {found:?} in guest memory");
        }
        // What the host computed did reach the guest (the tag's bytes, as
        // the host returned them): the check looks in the right place.
        let tag = hex::decode(common::hmac_sha256_hex(
            &secret,
            b"keyhole js probe message",
        ))
        .unwrap();
        assert!(
            memories
                .iter()
                .any(|m| m.windows(tag.len()).any(|w| w == tag.as_slice())),
            "after {op}: the HMAC tag is in memory"
        );
    }
    // The control: after `reveal`, the same inspection finds the secret.
    let memories = common::memories_at_trap(
        component,
        &bindings("hmac,reveal"),
        "/js/op?op=reveal&binding=KEY&trap=TRAP",
    );
    assert!(
        memories.iter().any(|m| !found_in(&secret, m).is_empty()),
        "reveal copies the secret into guest memory, and the inspection sees it"
    );
}

#[test]
fn the_js_sdks_wit_and_types_are_what_the_repositorys_wit_makes() {
    let root = repo_root();
    let sdk = root.join("guest-sdk/js");
    let check = Command::new("node")
        .args(["scripts/sync-wit.mjs", "--check"])
        .current_dir(&sdk)
        .output()
        .expect("running node");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let fresh = tempfile::tempdir().unwrap();
    let generated = Command::new(root.join("node_modules/.bin/jco"))
        .args(["guest-types", "wit", "--world-name", "sdk", "--quiet", "-o"])
        .arg(fresh.path())
        .current_dir(&sdk)
        .output()
        .expect("running jco (npm ci installs it)");
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    for file in ["sdk.d.ts", "interfaces/keyhole-secrets-secrets.d.ts"] {
        assert_eq!(
            std::fs::read_to_string(fresh.path().join(file)).unwrap(),
            std::fs::read_to_string(sdk.join("types").join(file)).unwrap(),
            "guest-sdk/js/types/{file} is stale: run `npm run sync:js-sdk` at the repository root"
        );
    }
}
