//! The operator's console (`/ui/` on the admin listener) in a real browser:
//! Debian's Chromium, headless, driven by Playwright (`playwright-core`
//! from the repository's npm workspace) through `tests/console/drive.mjs`,
//! against a real node with the examples deployed and granted.
//!
//! This side sets the node up, runs the browser, then checks from the
//! node's own store that what the page claims to have done was done (and
//! done by the token that signed in). The screenshots the run takes replace
//! `docs/console/*.png` only when every step passed, so the README shows the
//! console as it is.

use crate::common::{self, Node, artifacts};
use std::path::PathBuf;
use std::process::Command;

/// A caller-chosen name that would run script if it were parsed as HTML.
const HOSTILE: &str = "<img src=x onerror=alert(1)>";
/// A guest-chosen binding name that would, too.
const HOSTILE_BINDING: &str = "<svg onload=alert(2)>";
/// The webhook key the operator types into the rotate form.
const TYPED_KEY: &str = "a webhook key typed into the console";

/// The browser: `KEYHOLE_TEST_CHROMIUM`, or Debian's `/usr/bin/chromium`.
fn chromium() -> PathBuf {
    let path = std::env::var_os("KEYHOLE_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "the console tests need Chromium at {} (Debian: apt-get install chromium; \
         or set KEYHOLE_TEST_CHROMIUM)",
        path.display()
    );
    path
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One token per role: `ops` (admin), `watcher` (auditor), and `web-team`
/// (a deployer limited by `scope`).
struct Tokens {
    admin: String,
    auditor: String,
    deployer: String,
}

impl Tokens {
    fn create(node: &Node, scope: &[&str]) -> Self {
        let mut deployer = vec!["--role", "deployer", "--name", "web-team"];
        deployer.extend_from_slice(scope);
        Self {
            admin: node.token(&["--role", "admin", "--name", "ops"]),
            auditor: node.token(&["--role", "auditor", "--name", "watcher"]),
            deployer: node.token(&deployer),
        }
    }
}

#[test]
fn an_operator_an_auditor_and_a_deployer_use_the_console_in_chromium() {
    let browser = chromium();
    let mut node = Node::new();
    node.put_secret("greeting", b"greeting-key-for-the-console");
    node.put_secret("gh", b"webhook-key-for-the-console");
    let stale = node.cli_stdin(
        &["secret", "put", "stale-key", "--max-age", "1s"],
        b"an old value",
    );
    assert!(stale.status.success(), "{stale:?}");
    let stale_since = std::time::Instant::now();
    node.ok(&["deploy", artifacts::HELLO_SECRET_MANIFEST]);
    node.ok(&["deploy", artifacts::WEBHOOK_VERIFY_MANIFEST]);
    node.deploy_probe("probe", "/probe", "");
    node.ok(&[
        "grant",
        "hello-secret",
        "GREETING_KEY",
        "--secret",
        "greeting",
        "--allow",
        "hmac",
    ]);
    node.ok(&[
        "grant",
        "webhook-verify",
        "GITHUB_WEBHOOK",
        "--secret",
        "gh",
        "--allow",
        "hmac",
    ]);
    let Tokens {
        admin,
        auditor,
        deployer,
    } = Tokens::create(&node, &["--functions", "webhook-*"]);
    node.start_admin();
    // Overdue by whole seconds, as the node counts them.
    std::thread::sleep(
        std::time::Duration::from_millis(2_500).saturating_sub(stale_since.elapsed()),
    );

    // A use to show, and hostile names in the trail: one chosen by a guest
    // (a binding it asks for), one by a caller (a secret it tried to write).
    assert_eq!(node.get("/hello").status, 200);
    let guest = node.get(&format!(
        "/probe/hmac?binding={}",
        percent_encode(HOSTILE_BINDING)
    ));
    assert_eq!(guest.status, 403, "{guest:?}");
    let refused = node.admin_request(
        "PUT",
        &format!("/v1/secrets/{}", percent_encode(HOSTILE)),
        Some(&auditor),
        br#"{"value":"AA=="}"#,
    );
    assert_eq!(refused.status, 403, "{refused:?}");

    let root = common::repo_root();
    // Kept after a failure, for its screenshot.
    let shots = root.join("target/console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    let drive = |extra: &[(&str, &str)]| -> String {
        let mut command = Command::new("node");
        command
            .arg(root.join("tests/console/drive.mjs"))
            .current_dir(&root)
            .env("KEYHOLE_CONSOLE_URL", &node.admin)
            .env("KEYHOLE_ADMIN_TOKEN", &admin)
            .env("KEYHOLE_AUDITOR_TOKEN", &auditor)
            .env("KEYHOLE_DEPLOYER_TOKEN", &deployer)
            .env("KEYHOLE_CHROMIUM", &browser)
            .env("KEYHOLE_SCREENSHOTS", &shots)
            .env("KEYHOLE_HOSTILE", format!("{HOSTILE}\n{HOSTILE_BINDING}"))
            .env("KEYHOLE_TYPED_KEY", TYPED_KEY)
            .envs(extra.iter().copied());
        let run = command
            .output()
            .expect("running node (is Node.js installed, and `npm ci` done?)");
        let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
        println!("{stdout}");
        assert!(
            run.status.success(),
            "the browser run failed (screenshot of the failure: {}):\n{stdout}\n{}",
            shots.join("failure.png").display(),
            String::from_utf8_lossy(&run.stderr)
        );
        stdout
    };
    let stdout = drive(&[]);
    // Not even the hostile names' effect reached a dialog; the steps say so.
    assert!(stdout.contains("ok - no dialog opened"), "{stdout}");

    // What the page did, as the node recorded it: a second version with the
    // first in grace, which the function uses now that its binding was
    // revoked and granted again; each change by the token that signed in.
    let versions = node.ok(&["secret", "versions", "greeting"]);
    assert!(versions.contains("grace"), "{versions}");
    assert_eq!(
        node.get("/hello").text(),
        "hello from keyhole: binding GREETING_KEY is at version 2\n"
    );
    // The typed value arrived byte for byte: webhook-verify checks a
    // signature made with it, and the old key no longer verifies.
    let body = br#"{"action":"opened"}"#;
    for (key, status) in [
        (TYPED_KEY.as_bytes(), 200),
        (&b"webhook-key-for-the-console"[..], 401),
    ] {
        let signature = common::github_signature(key, body);
        let reply = node.post("/webhook", &[("x-hub-signature-256", &signature)], body);
        assert_eq!(reply.status, status, "{}", reply.text());
    }
    let trail = node.ok(&["audit", "--secret", "greeting"]);
    assert!(
        trail
            .lines()
            .any(|l| l.contains("secret.rotate") && l.contains("ops")),
        "{trail}"
    );
    let trail = node.ok(&["audit", "--function", "hello-secret"]);
    for action in ["grant.revoke", "grant.create"] {
        assert!(
            trail
                .lines()
                .any(|l| l.contains(action) && l.contains("ops")),
            "{action}: {trail}"
        );
    }

    // An edited record of the trail: the audit view says the chain breaks
    // there (record 2 is `secret.put gh`).
    node.db()
        .execute_batch(
            "UPDATE audit SET body = replace(body, 'secret/gh', 'secret/gx') WHERE seq = 2;",
        )
        .unwrap();
    drive(&[("KEYHOLE_EXPECT_BROKEN", "2")]);

    // The screenshots go into the docs only from a run that passed.
    let docs = root.join("docs/console");
    std::fs::create_dir_all(&docs).unwrap();
    for name in [
        "sign-in",
        "secrets",
        "rotate-preview",
        "secret",
        "functions",
        "audit",
        "audit-broken",
        "tokens",
        "node",
        "auditor",
        "deployer",
    ] {
        let file = format!("{name}.png");
        std::fs::copy(shots.join(&file), docs.join(&file))
            .unwrap_or_else(|e| panic!("screenshot {file}: {e}"));
    }
}

#[test]
fn the_console_needs_no_token_and_whoami_tells_each_token_what_it_may_do() {
    let mut node = Node::new();
    let Tokens {
        admin,
        auditor,
        deployer,
    } = Tokens::create(&node, &["--functions", "web-*", "--routes", "/web/*"]);
    node.start_admin();

    // The pages hold no data: served without a token, under the console's
    // policy; nothing but the listed files.
    let agent = Node::agent();
    let page = agent.get(format!("{}/ui/", node.admin)).call().unwrap();
    assert_eq!(page.status(), 200);
    let header = |name: &str| {
        page.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    assert!(header("content-security-policy").contains("script-src 'self';"));
    assert_eq!(header("x-frame-options"), "DENY");
    for (method, path, status) in [
        ("GET", "/ui/js/app.js", 200),
        ("GET", "/ui/secrets", 404),
        ("GET", "/ui/%2e%2e/Cargo.toml", 404),
        ("DELETE", "/ui/", 405),
    ] {
        assert_eq!(
            node.admin_request(method, path, None, b"").status,
            status,
            "{method} {path}"
        );
    }
    // The API still wants a token, and no answer of it may be cached.
    let refused = agent
        .get(format!("{}/v1/whoami", node.admin))
        .call()
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["cache-control"], "no-store");
    assert_eq!(refused.headers()["x-content-type-options"], "nosniff");

    let who = |token: &str| -> serde_json::Value {
        let reply = node.admin_request("GET", "/v1/whoami", Some(token), b"");
        assert_eq!(reply.status, 200, "{}", reply.text());
        serde_json::from_slice(&reply.body).unwrap()
    };
    let me = who(&admin);
    assert_eq!(
        (me["name"].as_str(), me["role"].as_str()),
        (Some("ops"), Some("admin"))
    );
    assert_eq!(me["permissions"].as_array().unwrap().len(), 12);
    let me = who(&auditor);
    assert_eq!(me["role"], "auditor");
    assert!(
        me["permissions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p.as_str().unwrap().ends_with(":read")),
        "{me}"
    );
    let me = who(&deployer);
    assert_eq!(
        me,
        serde_json::json!({
            "name": "web-team",
            "role": "deployer",
            "permissions": ["self:read", "functions:read", "functions:deploy"],
            "functions": ["web-*"],
            "routes": ["/web/*"],
        })
    );
    // Asking is recorded, like every admin request.
    let trail = node.ok(&["audit"]);
    assert!(
        trail
            .lines()
            .any(|l| l.contains("token.whoami") && l.contains("web-team")),
        "{trail}"
    );
}
