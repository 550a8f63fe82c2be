//! Tampering with the store: each stored record changed on disk, one way
//! per secret — a flipped byte in a ciphertext, its nonce or its tag, in a
//! wrapped data key or its nonce, a truncated ciphertext, two secrets'
//! records swapped, a version rolled back to an older version's ciphertext.
//! Each must be caught as an integrity failure of that secret alone: the
//! guest gets `unavailable`, the operator a clear error naming it, and every
//! other secret keeps working.

use crate::common;

use common::{Node, hmac_sha256_hex, random_secret};
use rusqlite::params;
use std::collections::BTreeSet;

/// How one secret's stored record is changed.
#[derive(Clone, Copy, Debug)]
enum Tamper {
    /// XOR `mask` into byte `at` (negative: from the end) of a column.
    Flip {
        column: &'static str,
        at: isize,
        mask: u8,
    },
    /// Drop the ciphertext's last byte.
    Truncate,
    /// Exchange the whole sealed record with the named secret's.
    SwapWith(&'static str),
    /// Replace the current version's sealed record with version 1's.
    RollBack,
}

const TAMPERED: &[(&str, Tamper)] = &[
    (
        "ct-body",
        Tamper::Flip {
            column: "ciphertext",
            at: 20,
            mask: 0x01,
        },
    ),
    (
        "ct-nonce",
        Tamper::Flip {
            column: "ciphertext",
            at: 0,
            mask: 0x80,
        },
    ),
    (
        "ct-tag",
        Tamper::Flip {
            column: "ciphertext",
            at: -1,
            mask: 0x01,
        },
    ),
    ("ct-truncated", Tamper::Truncate),
    (
        "wk-body",
        Tamper::Flip {
            column: "wrapped_key",
            at: 20,
            mask: 0x10,
        },
    ),
    (
        "wk-nonce",
        Tamper::Flip {
            column: "wrapped_key",
            at: 3,
            mask: 0x01,
        },
    ),
    ("swap-a", Tamper::SwapWith("swap-b")),
    ("rolled-back", Tamper::RollBack),
];

/// Secrets left alone, one of them with several versions.
const UNTOUCHED: &[&str] = &["ok", "ok-rotated"];

fn binding(secret: &str) -> String {
    secret.replace('-', "_").to_uppercase()
}

fn sealed(db: &rusqlite::Connection, name: &str, version: u32) -> (Vec<u8>, Vec<u8>) {
    db.query_row(
        "SELECT wrapped_key, ciphertext FROM secret_versions WHERE name = ?1 AND version = ?2",
        params![name, version],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

fn store_sealed(db: &rusqlite::Connection, name: &str, version: u32, record: &(Vec<u8>, Vec<u8>)) {
    let changed = db
        .execute(
            "UPDATE secret_versions SET wrapped_key = ?3, ciphertext = ?4 WHERE name = ?1 AND version = ?2",
            params![name, version, record.0, record.1],
        )
        .unwrap();
    assert_eq!(changed, 1);
}

fn current_version(db: &rusqlite::Connection, name: &str) -> u32 {
    db.query_row(
        "SELECT current_version FROM secrets WHERE name = ?1",
        [name],
        |r| r.get(0),
    )
    .unwrap()
}

/// Applies `tamper` to secret `name`'s current version, in place.
fn apply(db: &rusqlite::Connection, name: &str, tamper: Tamper) {
    let version = current_version(db, name);
    let mut record = sealed(db, name, version);
    match tamper {
        Tamper::Flip { column, at, mask } => {
            let bytes = if column == "ciphertext" {
                &mut record.1
            } else {
                &mut record.0
            };
            let at = if at < 0 {
                bytes.len() - at.unsigned_abs()
            } else {
                at as usize
            };
            bytes[at] ^= mask;
        }
        Tamper::Truncate => {
            record.1.pop();
        }
        Tamper::SwapWith(other) => {
            let theirs_version = current_version(db, other);
            let theirs = sealed(db, other, theirs_version);
            store_sealed(db, other, theirs_version, &record);
            record = theirs;
        }
        Tamper::RollBack => {
            assert!(version > 1);
            record = sealed(db, name, 1);
        }
    }
    store_sealed(db, name, version, &record);
}

#[test]
fn each_tampered_record_fails_alone_for_guests_and_operators() {
    let mut node = Node::new();
    let mut values = std::collections::BTreeMap::new();
    let mut names: Vec<&str> = TAMPERED.iter().map(|(name, _)| *name).collect();
    names.extend(["swap-b"]);
    names.extend(UNTOUCHED);
    for name in &names {
        let value = random_secret();
        node.put_secret(name, &value);
        values.insert(*name, value);
    }
    // Two more versions of these, so a rollback has somewhere to go back to.
    for name in ["rolled-back", "ok-rotated"] {
        for _ in 0..2 {
            let value = random_secret();
            node.put_secret(name, &value);
            values.insert(name, value);
        }
    }
    let bindings: String = names
        .iter()
        .map(|name| format!("[bindings.{}]\nallow = [\"hmac\"]\n", binding(name)))
        .collect();
    node.deploy_probe("probe", "/p", &bindings);
    for name in &names {
        node.ok(&[
            "grant",
            "probe",
            &binding(name),
            "--secret",
            name,
            "--allow",
            "hmac",
        ]);
    }
    let before = node.ok(&["check"]);
    assert!(before.contains("0 failed"), "{before}");

    {
        let db = node.db();
        for (name, tamper) in TAMPERED {
            apply(&db, name, *tamper);
        }
    }

    // The operator: `keyhole check` names exactly the tampered versions.
    let out = node.cli(&["check"]);
    assert!(!out.status.success(), "check passed a tampered store");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let named: BTreeSet<String> = stderr
        .lines()
        .filter_map(|line| line.strip_prefix("secret `"))
        .filter_map(|rest| rest.split('`').next())
        .map(str::to_owned)
        .collect();
    let mut expected: BTreeSet<String> = TAMPERED.iter().map(|(n, _)| (*n).to_owned()).collect();
    expected.insert("swap-b".to_owned());
    assert_eq!(named, expected, "{stderr}");
    assert!(
        stderr.contains(
            "failed its integrity check (tampered with, or sealed under another master key)"
        ),
        "{stderr}"
    );
    for value in values.values() {
        assert!(
            common::found_in(value, &out.stdout).is_empty()
                && common::found_in(value, &out.stderr).is_empty(),
            "a value in check's output"
        );
    }

    // The guest: `unavailable` for each tampered binding, and the right
    // HMAC for every untouched one.
    node.start();
    for name in &expected {
        let reply = node.get(&format!("/p/hmac?binding={}", binding(name)));
        assert_eq!(reply.status, 403, "{name}: {reply:?}");
        assert!(
            reply.text().contains(&format!(
                "error unavailable: binding `{}`: its secret has no usable version",
                binding(name)
            )),
            "{name}: {reply:?}"
        );
    }
    for name in UNTOUCHED {
        let reply = node.get(&format!("/p/hmac?binding={}", binding(name)));
        assert_eq!(reply.status, 200, "{name}: {reply:?}");
        assert_eq!(
            reply.text().trim(),
            hmac_sha256_hex(&values[name], b"probe"),
            "{name}"
        );
    }
    // The node says which secret is unavailable, and why.
    let logs = node.logs();
    for name in &expected {
        assert!(
            logs.lines().any(|l| l.contains("secret is unavailable")
                && l.contains(&format!("secret `{name}` version"))
                && l.contains("failed its integrity check")),
            "no log line for {name}:\n{logs}"
        );
    }
    for value in values.values() {
        assert!(
            common::found_in(value, logs.as_bytes()).is_empty(),
            "a value in the log"
        );
    }
}

#[test]
fn a_new_version_or_the_original_bytes_repair_a_tampered_secret() {
    let mut node = Node::new();
    let value = random_secret();
    node.put_secret("k", &value);
    node.granted_probe("probe", "/p", "k", "hmac", "");
    let original = {
        let db = node.db();
        let original = sealed(&db, "k", 1);
        apply(
            &db,
            "k",
            Tamper::Flip {
                column: "ciphertext",
                at: 15,
                mask: 4,
            },
        );
        original
    };
    node.start();
    assert_eq!(node.get("/p/hmac?binding=KEY").status, 403);
    // The operator's way out: put a new version; the binding serves it.
    let fresh = random_secret();
    node.put_secret("k", &fresh);
    let reply = node.wait_for("/p/hmac?binding=KEY", |r| r.status == 200);
    assert_eq!(reply.text().trim(), hmac_sha256_hex(&fresh, b"probe"));
    // And putting the original bytes back makes version 1 whole again.
    let db = node.db();
    store_sealed(&db, "k", 1, &original);
    drop(db);
    let report = node.ok(&["check"]);
    assert!(report.contains("2 ok, 0 failed"), "{report}");
}

/// A node's data directory with state worth attacking: secret `s` rotated
/// to version 2 (version 1 retired), function `f` granted `hmac` on it, and
/// an admin token.
fn attackable() -> Node {
    let node = Node::new();
    node.put_secret("s", b"first-value-0001");
    node.put_secret("s", b"second-value-0002");
    node.granted_probe("f", "/f", "s", "hmac", "");
    node.token(&["--role", "admin", "--name", "ops"]);
    node
}

/// `keyhole check`'s verdict: whether it passed, and what it said.
fn check(node: &Node) -> (bool, String) {
    let out = node.cli(&["check"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// Issue 23 §5. On the old main only ciphertexts were authenticated: with
/// write access to the database but not the master key, an attacker rolled
/// a rotated-out value back in, gave a function `reveal`, extended a grace
/// window for ever, added an admin token with a hash of their choosing, put
/// back a revoked grant, or restored an older copy of the whole file — and
/// `keyhole check` passed each time. Now each is named by `check`, and the
/// store refuses to be served from or written to until an operator looks.
#[test]
fn state_outside_the_ciphertexts_cannot_be_forged_or_rolled_back() {
    use sha2::Digest as _;
    let known_hash = sha2::Sha256::digest(b"attacker-chosen-secret").to_vec();
    let row_attacks: &[(&str, &str, &str)] = &[
        (
            "rolled-back value",
            "UPDATE secrets SET current_version = 1 WHERE name = 's'",
            "secrets/s",
        ),
        (
            "reveal grant",
            "UPDATE grants SET allow = 'hmac,reveal' WHERE function = 'f'",
            "grants/f/KEY",
        ),
        (
            "endless grace",
            "UPDATE secret_versions SET grace_until = 4102444800 WHERE name = 's' AND version = 1",
            "secret_versions/s/1",
        ),
        ("forged token", "", "tokens/00112233aabbccdd"),
    ];
    for (attack, sql, row) in row_attacks {
        let node = attackable();
        let db = node.db();
        if sql.is_empty() {
            db.execute(
                "INSERT INTO tokens (id, name, role, functions, routes, secret_hash, created_at, created_by)
                 VALUES ('00112233aabbccdd', 'mallory', 'admin', '[]', '[]', ?1, 1, 'local')",
                params![known_hash],
            )
            .unwrap();
        } else {
            db.execute_batch(sql).unwrap();
        }
        drop(db);
        let (ok, said) = check(&node);
        assert!(!ok, "{attack}: check passed: {said}");
        assert!(
            said.contains(&format!("row `{row}` failed its authentication")),
            "{attack}: {said}"
        );
        // Nothing is served from it, and nothing written over it.
        let out = node
            .command()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{attack}: served");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("changed outside keyhole"),
            "{attack}"
        );
        let out = node.cli(&["revoke", "f", "KEY"]);
        assert!(!out.status.success(), "{attack}: wrote over it");
    }

    // Code planted in the file: a trigger that would change a grant inside
    // Keyhole's own next write, after verification and before sealing.
    // And the seal itself removed, so that the next open would adopt a
    // forged grant as its first seal.
    for (attack, sql, said_what) in [
        (
            "planted trigger",
            "CREATE TRIGGER evil AFTER INSERT ON audit BEGIN
               UPDATE grants SET allow = 'hmac,reveal', mac = NULL; END;",
            "the schema (tables, triggers) was changed",
        ),
        (
            "seal removed",
            "DELETE FROM meta WHERE key IN ('generation', 'state');
             UPDATE grants SET allow = 'hmac,reveal', mac = NULL;",
            "sealed state is missing",
        ),
    ] {
        let node = attackable();
        node.db().execute_batch(sql).unwrap();
        let out = node.cli(&["revoke", "f", "KEY"]);
        assert!(!out.status.success(), "{attack}: wrote");
        let (ok, said) = check(&node);
        assert!(!ok && said.contains(said_what), "{attack}: {said}");
        let allow: String = node
            .db()
            .query_row("SELECT allow FROM grants WHERE function = 'f'", [], |r| {
                r.get(0)
            })
            .unwrap();
        // Whatever the trigger changed (it may fire when the refusal itself
        // is recorded) is never sealed as Keyhole's own.
        if allow != "hmac" {
            assert!(
                said.contains("row `grants/f/KEY` failed"),
                "{attack}: {said}"
            );
        }
    }

    // A revoked grant put back as it was, its own MAC intact: the set of
    // rows is not the one Keyhole last wrote.
    let node = attackable();
    let db = node.db();
    let saved: Vec<rusqlite::types::Value> = db
        .query_row("SELECT * FROM grants WHERE function = 'f'", [], |r| {
            (0..r.as_ref().column_count()).map(|i| r.get(i)).collect()
        })
        .unwrap();
    drop(db);
    node.ok(&["revoke", "f", "KEY"]);
    let db = node.db();
    let marks = vec!["?"; saved.len()].join(", ");
    db.execute(
        &format!("INSERT INTO grants VALUES ({marks})"),
        rusqlite::params_from_iter(saved.iter()),
    )
    .unwrap();
    drop(db);
    let (ok, said) = check(&node);
    assert!(!ok && said.contains("replaced by older copies"), "{said}");

    // The whole file replaced by an older copy of itself: behind its anchor.
    let node = attackable();
    let db_path = node.data.path().join("keyhole.db");
    node.db()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    let old = std::fs::read(&db_path).unwrap();
    node.ok(&["revoke", "f", "KEY"]);
    node.db()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    std::fs::write(&db_path, old).unwrap();
    let (ok, said) = check(&node);
    assert!(
        !ok && said.contains("rolled back to an older copy"),
        "{said}"
    );
    assert_eq!(
        node.ok(&["grants"]).matches("KEY").count(),
        1,
        "the old copy has the grant"
    );
}
