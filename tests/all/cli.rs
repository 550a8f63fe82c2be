//! The `keyhole` command line: clear errors, non-zero exits, nothing
//! written on bad input, and no secret bytes anywhere they should not be.

use crate::common;

use common::{Node, artifacts, found_in, random_secret};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn secret_values_come_from_stdin_and_are_never_listed() {
    let node = Node::new();
    let out = node.cli_stdin(&["secret", "put", "api-token"], b"tok-1234567890-abcdef\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("stored secret `api-token` version 1 (21 bytes, opaque)"),
        "{}",
        stdout(&out)
    );

    // There is no flag that takes a value on the command line.
    let out = node.cli(&["secret", "put", "api-token", "--value", "tok-oops"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unexpected argument '--value'"),
        "{}",
        stderr(&out)
    );

    let list = node.ok(&["secret", "list"]);
    assert!(
        list.contains("api-token") && !list.contains("tok-1234567890"),
        "{list}"
    );
    let json = node.ok(&["secret", "list", "--json"]);
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed[0]["name"], "api-token");
    assert_eq!(parsed[0]["current_version"], 1);
    assert!(!json.contains("tok-1234567890"));

    let empty = node.cli_stdin(&["secret", "put", "empty"], b"");
    assert!(
        !empty.status.success() && stderr(&empty).contains("empty"),
        "{}",
        stderr(&empty)
    );
}

#[test]
fn the_store_file_holds_no_plaintext() {
    let node = Node::new();
    let secrets: Vec<Vec<u8>> = (0..5).map(|_| random_secret()).collect();
    for (i, value) in secrets.iter().enumerate() {
        node.put_secret(&format!("s{i}"), value);
        node.put_secret(&format!("s{i}"), value); // a second version too
    }
    node.ok(&["deploy", artifacts::HELLO_SECRET_MANIFEST]);
    node.ok(&[
        "grant",
        "hello-secret",
        "GREETING_KEY",
        "--secret",
        "s0",
        "--allow",
        "hmac",
    ]);
    let files = node.data_files();
    assert!(files.iter().any(|(p, _)| p.ends_with("keyhole.db")));
    for (path, bytes) in &files {
        for value in &secrets {
            assert_eq!(
                found_in(value, bytes),
                Vec::<String>::new(),
                "{}",
                path.display()
            );
        }
    }
}

#[test]
fn malformed_manifests_are_refused_with_the_line_and_nothing_is_written() {
    let node = Node::new();
    let probe = artifacts::PROBE;
    let cases: &[(&str, &str)] = &[
        (
            "routes = [\"/x\"]\nname = \"m\"\ncomponent = \"x.wasm\"\nsize = 3\n",
            "line 4",
        ),
        (
            "name = \"m\"\ncomponent = \"x.wasm\"\nroutes = [\"x\"]\n",
            "must start with `/`",
        ),
        (
            "name = \"m\"\ncomponent = \"x.wasm\"\nroutes = [\"/x\"]\n[bindings.K]\nallow = [\"fly\"]\n",
            "unknown operation `fly`",
        ),
        (
            "name = \"m\"\ncomponent = \"x.wasm\"\nroutes = [\"/x\"\n",
            "line",
        ),
        (
            "name = \"m\"\nroutes = [\"/x\"]\n",
            "missing field `component`",
        ),
        (
            "name = \"m\"\ncomponent = \"missing.wasm\"\nroutes = [\"/x\"]\n",
            "cannot read component",
        ),
    ];
    for (text, expected) in cases {
        let path = node.data.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = node.cli(&["deploy", path.to_str().unwrap()]);
        assert!(!out.status.success(), "{text}");
        let err = stderr(&out);
        assert!(err.starts_with("error: "), "{err}");
        assert!(err.contains(expected), "expected {expected:?} in {err}");
    }
    assert!(
        !node.data.path().join("keyhole.db").exists(),
        "a refused deploy created the store"
    );

    // A component for the wrong world, and files that are not components.
    node.ok(&["deploy", artifacts::HELLO_SECRET_MANIFEST]);
    let not_wasm = node.data.path().join("not.wasm");
    std::fs::write(&not_wasm, b"plain text").unwrap();
    let core_module = node.data.path().join("core.wasm");
    std::fs::write(&core_module, b"\0asm\x01\0\0\0").unwrap();
    for (component, expected) in [
        (not_wasm.to_str().unwrap(), "not a WebAssembly file"),
        (
            core_module.to_str().unwrap(),
            "a core WebAssembly module, not a component",
        ),
    ] {
        let path = node.write_manifest("other", component, "/other", "");
        let out = node.cli(&["deploy", path.to_str().unwrap()]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(expected), "{}", stderr(&out));
    }
    // Components that are not for the function world: one importing an
    // interface the node does not provide, one exporting no HTTP handler.
    let foreign = node.data.path().join("foreign.wasm");
    std::fs::write(
        &foreign,
        wat::parse_str(
            "(component (import \"acme:vault/keys@1.0.0\" (instance (export \"get\" (func)))))",
        )
        .unwrap(),
    )
    .unwrap();
    let inert = node.data.path().join("inert.wasm");
    std::fs::write(&inert, wat::parse_str("(component)").unwrap()).unwrap();
    for (component, expected) in [
        (foreign.to_str().unwrap(), "acme:vault/keys@1.0.0"),
        (inert.to_str().unwrap(), "wasi:http/incoming-handler"),
    ] {
        let path = node.write_manifest("other", component, "/other", "");
        let out = node.cli(&["deploy", path.to_str().unwrap()]);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(err.contains("does not fit what a node runs"), "{err}");
        assert!(err.contains(expected), "expected {expected:?} in {err}");
    }
    let missing = node.cli(&["deploy", "/nonexistent/keyhole.toml"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("cannot read manifest /nonexistent/keyhole.toml"),
        "{}",
        stderr(&missing)
    );

    let functions = node.ok(&["functions"]);
    assert!(
        functions.contains("hello-secret") && !functions.contains("other"),
        "{functions}"
    );

    // A route another function serves.
    let path = node.write_manifest("thief", probe, "/hello", "");
    let out = node.cli(&["deploy", path.to_str().unwrap()]);
    assert!(
        stderr(&out).contains("route `/hello` is already served by function `hello-secret`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_grants_are_refused_and_change_nothing() {
    let node = Node::new();
    node.put_secret("k", b"value");
    node.ok(&["deploy", artifacts::HELLO_SECRET_MANIFEST]);
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "grant",
                "hello-secret",
                "GREETING_KEY",
                "--secret",
                "nope",
                "--allow",
                "hmac",
            ],
            "no secret named `nope`",
        ),
        (
            &[
                "grant",
                "ghost",
                "GREETING_KEY",
                "--secret",
                "k",
                "--allow",
                "hmac",
            ],
            "no function named `ghost`",
        ),
        (
            &[
                "grant",
                "hello-secret",
                "OTHER",
                "--secret",
                "k",
                "--allow",
                "hmac",
            ],
            "does not request binding `OTHER`",
        ),
        (
            &[
                "grant",
                "hello-secret",
                "GREETING_KEY",
                "--secret",
                "k",
                "--allow",
                "encrypt",
            ],
            "unknown operation `encrypt`",
        ),
        (
            &["grant", "hello-secret", "GREETING_KEY", "--secret", "k"],
            "--allow",
        ),
        (
            &["revoke", "hello-secret", "GREETING_KEY"],
            "has no grant for binding",
        ),
        (&["secret", "rm", "nope"], "no secret named `nope`"),
        (&["undeploy", "ghost"], "no function named `ghost`"),
        (&["frobnicate"], "unrecognized subcommand"),
    ];
    for (args, expected) in cases {
        let out = node.cli(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: expected {expected:?} in {}",
            stderr(&out)
        );
    }
    assert_eq!(
        node.ok(&["grants"]).lines().count(),
        1,
        "only the header: no grant was written"
    );
}

#[test]
fn grants_and_functions_list_what_was_decided() {
    let node = Node::new();
    node.put_secret("k", b"value");
    node.ok(&["deploy", artifacts::HELLO_SECRET_MANIFEST]);
    assert!(node.ok(&["functions"]).contains("GREETING_KEY:pending"));
    let granted = node.ok(&[
        "grant",
        "hello-secret",
        "GREETING_KEY",
        "--secret",
        "k",
        "--allow",
        "hmac,reveal",
    ]);
    assert!(granted.contains("[reveal] stays unused"), "{granted}");
    assert!(node.ok(&["functions"]).contains("GREETING_KEY:granted"));
    let json: serde_json::Value =
        serde_json::from_str(&node.ok(&["grants", "hello-secret", "--json"])).unwrap();
    assert_eq!(json[0]["secret"], "k");
    assert_eq!(json[0]["allow"], serde_json::json!(["hmac", "reveal"]));
    let undeployed = node.ok(&["undeploy", "hello-secret"]);
    assert!(undeployed.contains("removed its 1 grant"), "{undeployed}");
}

#[test]
fn a_wrong_or_missing_master_key_is_refused_before_anything_is_read() {
    let node = Node::new();
    node.put_secret("k", b"value");
    let wrong = node.cli_with_key(
        &["secret", "list"],
        Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
    );
    assert!(!wrong.status.success());
    assert!(
        stderr(&wrong).contains("the master key does not open this store"),
        "{}",
        stderr(&wrong)
    );

    let missing = node.cli_with_key(&["secret", "list"], None);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("master key is missing"),
        "{}",
        stderr(&missing)
    );
    assert!(
        !node.data.path().join("master.key").exists(),
        "must not mint a key for an existing store"
    );
}

#[test]
fn without_an_env_key_a_private_key_file_is_created_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], input: &[u8]| {
        let mut child = std::process::Command::new(common::KEYHOLE)
            .args(args)
            .env("KEYHOLE_DATA", dir.path())
            .env_remove("KEYHOLE_MASTER_KEY")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    };
    let first = run(&["secret", "put", "a"], b"one");
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("warning: created a new master key"),
        "{}",
        stderr(&first)
    );
    let second = run(&["secret", "put", "a"], b"two");
    assert!(
        second.status.success() && !stderr(&second).contains("warning"),
        "{}",
        stderr(&second)
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("master.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let missing_dir = run(&["secret", "list"], b"");
    assert!(missing_dir.status.success());
}

#[test]
fn reading_commands_do_not_create_a_store() {
    let node = Node::new();
    let out = node.cli(&["functions"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no Keyhole store in"),
        "{}",
        stderr(&out)
    );
    assert!(!node.data.path().join("keyhole.db").exists());
}

/// Under an address-space limit (`ulimit -v`, as shared hosts and some
/// containers set), `keyhole deploy` still works: it only compiles, so it
/// reserves room for one instance (≈ 8 GiB of address space), not the
/// node's 1 000 (≈ 8 TiB). A node that cannot reserve its slots refuses to
/// start saying what to do, and doing it (`--max-instances`) serves.
#[test]
fn under_an_address_space_limit_deploy_works_and_serve_says_what_to_do() {
    const LIMIT_GIB: u64 = 16;
    let mut node = Node::new();
    // The first deploy checks the component before a store exists, the
    // second deploys into the store the first created.
    for (name, route) in [("limited", "/limited"), ("also-limited", "/also")] {
        let manifest = node.write_manifest(name, artifacts::PLAIN_HELLO, route, "");
        let out = node
            .command_with_address_limit(LIMIT_GIB, &["deploy", manifest.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }

    let refused = node
        .command_with_address_limit(LIMIT_GIB, &["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    for needed in [
        "cannot reserve address space for 1000 instances",
        "--max-instances",
        "ulimit -v",
    ] {
        assert!(
            stderr(&refused).contains(needed),
            "{needed:?} missing: {}",
            stderr(&refused)
        );
    }

    node.start_with_address_limit(LIMIT_GIB, &["--max-instances", "1"]);
    for route in ["/limited", "/also"] {
        let reply = node.get(route);
        assert_eq!(reply.status, 200, "{route}: {}", reply.text());
    }
}

/// The node runs under valgrind, which `bench/run instructions` counts a
/// request's instructions with: a secret call once faulted there, in a
/// reader of the kernel's vDSO that trusted an address valgrind does not
/// map. One slot, as valgrind cannot reserve the address space of more.
#[test]
fn under_valgrind_a_secret_call_is_served() {
    let mut node = Node::new();
    node.put_secret("greeting", &random_secret());
    node.deploy_granted(
        artifacts::HELLO_SECRET_MANIFEST,
        "hello-secret",
        "GREETING_KEY",
        "greeting",
        "hmac",
    );
    node.start_under(
        &["valgrind", "--tool=none", "--quiet"],
        &["--max-instances", "1"],
    );
    let reply = node.get("/hello");
    assert_eq!(reply.status, 200, "{}\n{}", reply.text(), node.logs());
    assert!(reply.text().contains("GREETING_KEY"), "{}", reply.text());
    assert!(node.is_running(), "{}", node.logs());
}

/// Issue 23 §6. On the old main the data directory was created 0755 and
/// the database 0644: every local user could read the sealed store (and
/// its audit trail), and a group-writable directory was used as it was.
/// Now both are the owner's alone, and a directory others may write to is
/// refused before anything is read from it.
#[test]
fn the_data_directory_is_the_owners_alone() {
    use std::os::unix::fs::PermissionsExt as _;
    let node = Node::new();
    let data = node.data.path().join("nested").join("store");
    let run = |args: &[&str]| {
        node.command()
            .env("KEYHOLE_DATA", &data)
            .args(args)
            .output()
            .unwrap()
    };
    let value = node.data.path().join("value");
    std::fs::write(&value, b"a-private-value-1234").unwrap();
    let out = run(&["secret", "put", "s", "--from-file", value.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            assert_eq!(
                mode(&path) & 0o077,
                0,
                "{} is readable by others",
                path.display()
            );
        }
    }
    // An old store left readable is narrowed; a writable one refused.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(run(&["secret", "list"]).status.success());
    assert_eq!(mode(&data), 0o700);
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    for args in [
        &["secret", "list"][..],
        &["serve", "--listen", "127.0.0.1:0"],
    ] {
        let out = run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            err.contains("writable by group or others (mode 777)") && err.contains("chmod 700"),
            "{args:?}: {err}"
        );
    }
}
