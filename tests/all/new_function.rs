//! `keyhole new`: a new function's folder builds (with cargo, or with npm
//! for JavaScript) and serves on a node unchanged.

use crate::common;

use common::{Node, hmac_sha256_hex, random_secret};
use std::process::Command;

/// `cargo` as the tests' own, without the settings meant for the outer
/// build (the new project is a workspace of its own, for wasm32-wasip2).
fn cargo_in(dir: &std::path::Path) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(dir);
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        command.env_remove(var);
    }
    command
}

#[test]
fn keyhole_new_makes_a_rust_function_that_builds_and_serves_unchanged() {
    let work = tempfile::tempdir().unwrap();
    let mut node = Node::new();
    let new = |args: &[&str]| {
        node.command()
            .current_dir(work.path())
            .arg("new")
            .args(args)
            .output()
            .unwrap()
    };
    let entries = || std::fs::read_dir(work.path()).unwrap().count();

    // Refused with a clear error, writing nothing.
    let out = new(&["bad name!"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot name a function") && err.contains("nothing was written"),
        "{err}"
    );
    assert_eq!(entries(), 0, "a refused name wrote something");

    let out = new(&["demo"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let demo = work.path().join("demo");
    let again = new(&["demo"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    assert_eq!(entries(), 1, "only demo/, no leftovers");
    let gitignore = std::fs::read_to_string(demo.join(".gitignore")).unwrap();
    assert!(
        gitignore.contains("/.keyhole/") && gitignore.contains("*.secret"),
        "{gitignore}"
    );
    assert!(
        std::fs::read_to_string(demo.join("README.md"))
            .unwrap()
            .contains("keyhole deploy")
    );

    // Builds unchanged, with nothing but cargo and the wasm target.
    let built = cargo_in(&demo)
        .args(["build", "--release"])
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );

    // Serves unchanged: its own manifest, a grant, a request.
    node.ok(&["deploy", demo.join("keyhole.toml").to_str().unwrap()]);
    let key = random_secret();
    node.put_secret("signing-key", &key);
    node.ok(&[
        "grant",
        "demo",
        "SIGNING_KEY",
        "--secret",
        "signing-key",
        "--allow",
        "hmac",
    ]);
    node.start();
    let reply = node.get("/demo");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.text(),
        format!(
            "hello from demo: hmac-sha256(/demo) = {}\n",
            hmac_sha256_hex(&key, b"/demo")
        )
    );
}

#[test]
fn keyhole_new_makes_a_js_function_that_builds_and_serves_unchanged() {
    let work = tempfile::tempdir().unwrap();
    let mut node = Node::new();
    // Made, and installed with Node.js and npm alone.
    let demo = common::new_js_project(work.path(), "demo-js");
    let gitignore = std::fs::read_to_string(demo.join(".gitignore")).unwrap();
    for ignored in ["/.keyhole/", "*.secret", "/node_modules", "/dist"] {
        assert!(gitignore.contains(ignored), "{gitignore}");
    }

    // Builds unchanged.
    common::npm(&demo, &["run", "build"]);

    node.ok(&["deploy", demo.join("keyhole.toml").to_str().unwrap()]);
    let key = random_secret();
    node.put_secret("signing-key", &key);
    node.start();
    let refused = node.get("/demo-js");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(refused.text().starts_with("not-granted"), "{refused:?}");
    node.ok(&[
        "grant",
        "demo-js",
        "SIGNING_KEY",
        "--secret",
        "signing-key",
        "--allow",
        "hmac",
    ]);
    let reply = node.wait_for("/demo-js?x=1", |r| r.status == 200);
    assert_eq!(
        reply.text(),
        format!(
            "hello from demo-js: hmac-sha256(/demo-js?x=1) = {}\n",
            hmac_sha256_hex(&key, b"/demo-js?x=1")
        )
    );
}
