//! Guest stdout and stderr reach the node's log, tagged and redacted.

use crate::common;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use common::{Node, found_in};
use std::time::{Duration, Instant};

/// Waits until the node's log contains `needle`.
fn log_with(node: &Node, needle: &str) -> String {
    let start = Instant::now();
    loop {
        let logs = node.logs();
        if logs.contains(needle) {
            return logs;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no `{needle}` in the log: {logs}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every form the probe prints, as the test computes them independently.
fn printed_forms(secret: &[u8]) -> Vec<Vec<u8>> {
    let mut forms = vec![
        secret.to_vec(),
        STANDARD.encode(secret).into_bytes(),
        URL_SAFE.encode(secret).into_bytes(),
        secret
            .iter()
            .flat_map(|b| format!("%{b:02X}").into_bytes())
            .collect(),
    ];
    for prefix in [&b"x"[..], b"xy"] {
        let shifted = [prefix, secret, b"!tail"].concat();
        forms.push(STANDARD.encode(&shifted).into_bytes());
    }
    forms
}

#[test]
fn guest_output_is_logged_with_every_encoding_of_a_secret_redacted() {
    // Printable, with characters that percent- and base64-encode visibly.
    let secret = b"pa$$/w0rd+with=odd&chars?~and-more".to_vec();
    let mut node = Node::new();
    node.put_secret("db-password", &secret);
    node.granted_probe("printer", "/printer", "db-password", "reveal", "");
    node.start();

    let reply = node.get("/printer/print?binding=KEY");
    assert_eq!(reply.status, 200, "{reply:?}");
    let logs = log_with(&node, "probe printed");

    // Tagged with function, request and stream.
    let line = logs.lines().find(|l| l.contains("probe printed")).unwrap();
    assert!(line.contains("keyhole::guest"), "{line}");
    assert!(line.contains("function=printer"), "{line}");
    assert!(line.contains("request="), "{line}");
    assert!(line.contains("stream=\"stdout\""), "{line}");
    assert!(logs.contains("stream=\"stderr\""), "{logs}");

    // Every printed form, including the value split across two writes, was
    // redacted: in both streams, 11 forms each, plus the split one.
    let redactions = logs.matches("[REDACTED:KEY]").count();
    assert_eq!(redactions, 2 * 11 + 1, "{logs}");
    assert!(logs.contains("split: <[REDACTED:KEY]>"), "{logs}");
    let found = found_in(&secret, logs.as_bytes());
    assert!(found.is_empty(), "secret in the log as {found:?}: {logs}");
    for form in printed_forms(&secret) {
        let form = String::from_utf8_lossy(&form).into_owned();
        assert!(!logs.contains(&form), "`{form}` in the log");
    }
}

#[test]
fn a_panicking_guest_does_not_leak_the_value_it_held() {
    let secret = b"panic-secret-3f9a1c77e2".to_vec();
    let mut node = Node::new();
    node.put_secret("p", &secret);
    node.granted_probe("panicky", "/panicky", "p", "reveal", "");
    node.start();
    let reply = node.get("/panicky/panic?binding=KEY");
    assert_eq!(reply.status, 500, "{reply:?}");
    assert!(!reply.text().contains("panic-secret"));
    let logs = log_with(&node, "probe panics holding");
    assert!(
        logs.contains("probe panics holding [REDACTED:KEY]"),
        "{logs}"
    );
    assert!(found_in(&secret, logs.as_bytes()).is_empty(), "{logs}");
    // The node keeps serving.
    assert_eq!(node.get("/panicky/").status, 200);
}

#[test]
fn a_guest_cannot_forge_log_lines_or_flood_the_log() {
    let mut node = Node::new();
    node.put_secret("s", b"unused-value-1234");
    node.granted_probe("noisy", "/noisy", "s", "hmac", "");
    node.start();
    let reply = node.get("/noisy/noise?kib=1024");
    assert_eq!(reply.status, 200, "{reply:?}");
    let logs = log_with(&node, "of output dropped");

    // Each guest line is one tagged log line: the embedded newline starts a
    // new guest line, not a node line, and the escape is shown, not sent.
    for line in logs
        .lines()
        .filter(|l| l.contains("forged line") || l.contains("[31mred"))
    {
        assert!(
            line.contains("keyhole::guest"),
            "untagged guest text: {line}"
        );
    }
    assert!(logs.contains("\\u{1b}[31mred"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "a raw escape reached the log");
    // 1 MiB printed, at most 64 KiB logged.
    let guest_bytes: usize = logs
        .lines()
        .filter(|l| l.contains("zzzz"))
        .map(str::len)
        .sum();
    assert!(
        guest_bytes < 100 * 1024,
        "{guest_bytes} bytes of flood logged"
    );
    assert!(
        logs.contains(
            "of output dropped (at most 65536 bytes and 256 lines per stream per request)"
        )
    );
}

/// Issue 24 §3. The byte cap alone let 64 KiB of newlines become 64 k log
/// events, each a write on the worker thread that ran the request.
#[test]
fn a_guest_cannot_flood_the_log_with_empty_lines() {
    let mut node = Node::new();
    node.put_secret("s", b"unused-value-1234");
    // 65 000 writes take well under a second, but a loaded machine once
    // took past the default 10 s: the limit is not what this is about.
    node.granted_probe(
        "noisy",
        "/noisy",
        "s",
        "hmac",
        "[limits]\ntimeout-ms = 120000\n",
    );
    node.start();
    let (reply, request) = node.get_with_id("/noisy/noise?newlines=65000");
    assert_eq!(reply.status, 200, "{reply:?}");
    let logs = log_with(&node, "lines of output dropped");
    let tag = format!("request={request}");
    let guest_lines = logs
        .lines()
        .filter(|l| l.contains("keyhole::guest") && l.contains(&tag))
        .count();
    // 256 lines and the note saying how many more were dropped.
    assert!(guest_lines <= 257, "{guest_lines} guest lines logged");
    assert!(
        logs.contains("0 bytes and 64746 lines of output dropped"),
        "{}",
        &logs[logs.len().saturating_sub(2000)..]
    );
}

/// Issue 23 §6. On the old main a value that straddled the 64 KiB a stream
/// may log was cut first and redacted after: the bytes before the cut were
/// no longer a whole match, so they reached the log in clear. Now what
/// follows the cut is read just far enough to redact a value it completes.
#[test]
fn a_value_straddling_the_output_cap_is_redacted_whole() {
    let secret = b"qZ7vX2kP9wR4mT8yB3nL6cF1";
    let mut node = Node::new();
    node.put_secret("s", secret);
    node.granted_probe("cutter", "/cutter", "s", "reveal", "");
    node.start();
    for at in [5, 12, secret.len() - 1] {
        let reply = node.get(&format!("/cutter/cut?binding=KEY&at={at}"));
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    // Three requests, each cut: wait for all three notes.
    let start = Instant::now();
    let logs = loop {
        let logs = node.logs();
        if logs.matches("of output dropped").count() >= 3 {
            break logs;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{logs}");
        std::thread::sleep(Duration::from_millis(20));
    };
    // No five bytes of the value, wherever the cut fell in it.
    for window in secret.windows(5) {
        let text = String::from_utf8_lossy(window);
        assert!(
            !logs.contains(text.as_ref()),
            "`{text}` of the value reached the log"
        );
    }
    let redacted: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("keyhole::guest"))
        .map(|l| &l[l.len().saturating_sub(120)..])
        .collect();
    assert!(logs.matches("[REDACTED:KEY]").count() >= 3, "{redacted:#?}");
}

/// A component that serves `wasi:http` by trapping in a function whose
/// name (in the name section, which the guest writes) is `name`.
fn trapping_component(name: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(component
             (import "wasi:http/types@0.2.0" (instance $types
               (export "incoming-request" (type (sub resource)))
               (export "response-outparam" (type (sub resource)))))
             (alias export $types "incoming-request" (type $request))
             (alias export $types "response-outparam" (type $outparam))
             (core module $m
               (func $trap (@name {name:?}) unreachable)
               (func (export "handle") (param i32 i32) call $trap))
             (core instance $i (instantiate $m))
             (func $handle (param "request" (own $request)) (param "response-out" (own $outparam))
               (canon lift (core func $i "handle")))
             (instance $handler (export "handle" (func $handle)))
             (export "wasi:http/incoming-handler@0.2.0" (instance $handler)))"#
    ))
    .unwrap()
}

/// Issue 23 §6. On the old main a trap's message went into the node's log
/// as wasmtime wrote it, and its backtrace quotes the guest's own function
/// names: a name holding a newline forged a node log line. Now every
/// guest-influenced string the node logs has its control characters
/// escaped.
#[test]
fn a_trapping_guest_cannot_forge_log_lines_with_its_function_names() {
    let mut node = Node::new();
    let component = node.data.path().join("trapper.wasm");
    std::fs::write(
        &component,
        trapping_component("boom\nINFO keyhole_host::node::server: forged by the guest\u{1b}[31m"),
    )
    .unwrap();
    let manifest = node.write_manifest("trapper", component.to_str().unwrap(), "/trapper", "");
    node.ok(&["deploy", manifest.to_str().unwrap()]);
    node.start();
    assert_eq!(node.get("/trapper").status, 500);
    let logs = log_with(&node, "function trapped");
    assert!(
        logs.contains("boom\\nINFO keyhole_host::node::server: forged"),
        "{logs}"
    );
    assert!(
        !logs
            .lines()
            .any(|l| l.starts_with("INFO keyhole_host::node::server: forged")),
        "a forged line: {logs}"
    );
    assert!(!logs.contains('\u{1b}'), "a raw escape reached the log");
}
