//! The admin API against a real node: every endpoint for every role,
//! scoped deployer tokens, expiry and revocation, the CLI giving the same
//! results in both modes, and malformed or oversized requests changing
//! nothing.

use crate::common;

use base64::Engine as _;
use common::{Node, artifacts};
use std::time::Duration;

const VALUE: &[u8] = b"matrix-secret-value-5d1e8a";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A deploy body for the probe as `name` at `route`, requesting `KEY`.
fn deploy_body(name: &str, route: &str) -> Vec<u8> {
    let manifest = format!(
        "name = \"{name}\"\ncomponent = \"probe.wasm\"\nroutes = [\"{route}\"]\n[bindings.KEY]\nallow = [\"hmac\"]\n"
    );
    let component = std::fs::read(artifacts::PROBE).unwrap();
    serde_json::to_vec(&serde_json::json!({
        "manifest": manifest,
        "manifest_path": format!("{name}.toml"),
        "component_base64": b64(&component),
    }))
    .unwrap()
}

/// A node serving the admin API, with one token per role.
struct Roles {
    node: Node,
    admin: String,
    deployer: String,
    auditor: String,
}

fn node_with_roles() -> Roles {
    let mut node = Node::new();
    node.put_secret("base", b"base-secret-value-77aa");
    let admin = node.token(&["--role", "admin", "--name", "root"]);
    let deployer = node.token(&["--role", "deployer", "--name", "ci"]);
    let auditor = node.token(&["--role", "auditor", "--name", "audit"]);
    node.start_admin();
    Roles {
        node,
        admin,
        deployer,
        auditor,
    }
}

#[test]
fn every_endpoint_answers_each_role_as_its_permissions_say() {
    let r = node_with_roles();
    let put = serde_json::to_vec(&serde_json::json!({ "value": b64(VALUE) })).unwrap();
    let rotate =
        serde_json::to_vec(&serde_json::json!({ "value": b64(b"matrix-second-value-0f9c") }))
            .unwrap();
    let deploy = deploy_body("matrix-fn", "/matrix");
    let grant = br#"{"secret":"m","allow":["hmac"]}"#.to_vec();
    let token = br#"{"role":"auditor","name":"made-by-api"}"#.to_vec();
    // (method, path, body, [auditor, deployer, admin]) in an order where
    // each allowed call finds what it needs.
    let table: Vec<(&str, &str, Vec<u8>, [u16; 3])> = vec![
        ("GET", "/v1/secrets", vec![], [200, 403, 200]),
        ("PUT", "/v1/secrets/m", put, [403, 403, 200]),
        ("POST", "/v1/secrets/m/rotate", rotate, [403, 403, 200]),
        ("GET", "/v1/secrets/m/versions", vec![], [200, 403, 200]),
        (
            "POST",
            "/v1/secrets/m/rollback",
            br#"{"to":1}"#.to_vec(),
            [403, 403, 200],
        ),
        ("GET", "/v1/check", vec![], [200, 403, 200]),
        ("POST", "/v1/functions", deploy, [403, 200, 200]),
        ("GET", "/v1/functions", vec![], [200, 200, 200]),
        ("PUT", "/v1/grants/matrix-fn/KEY", grant, [403, 403, 200]),
        ("GET", "/v1/grants", vec![], [200, 403, 200]),
        ("GET", "/v1/secrets/m/dependents", vec![], [200, 403, 200]),
        (
            "DELETE",
            "/v1/grants/matrix-fn/KEY",
            vec![],
            [403, 403, 200],
        ),
        ("DELETE", "/v1/functions/matrix-fn", vec![], [403, 200, 404]),
        ("DELETE", "/v1/secrets/m", vec![], [403, 403, 200]),
        ("GET", "/v1/tokens", vec![], [200, 403, 200]),
        ("POST", "/v1/tokens", token, [403, 403, 200]),
        ("DELETE", "/v1/tokens/made-by-api", vec![], [403, 403, 200]),
        ("GET", "/v1/audit", vec![], [200, 403, 200]),
        ("GET", "/v1/audit/verify", vec![], [200, 403, 200]),
        ("GET", "/metrics", vec![], [200, 403, 200]),
    ];
    let mut bodies = Vec::new();
    for (method, path, body, expected) in &table {
        for (token, label) in [
            (None, "no token"),
            (Some("kh_0123456789abcdef_forged"), "forged token"),
            (Some("not-a-token"), "garbage"),
        ] {
            let reply = r.node.admin_request(method, path, token, body);
            assert_eq!(reply.status, 401, "{method} {path} with {label}: {reply:?}");
        }
        for (token, role, want) in [
            (&r.auditor, "auditor", expected[0]),
            (&r.deployer, "deployer", expected[1]),
            (&r.admin, "admin", expected[2]),
        ] {
            let reply = r.node.admin_request(method, path, Some(token), body);
            assert_eq!(reply.status, want, "{method} {path} as {role}: {reply:?}");
            if want == 403 {
                let text = reply.text();
                assert!(
                    text.contains("lacks the permission") && text.contains(&format!("role {role}")),
                    "a 403 names the missing permission: {text}"
                );
            }
            bodies.push(reply.text());
        }
    }
    // The node's status reads as the metrics do (outside the table: the
    // table's unauthenticated calls already reach the refusal limit).
    for (token, want) in [(&r.auditor, 200), (&r.deployer, 403), (&r.admin, 200)] {
        let reply = r.node.admin_request("GET", "/v1/status", Some(token), b"");
        assert_eq!(reply.status, want, "GET /v1/status: {reply:?}");
        if want == 200 {
            let status: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
            assert_eq!(status["running"], true, "{status}");
            assert!(status["fleet"].is_null(), "{status}");
        }
    }
    for body in &bodies {
        assert!(
            !body.contains("matrix-secret-value") && !body.contains(&b64(VALUE)),
            "no reply carries a secret value: {body}"
        );
    }
    // Every admin request above was recorded; refusals too, those without a
    // valid token coalesced into one record per source and minute.
    let audit = r.node.ok(&["audit", "--json", "--limit", "100000"]);
    let entries: Vec<serde_json::Value> = serde_json::from_str(&audit).unwrap();
    let count = |outcome: &str| {
        entries
            .iter()
            .filter(|e| e["kind"] == "admin" && e["outcome"] == outcome)
            .count()
    };
    let denied_403 = table
        .iter()
        .flat_map(|(_, path, _, e)| e.iter().map(move |s| (*path, *s)))
        .filter(|(path, s)| *s == 403 && *path != "/metrics")
        .count();
    // And the deployer's status read, and the unauthenticated refusals'
    // one coalesced record.
    assert_eq!(count("denied"), denied_403 + 2);
    assert!(!audit.contains("matrix-secret-value"));
    r.node.ok(&["audit", "verify"]);
}

#[test]
fn scoped_deployer_tokens_reach_only_their_functions() {
    let r = node_with_roles();
    let node = &r.node;
    node.put_secret("pay", b"payment-key-value-31c0");
    let outside = node.token(&[
        "--role",
        "deployer",
        "--functions",
        "checkout-*",
        "--name",
        "outside-team",
    ]);
    let ours = node.write_manifest(
        "checkout-api",
        artifacts::PROBE,
        "/checkout",
        "[bindings.KEY]\nallow = [\"hmac\"]\n",
    );
    let theirs = node.write_manifest("billing", artifacts::PROBE, "/billing", "");
    // An admin deploys billing and grants checkout-api's binding later.
    let run = |token: &str, args: &[&str]| node.remote_command(token).args(args).output().unwrap();
    let out = run(&r.admin, &["deploy", theirs.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = run(&outside, &["deploy", ours.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(
        &r.admin,
        &[
            "grant",
            "checkout-api",
            "KEY",
            "--secret",
            "pay",
            "--allow",
            "hmac",
        ],
    );
    assert!(out.status.success());

    for args in [
        vec!["deploy", theirs.to_str().unwrap()],
        vec!["undeploy", "billing"],
    ] {
        let out = run(&outside, &args);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("outside-team") && err.contains("checkout-*") && err.contains("billing"),
            "{args:?}: {err}"
        );
    }
    let listing = run(&outside, &["functions", "--json"]);
    let listing: Vec<serde_json::Value> = serde_json::from_slice(&listing.stdout).unwrap();
    let names: Vec<&str> = listing
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["checkout-api"],
        "a scoped deployer sees only its functions"
    );
    let state = &listing[0]["binding_states"][0]["state"];
    assert_eq!(state["state"], "granted");
    assert_eq!(
        state["secret"], "(hidden)",
        "a deployer learns the state, not the secret"
    );
    for args in [
        vec!["secret", "list"],
        vec!["grants"],
        vec!["token", "list"],
    ] {
        let out = run(&outside, &args);
        assert!(!out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("lacks the permission"));
    }
    // billing was not replaced by the refused deploy, and is still there.
    let all = node.ok(&["functions", "--json"]);
    assert!(all.contains("\"billing\"") && all.contains("\"checkout-api\""));
    let out = run(&r.admin, &["undeploy", "checkout-api"]);
    assert!(out.status.success());
}

#[test]
fn expired_and_revoked_tokens_are_refused() {
    let r = node_with_roles();
    let node = &r.node;
    let short = node.token(&["--role", "auditor", "--expires", "2s", "--name", "short"]);
    let revoked = node.token(&["--role", "auditor", "--name", "gone"]);
    for token in [&short, &revoked] {
        assert_eq!(
            node.admin_request("GET", "/v1/secrets", Some(token), b"")
                .status,
            200
        );
    }
    let out = node
        .remote_command(&r.admin)
        .args(["token", "revoke", "gone"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply = node.admin_request("GET", "/v1/secrets", Some(&revoked), b"");
    assert_eq!(reply.status, 401);
    assert!(
        reply.text().contains("token `gone` was revoked"),
        "{reply:?}"
    );

    std::thread::sleep(Duration::from_millis(2_500));
    let reply = node.admin_request("GET", "/v1/secrets", Some(&short), b"");
    assert_eq!(reply.status, 401);
    assert!(reply.text().contains("token `short` expired"), "{reply:?}");

    let list = node.ok(&["token", "list"]);
    let line = |name: &str| {
        list.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} in {list}"))
            .to_owned()
    };
    assert!(line("short").contains("expired"), "{list}");
    assert!(line("gone").contains("revoked"), "{list}");
    assert!(line("root").ends_with("active"), "{list}");
    // The database keeps hashes only: no token text in any file.
    for (path, bytes) in node.data_files() {
        for token in [&r.admin, &r.deployer, &short] {
            // kh_<16 hex>_<secret>
            let secret_part = &token["kh_0123456789abcdef_".len()..];
            assert!(
                !bytes
                    .windows(secret_part.len())
                    .any(|w| w == secret_part.as_bytes()),
                "{} holds a token",
                path.display()
            );
        }
    }
    let out = node.cli(&["token", "create", "--role", "auditor", "--functions", "x-*"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("deployer tokens only"));
}

/// Timestamps and durations differ between runs; everything else must not.
/// (Times in JSON are Unix seconds: two runs a second apart differ there.)
fn normalized(text: &[u8]) -> String {
    let re = regex::Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z|\b1\d{9}\b").unwrap();
    re.replace_all(&String::from_utf8_lossy(text), "<time>")
        .into_owned()
}

#[test]
fn the_cli_gives_the_same_results_against_the_data_directory_and_a_node() {
    let local = Node::new();
    let mut remote = Node::new();
    let token = remote.token(&["--role", "admin", "--name", "ops"]);
    remote.start_admin();
    let manifest = local.write_manifest(
        "same",
        artifacts::PROBE,
        "/same",
        "[bindings.KEY]\nallow = [\"hmac\", \"reveal\"]\n",
    );
    let manifest = manifest.to_str().unwrap();
    let script: Vec<(Vec<&str>, Option<&[u8]>)> = vec![
        (
            vec!["secret", "put", "alpha", "--max-age", "90d"],
            Some(b"first-alpha-value"),
        ),
        (vec!["secret", "put", "alpha"], Some(b"second-alpha-value")),
        (
            vec!["secret", "put", "k", "--kind", "aes-256"],
            Some(b"short"),
        ),
        (vec!["secret", "list"], None),
        (vec!["secret", "list", "--json"], None),
        (vec!["deploy", manifest], None),
        (
            vec![
                "grant",
                "same",
                "KEY",
                "--secret",
                "alpha",
                "--allow",
                "hmac,seal",
            ],
            None,
        ),
        (
            vec![
                "grant", "same", "NOPE", "--secret", "alpha", "--allow", "hmac",
            ],
            None,
        ),
        (vec!["grants"], None),
        (vec!["functions"], None),
        (
            vec!["secret", "rotate", "alpha", "--grace", "1h"],
            Some(b"third-alpha-value"),
        ),
        (vec!["secret", "versions", "alpha"], None),
        (vec!["secret", "rollback", "alpha", "--to", "1"], None),
        (vec!["secret", "dependents", "alpha", "--json"], None),
        (vec!["secret", "rm", "alpha"], None),
        (vec!["revoke", "same", "KEY"], None),
        (vec!["secret", "rm", "alpha"], None),
        (vec!["secret", "rm", "alpha"], None),
        (vec!["check"], None),
        (vec!["undeploy", "same"], None),
        (vec!["undeploy", "same"], None),
        (vec!["functions", "--json"], None),
    ];
    for (args, input) in &script {
        let run = |mut command: std::process::Command| {
            let mut child = command
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.unwrap_or(b""))
                .unwrap();
            child.wait_with_output().unwrap()
        };
        let here = run(local.command());
        let there = run(remote.remote_command(&token));
        let stderr = |o: &std::process::Output| {
            normalized(&o.stderr)
                .lines()
                .filter(|l| !l.contains("created a new master key"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(
            here.status.code(),
            there.status.code(),
            "{args:?}: {}",
            stderr(&there)
        );
        assert_eq!(
            normalized(&here.stdout),
            normalized(&there.stdout),
            "{args:?}"
        );
        assert_eq!(stderr(&here), stderr(&there), "{args:?}");
    }
    // Both trails hold the same actions with the same outcomes.
    let actions = |node: &Node| -> Vec<(String, String)> {
        let json = node.ok(&["audit", "--json", "--limit", "100000"]);
        let entries: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
        entries
            .iter()
            .filter(|e| e["kind"] == "admin" && !e["action"].as_str().unwrap().starts_with("token"))
            .filter(|e| e["action"] != "audit.read")
            .map(|e| {
                (
                    e["action"].as_str().unwrap().to_owned(),
                    e["outcome"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(actions(&local), actions(&remote));
}

#[test]
fn malformed_and_oversized_requests_change_nothing() {
    let r = node_with_roles();
    let node = &r.node;
    node.deploy_probe("keep", "/keep", "[bindings.KEY]\nallow = [\"hmac\"]\n");
    node.ok(&[
        "grant", "keep", "KEY", "--secret", "base", "--allow", "hmac",
    ]);
    let state = || {
        (
            node.ok(&["secret", "versions", "base", "--json"]),
            node.ok(&["grants", "--json"]),
            node.ok(&["functions", "--json"]),
            node.ok(&["token", "list", "--json"]),
        )
    };
    let before = state();
    let big = format!(r#"{{"value":"{}"}}"#, "A".repeat(400 * 1024));
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("PUT", "/v1/secrets/base", b"{not json".to_vec(), 400, "invalid request body"),
        ("PUT", "/v1/secrets/base", br#"{"value":"AAAA","colour":"red"}"#.to_vec(), 400, "unknown field `colour`"),
        ("PUT", "/v1/secrets/base", br#"{"kind":"opaque"}"#.to_vec(), 400, "missing field `value`"),
        ("PUT", "/v1/secrets/base", br#"{"value":"not base64!"}"#.to_vec(), 400, "base64"),
        ("PUT", "/v1/secrets/base", br#"{"value":"AAAA","kind":"rot13"}"#.to_vec(), 400, "unknown key kind"),
        ("PUT", "/v1/secrets/base", big.into_bytes(), 413, "limit"),
        ("PUT", "/v1/secrets/bad%2Fname", br#"{"value":"AAAA"}"#.to_vec(), 400, "secret name"),
        ("POST", "/v1/secrets/base/rotate", br#"{"value":"AAAA","grace_secs":-5}"#.to_vec(), 400, "grace_secs"),
        ("PUT", "/v1/grants/keep/KEY", br#"{"secret":"base","allow":["fly"]}"#.to_vec(), 400, "unknown operation `fly`"),
        ("PUT", "/v1/grants/keep/KEY", br#"{"secret":"base","allow":["inject"]}"#.to_vec(), 400, "needs --egress"),
        ("POST", "/v1/functions", br#"{"manifest":"name = \"keep\"","component_base64":"%%%"}"#.to_vec(), 400, "component_base64"),
        ("POST", "/v1/functions", serde_json::to_vec(&serde_json::json!({"manifest": "name = \"keep\"\ncomponent = \"x\"\nroutes = [\"/other\"]\n", "component_base64": b64(b"not wasm")})).unwrap(), 422, "not a WebAssembly file"),
        ("POST", "/v1/functions", br#"{"manifest":"component = \"x\"","component_base64":"AAAA"}"#.to_vec(), 400, "missing field `name`"),
        ("POST", "/v1/tokens", br#"{"role":"root"}"#.to_vec(), 400, "unknown variant `root`"),
        ("GET", "/v1/audit?colour=red", vec![], 400, "unknown query parameter `colour`"),
        ("PATCH", "/v1/secrets", b"{}".to_vec(), 405, "not allowed"),
        ("GET", "/v1/nothing", vec![], 404, "no such admin endpoint"),
    ];
    for (method, path, body, status, needle) in &cases {
        let reply = node.admin_request(method, path, Some(&r.admin), body);
        assert_eq!(reply.status, *status, "{method} {path}: {reply:?}");
        assert!(reply.text().contains(needle), "{method} {path}: {reply:?}");
        let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(json["error"]["status"], *status);
    }
    assert_eq!(state(), before, "no refused request changed the store");
    node.ok(&["audit", "verify"]);
}

/// Issue 23 §1. A deployer limited to `checkout-*` tried to take `billing`'s
/// traffic by deploying `checkout-x` at a route inside `/billing` (or at
/// `/`, above it): on the old main both deploys succeeded and `/billing/pay`
/// went to the attacker. Now the route belongs to `billing`, the refusal
/// names both functions, and a route-scoped token stays on its own paths.
#[test]
fn a_scoped_deployer_cannot_claim_routes_inside_or_above_another_functions() {
    let r = node_with_roles();
    let node = &r.node;
    let outside = node.token(&[
        "--role",
        "deployer",
        "--functions",
        "checkout-*",
        "--name",
        "outside-team",
    ]);
    let run = |token: &str, args: &[&str]| node.remote_command(token).args(args).output().unwrap();
    let billing = node.write_manifest("billing", artifacts::PROBE, "/billing", "");
    let out = run(&r.admin, &["deploy", billing.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    for (route, word) in [("/billing/pay", "inside"), ("/", "above")] {
        let takeover = node.write_manifest("checkout-x", artifacts::PROBE, route, "");
        let out = run(&outside, &["deploy", takeover.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{route}: deployed");
        assert!(
            err.contains("outside-team")
                && err.contains("`checkout-x`")
                && err.contains("`billing`")
                && err.contains(&format!("route `{route}`"))
                && err.contains(word),
            "{route}: {err}"
        );
    }
    let all = node.ok(&["functions", "--json"]);
    assert!(!all.contains("checkout-x"), "{all}");
    // Its refusals are in the audit trail, as refused deploys.
    let trail = node.ok(&["audit", "--json"]);
    assert!(trail.matches("may not deploy").count() >= 2, "{trail}");

    // Next to it, or with a caller that may deploy billing too, is fine.
    let beside = node.write_manifest("checkout-x", artifacts::PROBE, "/checkout", "");
    let out = run(&outside, &["deploy", beside.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nested = node.write_manifest("billing-refunds", artifacts::PROBE, "/billing/refunds", "");
    let out = run(&r.deployer, &["deploy", nested.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A token limited to /checkout/* claims nothing else, whatever the name.
    let paths = node.token(&[
        "--role",
        "deployer",
        "--routes",
        "/checkout/*",
        "--name",
        "paths-only",
    ]);
    let listed = node.ok(&["token", "list"]);
    assert!(listed.contains("/checkout/*"), "{listed}");
    let inside = node.write_manifest("checkout-v2", artifacts::PROBE, "/checkout/v2", "");
    let out = run(&paths, &["deploy", inside.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outside_paths = node.write_manifest("shop", artifacts::PROBE, "/shop", "");
    let out = run(&paths, &["deploy", outside_paths.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("paths-only") && err.contains("/checkout/*") && err.contains("`/shop`"),
        "{err}"
    );
    // Nor does a name it may use let it take another function's place.
    let hijack = node.write_manifest("billing", artifacts::PROBE, "/checkout/x", "");
    let out = run(&paths, &["deploy", hijack.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("may not replace function `billing`"), "{err}");
    let out = run(&paths, &["undeploy", "billing"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("may not undeploy function `billing`"));
    assert!(node.ok(&["functions"]).contains("/billing"));
    let out = node.cli(&["token", "create", "--role", "admin", "--routes", "/x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("deployer tokens only"));
    let out = node.cli(&["token", "create", "--role", "deployer", "--routes", "x/*"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("route pattern `x/*` is invalid"));
}

/// The probe's component with a custom section appended: the same code
/// under another SHA-256, as a redeploy of changed code looks.
fn probe_variant(tag: &str) -> Vec<u8> {
    let mut bytes = std::fs::read(artifacts::PROBE).unwrap();
    let name = b"keyhole-test";
    let payload_len = 1 + name.len() + tag.len();
    assert!(payload_len < 128 && name.len() < 128);
    bytes.push(0); // a custom section
    bytes.push(payload_len as u8);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(tag.as_bytes());
    bytes
}

/// Issue 23 §3. On the old main a redeploy kept every grant, so a deployer
/// (a role that may see no secret) redeployed a function whose grant
/// allowed `reveal` with other code, and that code read the value. Now a
/// grant is given to the component it was given for: new code gets none of
/// it until an operator approves it, except the operations the operator
/// let follow redeploys — never `reveal`.
#[test]
fn grants_belong_to_the_component_they_were_given_for() {
    let r = node_with_roles();
    let node = &r.node;
    node.put_secret("s", VALUE);
    let bindings = "[bindings.KEY]\nallow = [\"hmac\", \"reveal\"]\n[bindings.FOLLOW]\nallow = [\"hmac\", \"reveal\"]\n";
    let manifest = node.write_manifest("f", artifacts::PROBE, "/f", bindings);
    node.ok(&["deploy", manifest.to_str().unwrap()]);
    node.ok(&[
        "grant",
        "f",
        "KEY",
        "--secret",
        "s",
        "--allow",
        "hmac,reveal",
    ]);
    let first = node.wait_for("/f/reveal?binding=KEY", |r| r.status == 200);
    assert_eq!(first.status, 200, "{first:?}");

    // The deployer ships other code under the same name.
    let redeploy = |tag: &str| {
        let variant = node.data.path().join(format!("{tag}.wasm"));
        std::fs::write(&variant, probe_variant(tag)).unwrap();
        let manifest = node.write_manifest("f", variant.to_str().unwrap(), "/f", bindings);
        let out = node
            .remote_command(&r.deployer)
            .args(["deploy", manifest.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        use sha2::Digest as _;
        let digest = hex::encode(sha2::Sha256::digest(probe_variant(tag)));
        (String::from_utf8_lossy(&out.stdout).into_owned(), digest)
    };
    let (said, v2) = redeploy("v2");
    let refused = node.wait_for("/f/reveal?binding=KEY", |r| r.status != 200);
    assert_eq!(
        refused.status, 403,
        "the new code read the value: {refused:?}"
    );
    assert!(said.contains("keyhole approve f"), "{said}");
    assert_eq!(node.get("/f/hmac?binding=KEY").status, 403);
    let listed = node.ok(&["functions", "--json"]);
    assert!(listed.contains("awaiting-approval"), "{listed}");
    let pending = node.ok(&["grants", "--pending"]);
    assert!(
        pending.contains("KEY") && pending.contains("awaiting-approval"),
        "{pending}"
    );
    // A deployer cannot approve its own code.
    let out = node
        .remote_command(&r.deployer)
        .args(["approve", "f"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lacks the permission"));

    // The operator approves the code they reviewed, by its digest.
    let out = node.cli(&["approve", "f", "--digest", "deadbeef"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("32 to 64 hex digits"));
    let out = node.cli(&["approve", "f", "--digest", &"0".repeat(32)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&v2));
    node.ok(&["approve", "f", "--digest", &v2[..32]]);
    let back = node.wait_for("/f/reveal?binding=KEY", |r| r.status == 200);
    assert_eq!(back.status, 200, "{back:?}");
    assert!(node.ok(&["grants", "--pending"]).lines().count() <= 1);

    // A grant may let the operations that disclose nothing follow
    // redeploys; reveal never follows.
    let granted = node.ok(&[
        "grant",
        "f",
        "FOLLOW",
        "--secret",
        "s",
        "--allow",
        "hmac,reveal",
        "--follow-redeploys",
    ]);
    assert!(
        granted.contains(&format!("for component sha256 {}", &v2[..16])),
        "{granted}"
    );
    assert_eq!(
        node.wait_for("/f/reveal?binding=FOLLOW", |r| r.status == 200)
            .status,
        200
    );
    redeploy("v3");
    node.wait_for("/f/reveal?binding=KEY", |r| r.status != 200);
    for (path, status) in [
        ("/f/hmac?binding=KEY", 403),
        ("/f/reveal?binding=KEY", 403),
        ("/f/reveal?binding=FOLLOW", 403),
        ("/f/hmac?binding=FOLLOW", 200),
    ] {
        assert_eq!(node.get(path).status, status, "{path}");
    }
    let pending = node.ok(&["grants", "--pending"]);
    assert!(pending.contains("all but reveal follow"), "{pending}");
    // A grant names the code it is for; a stale digest is refused.
    let out = node.cli(&[
        "grant",
        "f",
        "KEY",
        "--secret",
        "s",
        "--allow",
        "hmac",
        "--digest",
        &v2[..32],
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is deployed with component sha256"));

    // The trail says which code each operation ran under.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let trail = node.ok(&["audit", "--function", "f", "--json"]);
        if trail.contains(&format!("\"digest\": \"{v2}\"")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{trail}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A self-signed certificate for 127.0.0.1 and its key, made by openssl in
/// `dir`: `(cert, key)`.
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("admin-cert.pem"), dir.join("admin-key.pem"));
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=keyhole-test"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        // An end-entity certificate that is its own trust anchor.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs (Debian: apt-get install openssl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// Issue 23 §6. On the old main the admin listener spoke only clear text,
/// and `--admin-allow-remote` put bearer tokens on the network unencrypted.
/// Now it serves TLS from the operator's certificate, remote binding needs
/// it, and the CLI talks https, checking the node against the CA it names.
#[test]
fn the_admin_api_speaks_tls_and_a_remote_listener_requires_it() {
    let mut node = Node::new();
    let (cert, key) = self_signed(node.data.path());
    // Remote without TLS: refused before anything listens.
    let mut child = node
        .command()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "0.0.0.0:0",
            "--admin-allow-remote",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let served = child.try_wait().unwrap().is_none();
    if served {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        !served && !out.status.success(),
        "a remote clear-text admin listener started"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--admin-allow-remote needs --admin-tls-cert"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let token = node.token(&["--role", "admin", "--name", "ops"]);
    node.spawn_admin_with(&[
        "--admin-tls-cert",
        cert.to_str().unwrap(),
        "--admin-tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(
        node.admin.starts_with("https://127.0.0.1:"),
        "{}",
        node.admin
    );
    let listed = node
        .remote_command(&token)
        .env("KEYHOLE_NODE_CA", &cert)
        .args(["token", "list"])
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(String::from_utf8_lossy(&listed.stdout).contains("ops"));
    // Without trusting that certificate, the CLI refuses the node; in clear
    // text, the node refuses the CLI.
    let untrusted = node
        .remote_command(&token)
        .args(["token", "list"])
        .output()
        .unwrap();
    assert!(!untrusted.status.success());
    let plain = node
        .remote_command(&token)
        .env("KEYHOLE_NODE", node.admin.replace("https://", "http://"))
        .args(["token", "list"])
        .output()
        .unwrap();
    assert!(!plain.status.success());
    let bad_key = node
        .command()
        .args(["serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .arg("--admin-tls-cert")
        .arg(&cert)
        .arg("--admin-tls-key")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(!bad_key.status.success());
    assert!(String::from_utf8_lossy(&bad_key.stderr).contains("cannot read a PEM private key"));
}

/// Issue 23 §6. On the old main every request with a bad token cost a
/// durable audit write, without limit: a flood of them from one address
/// filled the disk and the trail. Now one source's refusals cost one record
/// per window (the rest counted, and written as one record when the window
/// closes), and past the window's allowance they are answered 429 unread.
#[test]
fn unauthenticated_requests_are_limited_and_coalesced_per_source() {
    let mut node = Node::new();
    node.put_secret("s", b"a-secret-value-0001");
    node.start_admin_with_env(&[("KEYHOLE_TEST_REFUSAL_WINDOW_SECS", "3")]);
    let forged = Some("kh_0123456789abcdef_forged");
    let statuses: Vec<u16> = (0..150)
        .map(|_| node.admin_request("GET", "/v1/secrets", forged, b"").status)
        .collect();
    assert!(statuses[..60].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[60..].iter().all(|s| *s == 429), "{statuses:?}");
    let refused_records = |node: &Node| -> Vec<String> {
        let audit = node.ok(&["audit", "--json", "--limit", "100000"]);
        let entries: Vec<serde_json::Value> = serde_json::from_str(&audit).unwrap();
        entries
            .iter()
            .filter(|e| e["token"] == "(unauthenticated)")
            .map(|e| e["detail"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(
        refused_records(&node).len(),
        1,
        "one record for the window so far"
    );
    // The window closes: its count is written once, and the address may
    // try again.
    std::thread::sleep(Duration::from_millis(3200));
    assert_eq!(
        node.admin_request("GET", "/v1/secrets", forged, b"").status,
        401
    );
    let records = refused_records(&node);
    assert_eq!(records.len(), 3, "{records:?}");
    assert!(
        records
            .iter()
            .any(|d| d.contains("149 more refused request(s) from 127.0.0.1")),
        "{records:?}"
    );
    node.ok(&["audit", "verify"]);
}

/// An admin request with `token` whose headers promise `length` body bytes
/// that never come: the node holds it while it waits for the body.
fn hanging_admin_request(
    node: &Node,
    method: &str,
    path: &str,
    token: &str,
    length: usize,
) -> std::net::TcpStream {
    use std::io::Write;
    let addr = node.admin.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    )
    .unwrap();
    stream
}

/// The status line of the answer on `stream`, if one comes within `wait`.
fn status_within(stream: &mut std::net::TcpStream, wait: Duration) -> Option<String> {
    use std::io::Read;
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.windows(2).any(|w| w == b"\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let end = seen.windows(2).position(|w| w == b"\r\n").unwrap();
    Some(String::from_utf8_lossy(&seen[..end]).into_owned())
}

/// Issue 24 §4. On the old main any valid token could make the node wait
/// for (and buffer) a 64 MiB deploy body before its permission was
/// checked, and nothing capped the admin requests in progress: one
/// deployer token could hold the listener with requests whose bodies
/// never arrive.
#[test]
fn only_deployers_send_large_bodies_and_no_token_holds_the_admin_listener() {
    let mut node = Node::new();
    node.start_admin();
    let auditor = node.token(&["--role", "auditor", "--name", "watch"]);
    let deployer = node.token(&["--role", "deployer", "--name", "ci"]);
    let admin = node.token(&["--role", "admin", "--name", "root"]);

    // An auditor announcing a deploy-sized body is refused from the
    // headers, and so is one announcing a large body anywhere else.
    let mut large = hanging_admin_request(&node, "POST", "/v1/functions", &auditor, 60 << 20);
    let status = status_within(&mut large, Duration::from_secs(5));
    assert_eq!(
        status.as_deref(),
        Some("HTTP/1.1 403 Forbidden"),
        "an auditor's 60 MiB deploy was waited for"
    );
    let mut large = hanging_admin_request(&node, "PUT", "/v1/secrets/x", &deployer, 60 << 20);
    let status = status_within(&mut large, Duration::from_secs(5));
    assert_eq!(status.as_deref(), Some("HTTP/1.1 413 Payload Too Large"));

    // One token's requests in progress are capped: the ninth is refused at
    // once, naming the token, while its eight wait for their bodies.
    let mut held: Vec<std::net::TcpStream> = (0..8)
        .map(|_| hanging_admin_request(&node, "PUT", "/v1/grants/f/KEY", &deployer, 100))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let ninth = node.admin_request("GET", "/v1/functions", Some(&deployer), b"");
    assert_eq!(ninth.status, 503, "{}", ninth.text());
    assert!(
        ninth
            .text()
            .contains("token `ci` has 8 admin requests in progress"),
        "{}",
        ninth.text()
    );
    // Other tokens, and an operator above all, still get in.
    let other = node.admin_request("GET", "/v1/functions", Some(&auditor), b"");
    assert_eq!(other.status, 200, "{}", other.text());
    let operator = node.admin_request("GET", "/v1/secrets", Some(&admin), b"");
    assert_eq!(operator.status, 200, "{}", operator.text());

    // A slot frees when its request ends (here: the body timing out is
    // too slow to wait for, so the client goes away).
    held.truncate(7);
    let start = std::time::Instant::now();
    loop {
        let again = node.admin_request("GET", "/v1/functions", Some(&deployer), b"");
        if again.status == 200 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "a closed request kept its slot: {}",
            again.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(held);
}
