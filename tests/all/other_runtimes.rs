//! Components written for other runtimes, run unchanged under Keyhole's
//! rules: a function built from source against wasmCloud's
//! `wasmcloud:secrets@0.1.0-draft` and `wasi:config/store@0.2.0-rc.1`
//! (the upstream WIT, vendored in `wit/deps`), reaching secrets through
//! Keyhole's grants and settings through its manifest's `[config]`.

use crate::common;

use common::{Node, artifacts, found_in, random_secret};
use std::time::{Duration, Instant};

/// A node serving the wasmCloud-style guest as function `wc` at `/wc`,
/// whose manifest asks for `TOKEN` (`reveal`), `BLOB` (`reveal`) and
/// `SIGNING` (`hmac` only); `TOKEN` and `BLOB` granted `reveal`, `SIGNING`
/// granted `hmac`; `UNGRANTED` asked for and never granted; `[config]`
/// `greeting` and `region`.
fn node_with_wasmcloud_guest(token: &[u8], blob: &[u8], signing: &[u8]) -> Node {
    let mut node = Node::new();
    node.put_secret("api-token", token);
    node.put_secret("blob", blob);
    node.put_secret("signing", signing);
    let manifest = node.write_manifest(
        "wc",
        artifacts::WASMCLOUD_GUEST,
        "/wc",
        "[bindings.TOKEN]\nallow = [\"reveal\"]\n\
         [bindings.BLOB]\nallow = [\"reveal\"]\n\
         [bindings.SIGNING]\nallow = [\"hmac\"]\n\
         [bindings.UNGRANTED]\nallow = [\"reveal\"]\n\
         [config]\ngreeting = \"hello from the manifest\"\nregion = \"eu-west\"\n",
    );
    node.ok(&["deploy", manifest.to_str().unwrap()]);
    for (binding, secret, ops) in [
        ("TOKEN", "api-token", "reveal"),
        ("BLOB", "blob", "reveal"),
        ("SIGNING", "signing", "hmac"),
    ] {
        node.ok(&["grant", "wc", binding, "--secret", secret, "--allow", ops]);
    }
    node.start();
    node
}

/// The function records the node has written for `wc` so far.
fn records(node: &Node) -> Vec<serde_json::Value> {
    let json = node.ok(&["audit", "--json", "--limit", "100000", "--function", "wc"]);
    serde_json::from_str(&json).unwrap()
}

#[test]
fn a_component_written_for_wasmcloud_reaches_secrets_only_as_its_grants_allow() {
    let token = b"wc-token-0f9e8d7c6b5a".to_vec();
    let blob = vec![0xff, 0x00, 0xfe, 0x01, 0x80, 0x7f];
    let signing = random_secret();
    let node = node_with_wasmcloud_guest(&token, &blob, &signing);

    // Granted `reveal`: the value, as a string when it is UTF-8, as bytes
    // otherwise.
    let reply = node.get("/wc/reveal?key=TOKEN");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.text(),
        format!("string:{}", String::from_utf8_lossy(&token))
    );
    let reply = node.get("/wc/reveal?key=BLOB");
    assert_eq!(
        (reply.status, reply.text()),
        (200, "bytes:ff00fe01807f".to_owned())
    );

    // Deny by default: a key with no grant, asked for in the manifest or
    // not, is not found.
    for key in ["UNGRANTED", "NOT_IN_MANIFEST"] {
        let reply = node.get(&format!("/wc/get?key={key}"));
        assert_eq!(
            (reply.status, reply.text()),
            (404, "not-found".to_owned()),
            "{key}"
        );
    }

    // Granted, but not `reveal`: the handle opens (it could be used by
    // Keyhole's own operations), and `reveal`, which has no error to
    // return, stops the instance: 500, a log line saying why, and the
    // refusal in the audit trail. The value never reaches the guest.
    assert_eq!(node.get("/wc/get?key=SIGNING").status, 200);
    let reply = node.get("/wc/reveal?key=SIGNING");
    assert_eq!(reply.status, 500, "{reply:?}");
    assert!(found_in(&signing, &reply.body).is_empty());
    let deadline = Instant::now() + Duration::from_secs(10);
    let logs = loop {
        let logs = node.logs();
        if logs.contains("wasmcloud:secrets/reveal refused") {
            break logs;
        }
        assert!(Instant::now() < deadline, "no trap logged: {logs}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        logs.contains("binding `SIGNING` is not granted `reveal`")
            && logs.contains("the instance was stopped"),
        "{logs}"
    );
    assert!(found_in(&signing, logs.as_bytes()).is_empty(), "{logs}");
    // And the node serves on.
    assert_eq!(node.get("/wc/reveal?key=TOKEN").status, 200);

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let records = records(&node);
        let outcome = |op: &str, binding: &str, outcome: &str| {
            records
                .iter()
                .any(|r| r["operation"] == op && r["binding"] == binding && r["outcome"] == outcome)
        };
        if outcome("reveal", "SIGNING", "denied")
            && outcome("get", "UNGRANTED", "not-granted")
            && outcome("reveal", "TOKEN", "allowed")
        {
            break;
        }
        assert!(Instant::now() < deadline, "records missing: {records:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_wasmcloud_guests_memory_holds_a_secret_only_after_reveal() {
    let token = random_secret();
    let node = node_with_wasmcloud_guest(&token, b"blob", b"signing");

    let dump = node.get("/wc/dump?key=TOKEN");
    assert_eq!(dump.status, 200, "{dump:?}");
    assert!(dump.body.len() >= 64 * 1024, "a whole linear memory");
    assert_eq!(
        found_in(&token, &dump.body),
        Vec::<String>::new(),
        "`get` must not put the value in guest memory"
    );
    // The check can fail: after `reveal` the value is there (as bytes: a
    // random secret is not UTF-8).
    let revealed = node.get("/wc/reveal?key=TOKEN");
    assert_eq!(revealed.status, 200);
    let hex: String = token.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(revealed.text(), format!("bytes:{hex}"));
}

#[test]
fn a_component_reads_its_manifests_config_through_wasi_config_and_nothing_else() {
    let node = node_with_wasmcloud_guest(b"token-value-123", b"blob", b"signing");
    let reply = node.get("/wc/config?key=greeting");
    assert_eq!(
        (reply.status, reply.text()),
        (200, "hello from the manifest".to_owned())
    );
    // Not the node's environment, not a secret, not a binding's name.
    for key in ["PATH", "KEYHOLE_MASTER_KEY", "TOKEN", "api-token"] {
        let reply = node.get(&format!("/wc/config?key={key}"));
        assert_eq!(
            (reply.status, reply.text()),
            (404, "none".to_owned()),
            "{key}"
        );
    }
    let all = node.get("/wc/config-all");
    assert_eq!(
        (all.status, all.text()),
        (
            200,
            "greeting=hello from the manifest\nregion=eu-west".to_owned()
        )
    );
    // Listed with the function, in clear: config is for what may be seen.
    let listed = node.ok(&["functions", "--json"]);
    assert!(listed.contains("eu-west"), "{listed}");

    // A redeploy with another `[config]` is served at once.
    let manifest = node.write_manifest(
        "wc",
        artifacts::WASMCLOUD_GUEST,
        "/wc",
        "[config]\ngreeting = \"changed\"\n",
    );
    node.ok(&["deploy", manifest.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.get("/wc/config?key=greeting").text() != "changed" {
        assert!(Instant::now() < deadline, "the new [config] is not served");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(node.get("/wc/config?key=region").status, 404);

    // A value that is not a string is refused at deploy, naming the line.
    let bad = node.write_manifest(
        "wc",
        artifacts::WASMCLOUD_GUEST,
        "/wc",
        "[config]\nretries = 3\n",
    );
    let out = node.cli(&["deploy", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 5") && err.contains("config values are strings"),
        "{err}"
    );
}
