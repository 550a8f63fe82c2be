//! The deploy gate, end to end: `keyhole deploy` refuses a component built
//! (from source, by the tests) with credentials compiled into it, names
//! every finding and never its bytes, and deploys the examples untouched.

use crate::common;

use common::{Node, artifacts};

/// What the `leaky` test program carries, one finding kind each.
const EXPECTED_KINDS: &[&str] = &[
    "stored-secret",
    "aws-access-key",
    "github-pat",
    "github-fine-grained-pat",
    "github-oauth",
    "github-app-token",
    "github-refresh-token",
    "gitlab-pat",
    "gitlab-pipeline-trigger-token",
    "gitlab-runner-registration-token",
    "stripe-key",
    "slack-bot-token",
    "slack-user-token",
    "slack-app-token",
    "slack-webhook-url",
    "private-key",
    "jwt",
    "high-entropy-assignment",
];

/// The value `leaky` embeds, raw and encoded.
const LEAKY_STORED: &[u8] = b"leaky-stored-value-7f3a9c51";

/// The finding IDs (`KIND@OFFSET`) listed in a refusal.
fn finding_ids(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.trim_start().split_once(": "))
        .map(|(id, _)| id.to_owned())
        .filter(|id| id.contains('@'))
        .collect()
}

fn deploy_leaky(node: &Node, allow: &[String]) -> std::process::Output {
    let manifest = node.write_manifest("leaky", artifacts::LEAKY, "/leaky", "");
    let mut args = vec!["deploy".to_owned(), manifest.to_str().unwrap().to_owned()];
    for id in allow {
        args.push("--allow-finding".into());
        args.push(id.clone());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    node.cli(&args)
}

#[test]
fn a_component_with_embedded_credentials_is_refused_finding_by_finding() {
    let node = Node::new();
    node.put_secret("leaky-stored", LEAKY_STORED);
    let out = deploy_leaky(&node, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "deployed a leaky component");
    assert!(stderr.contains("nothing was deployed"), "{stderr}");

    let ids = finding_ids(&stderr);
    for kind in EXPECTED_KINDS {
        assert!(
            ids.iter().any(|id| id.starts_with(&format!("{kind}@"))),
            "no {kind} finding in:\n{stderr}"
        );
    }
    // The stored value is found raw, in hex (both cases) and in base64,
    // named by its secret and never shown.
    for encoding in ["raw)", "hex)", "base64)"] {
        assert!(
            stderr.contains(&format!(
                "stored secret `leaky-stored` (version 1, {encoding}"
            )),
            "{encoding}: {stderr}"
        );
    }
    let stored_hits = ids
        .iter()
        .filter(|id| id.starts_with("stored-secret@"))
        .count();
    assert_eq!(stored_hits, 4, "{stderr}");
    for encoding in common::encodings(LEAKY_STORED) {
        let shown = String::from_utf8_lossy(&encoding.1).into_owned();
        assert!(
            !stderr.contains(&shown),
            "the refusal shows the value ({})",
            encoding.0
        );
    }
    assert!(
        stderr.contains("data segment 0 of core module 0"),
        "{stderr}"
    );
    // Nothing was stored, not even its compiled code (which would carry the
    // embedded value into the data directory).
    assert!(!node.ok(&["functions"]).contains("leaky"));
    let compiled = node.data.path().join("compiled");
    let cached = std::fs::read_dir(&compiled).map_or(0, |d| d.count());
    assert_eq!(cached, 0, "a refused component was cached in {compiled:?}");
}

#[test]
fn reviewed_findings_can_be_allowed_one_by_one() {
    let mut node = Node::new();
    node.put_secret("leaky-stored", LEAKY_STORED);
    let refusal = deploy_leaky(&node, &[]);
    let ids = finding_ids(&String::from_utf8_lossy(&refusal.stderr));
    assert!(ids.len() >= EXPECTED_KINDS.len(), "{ids:?}");

    // All but one allowed: still refused, naming only the one left.
    let (last, rest) = ids.split_last().unwrap();
    let out = deploy_leaky(&node, rest);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(finding_ids(&stderr), vec![last.clone()], "{stderr}");

    let mut all = ids.clone();
    all.push("jwt@1".into());
    let out = deploy_leaky(&node, &all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("warning: deployed despite"), "{stderr}");
    assert!(
        stderr.contains("--allow-finding jwt@1 matched no finding"),
        "{stderr}"
    );
    node.start();
    assert_eq!(node.get("/leaky").status, 200);
}

#[test]
fn without_the_stored_secret_only_the_formats_are_reported() {
    let node = Node::new();
    let out = deploy_leaky(&node, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let ids = finding_ids(&stderr);
    assert!(
        !ids.iter().any(|id| id.starts_with("stored-secret@")),
        "{stderr}"
    );
    assert!(
        ids.iter().any(|id| id.starts_with("github-pat@")),
        "{stderr}"
    );
    // A refused deploy into a data directory with no store creates none.
    assert!(!node.data.path().join("keyhole.db").exists());
}

#[test]
fn the_examples_and_test_programs_deploy_with_no_findings() {
    let node = Node::new();
    // A store full of secrets, of every kind the examples use.
    for i in 0..20 {
        node.put_secret(&format!("random-{i}"), &common::random_secret());
    }
    node.put_secret("words", b"correct horse battery staple");
    for manifest in [
        artifacts::HELLO_SECRET_MANIFEST,
        artifacts::WEBHOOK_VERIFY_MANIFEST,
        artifacts::REVEAL_DEMO_MANIFEST,
        artifacts::API_PROXY_MANIFEST,
        artifacts::JWT_SIGN_MANIFEST,
        artifacts::SESSION_SEAL_MANIFEST,
    ] {
        let out = node.cli(&["deploy", manifest]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{manifest}: {stderr}");
        assert!(!stderr.contains("warning"), "{manifest}: {stderr}");
    }
    for (name, component) in [("probe", artifacts::PROBE), ("legacy", artifacts::LEGACY)] {
        let manifest = node.write_manifest(name, component, &format!("/{name}"), "");
        let out = node.cli(&["deploy", manifest.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `component` with a custom section `name` holding `payload` appended.
fn with_custom_section(mut component: Vec<u8>, name: &str, payload: &[u8]) -> Vec<u8> {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut body = Vec::new();
    leb128(name.len(), &mut body);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    component.push(0);
    leb128(body.len(), &mut component);
    component.extend_from_slice(&body);
    component
}

/// Issue 23 §4. On the old main a deployer could upload a component with a
/// thousand candidate PINs in one custom section and the refusal named the
/// stored secret that matched, its version and the offset of the right
/// candidate: one deploy, one answer — an oracle over every stored value,
/// including secrets that role may not even list. Now a deployer learns
/// nothing of secrets its functions are not bound to (the deploy goes on,
/// and the trail records the probe for operators), only "a stored value,
/// at this offset" for its own, and at most a few refusals per window.
#[test]
fn the_deploy_gate_is_no_oracle_for_deployers() {
    let mut node = Node::new();
    node.put_secret("pin", b"pin-code-83920417");
    node.put_secret("mine", b"my-own-secret-5521aa");
    node.deploy_probe(
        "checkout-a",
        "/checkout-a",
        "[bindings.KEY]\nallow = [\"hmac\"]\n",
    );
    node.ok(&[
        "grant",
        "checkout-a",
        "KEY",
        "--secret",
        "mine",
        "--allow",
        "hmac",
    ]);
    let deployer = node.token(&[
        "--role",
        "deployer",
        "--functions",
        "checkout-*",
        "--name",
        "outside",
    ]);
    node.start_admin();
    let probe = std::fs::read(artifacts::PROBE).unwrap();
    let deploy_as = |token: Option<&str>, name: &str, component: Vec<u8>| {
        let path = node.data.path().join(format!("{name}.wasm"));
        std::fs::write(&path, component).unwrap();
        let manifest = node.write_manifest(name, path.to_str().unwrap(), &format!("/{name}"), "");
        let mut command = match token {
            Some(token) => node.remote_command(token),
            None => node.command(),
        };
        let out = command
            .args(["deploy", manifest.to_str().unwrap()])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };

    // A thousand guesses, one of them right: the answer is the same as for
    // none, and names nothing.
    let guesses: Vec<u8> = (0..1000)
        .flat_map(|i| format!("pin-code-{}|", 83_920_000 + i).into_bytes())
        .collect();
    let (ok, said) = deploy_as(
        Some(&deployer),
        "checkout-guess",
        with_custom_section(probe.clone(), "notes", &guesses),
    );
    assert!(ok, "the gate answered the guess: {said}");
    assert!(!said.contains("pin") && !said.contains("stored"), "{said}");
    let (ok, control) = deploy_as(
        Some(&deployer),
        "checkout-control",
        with_custom_section(probe.clone(), "notes", b"pin-code-none"),
    );
    assert!(ok, "{control}");
    // Operators see the probe, in full.
    let trail = node.ok(&["audit", "--json"]);
    assert!(
        trail.contains("deploy.gate")
            && trail.contains("flagged")
            && trail.contains("stored secret `pin`"),
        "{trail}"
    );

    // Guesses shaped like credentials get the same refusal whether one of
    // them is a stored value or none is: a format finding does not vanish
    // behind a value the deployer is not told of.
    let shaped = |base: u32| -> Vec<u8> {
        (0..1000)
            .flat_map(|i| format!("key=pin-code-{}Q7zXyZ0987wvu;", base + i).into_bytes())
            .collect()
    };
    let (ok, guess) = deploy_as(
        Some(&deployer),
        "checkout-shaped",
        with_custom_section(probe.clone(), "notes", &shaped(83_920_000)),
    );
    let (ok2, control) = deploy_as(
        Some(&deployer),
        "checkout-shaped",
        with_custom_section(probe.clone(), "notes", &shaped(73_920_000)),
    );
    assert!(!ok && !ok2, "{guess}");
    assert_eq!(finding_ids(&guess), finding_ids(&control));
    assert_eq!(finding_ids(&guess).len(), 1000);

    // The value of a secret the deployer's own function is bound to is
    // refused, once: not which secret, where, or how often.
    let own = with_custom_section(
        probe.clone(),
        "notes",
        b"x:my-own-secret-5521aa;y:my-own-secret-5521aa",
    );
    let (ok, said) = deploy_as(Some(&deployer), "checkout-b", own.clone());
    assert!(!ok, "{said}");
    assert!(
        said.contains("the value of a stored secret bound to your functions"),
        "{said}"
    );
    assert!(
        !said.contains("mine") && !said.contains("version") && !said.contains("stored-secret@"),
        "{said}"
    );
    assert_eq!(said.matches("stored secret").count(), 1, "{said}");
    // An operator deploying the same is told everything.
    let (ok, said) = deploy_as(None, "checkout-b", own.clone());
    assert!(!ok);
    assert!(said.contains("stored secret `mine` (version 1"), "{said}");

    // Refusals that answer for stored values are few: the sixth in ten
    // minutes is 429, without a scan.
    let mut refusals = 1;
    let said = loop {
        let (ok, said) = deploy_as(Some(&deployer), "checkout-b", own.clone());
        assert!(!ok);
        if said.contains("try again in") {
            break said;
        }
        refusals += 1;
        assert!(refusals <= 5, "{said}");
    };
    assert_eq!(refusals, 5, "{said}");
    assert!(said.contains("outside"), "{said}");
    let trail = node.ok(&["audit", "--json"]);
    assert!(trail.matches("\"refused\"").count() >= 5, "{trail}");
}
