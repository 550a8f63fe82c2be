//! The audit trail and metrics against a real node: every secret operation
//! recorded exactly once, `audit verify` catching each kind of tampering,
//! requests served while the trail's database is locked, and `/metrics`
//! parsed by Prometheus' own parser moving with the requests.

use crate::common;

use common::Node;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn entries(node: &Node, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["audit", "--json", "--limit", "100000"];
    all.extend_from_slice(args);
    serde_json::from_str(&node.ok(&all)).unwrap()
}

/// Function records of each request id, as (operation, outcome) pairs.
fn by_request(entries: &[serde_json::Value]) -> BTreeMap<u64, Vec<(String, String)>> {
    let mut map: BTreeMap<u64, Vec<(String, String)>> = BTreeMap::new();
    for e in entries.iter().filter(|e| e["kind"] == "function") {
        map.entry(e["request"].as_u64().unwrap())
            .or_default()
            .push((
                e["operation"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
            ));
    }
    map
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

/// Waits until the node has written the records of `ids`.
fn wait_for_records(node: &Node, function: &str, ids: &[u64]) -> Vec<serde_json::Value> {
    let start = Instant::now();
    loop {
        let found = entries(node, &["--function", function]);
        let seen = by_request(&found);
        if ids.iter().all(|id| seen.contains_key(id)) {
            return found;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "records of {} requests missing after 10 s",
            ids.iter().filter(|id| !seen.contains_key(id)).count()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A request path, its expected status, and the (operation, outcome)
/// records it must leave.
type Step = (&'static str, u16, Vec<(&'static str, &'static str)>);

#[test]
fn every_secret_operation_appears_exactly_once() {
    let mut node = Node::new();
    node.put_secret("audited", b"audited-secret-value-4b2e");
    node.granted_probe("aud", "/aud", "audited", "hmac", "");
    node.start();
    let mut expected: BTreeMap<u64, Vec<(String, String)>> = BTreeMap::new();
    let script: Vec<Step> = vec![
        (
            "/aud/hmac?binding=KEY",
            200,
            vec![("get", "allowed"), ("hmac-sha256", "allowed")],
        ),
        (
            "/aud/verify?binding=KEY",
            200,
            vec![("get", "allowed"), ("verify-hmac-sha256", "allowed")],
        ),
        (
            "/aud/reveal?binding=KEY",
            403,
            vec![("get", "allowed"), ("reveal", "denied")],
        ),
        (
            "/aud/seal?binding=KEY",
            403,
            vec![("get", "allowed"), ("seal", "denied")],
        ),
        ("/aud/hmac?binding=GUESS", 403, vec![("get", "not-granted")]),
        ("/aud/version?binding=KEY", 200, vec![("get", "allowed")]),
        ("/aud/plain", 200, vec![]),
    ];
    for round in 0..15 {
        for (path, status, ops) in &script {
            let (reply, id) = node.get_with_id(path);
            assert_eq!(reply.status, *status, "round {round} {path}: {reply:?}");
            assert!(
                expected.insert(id, pairs(ops)).is_none(),
                "request ids are unique"
            );
        }
    }
    let with_records: Vec<u64> = expected
        .iter()
        .filter(|(_, ops)| !ops.is_empty())
        .map(|(id, _)| *id)
        .collect();
    let found = wait_for_records(&node, "aud", &with_records);
    let mut recorded = by_request(&found);
    for (id, want) in &expected {
        let got = recorded.remove(id).unwrap_or_default();
        assert_eq!(&got, want, "request {id}");
    }
    assert!(
        recorded.is_empty(),
        "records of requests never made: {recorded:?}"
    );
    for e in found.iter().filter(|e| e["kind"] == "function") {
        assert_eq!(e["function"], "aud");
        if e["outcome"] == "not-granted" {
            assert_eq!(e["binding"], "GUESS");
            assert!(
                e["secret"].is_null(),
                "an ungranted binding names no secret"
            );
        } else {
            assert_eq!(e["secret"], "audited");
            assert_eq!(e["version"], 1);
        }
        if e["outcome"] == "denied" {
            assert!(e["reason"].as_str().unwrap().contains("is not granted"));
        }
    }
    // The admin actions of the setup: one record each.
    let admin: Vec<String> = entries(&node, &[])
        .iter()
        .filter(|e| e["kind"] == "admin" && e["action"] != "audit.read")
        .map(|e| format!("{} {} {}", e["action"], e["target"], e["outcome"]))
        .collect();
    assert_eq!(
        admin,
        [
            r#""secret.put" "secret/audited" "ok""#,
            r#""function.deploy" "function/aud" "ok""#,
            r#""grant.create" "grant/aud/KEY" "ok""#,
        ]
    );
    let whole = std::fs::read(node.data.path().join("keyhole.db")).unwrap();
    assert!(
        !whole
            .windows(b"audited-secret-value".len())
            .any(|w| w == b"audited-secret-value"),
        "the trail never holds a value"
    );
    let out = node.ok(&["audit", "verify"]);
    assert!(out.contains("audit trail intact"), "{out}");
}

/// Runs SQL against a stopped node's database.
fn tamper(node: &Node, sql: &str) {
    let conn = node.db();
    conn.execute_batch(sql).unwrap();
}

/// The node's database as one file's bytes (its write-ahead log folded
/// in), for [`restore`] to put back between tampering cases.
fn snapshot(node: &Node) -> Vec<u8> {
    tamper(node, "PRAGMA wal_checkpoint(TRUNCATE);");
    std::fs::read(node.data.path().join("keyhole.db")).unwrap()
}

/// Puts a [`snapshot`] back in place of the node's database.
fn restore(node: &Node, bytes: &[u8]) {
    let db = node.data.path().join("keyhole.db");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    std::fs::write(&db, bytes).unwrap();
}

fn verify_fails(node: &Node) -> String {
    let out = node.cli(&["audit", "verify"]);
    assert!(!out.status.success(), "verify passed a tampered trail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn audit_verify_names_the_first_tampered_record() {
    let node = Node::new();
    for i in 0..6 {
        node.put_secret(
            &format!("s{i}"),
            format!("value-number-{i}-abcdef").as_bytes(),
        );
    }
    assert!(node.ok(&["audit", "verify"]).contains("intact"));
    let db = node.data.path().join("keyhole.db");
    let pristine = snapshot(&node);
    let cases: &[(&str, &str, &str)] = &[
        (
            "edited",
            "UPDATE audit SET body = replace(body, 'secret/s2', 'secret/s9') WHERE seq = 3;",
            "record 3: its content does not match its MAC",
        ),
        (
            "edited column",
            "UPDATE audit SET secret = 's9' WHERE seq = 3;",
            "record 3: its indexed columns",
        ),
        (
            "deleted",
            "DELETE FROM audit WHERE seq = 3;",
            "record 4: expected record 3 next but found 4: records 3..3 are missing",
        ),
        (
            "reordered",
            "UPDATE audit SET seq = -1 WHERE seq = 3; UPDATE audit SET seq = 3 WHERE seq = 4; UPDATE audit SET seq = 4 WHERE seq = -1;",
            "record 3:",
        ),
        (
            "inserted",
            "UPDATE audit SET seq = seq + 100 WHERE seq >= 3; UPDATE audit SET seq = seq - 99 WHERE seq >= 103;
             INSERT INTO audit (seq, at_ms, kind, function, secret, body, prev, mac)
                SELECT 3, at_ms, kind, function, secret, body, prev, mac FROM audit WHERE seq = 2;",
            "record 3:",
        ),
        (
            "truncated",
            "DELETE FROM audit WHERE seq = (SELECT MAX(seq) FROM audit);",
            "records were cut off the end",
        ),
    ];
    for (kind, sql, needle) in cases {
        restore(&node, &pristine);
        tamper(&node, sql);
        let err = verify_fails(&node);
        assert!(err.contains(needle), "{kind}: {err}");
    }
    // A record spliced in from a diverged copy of the same store: its own
    // MAC holds (same key, same position), only its link to the record
    // before it gives it away.
    restore(&node, &pristine);
    let fork = Node::new_sharing_key(&node);
    std::fs::copy(&db, fork.data.path().join("keyhole.db")).unwrap();
    node.put_secret("here", b"value-only-here-123456");
    fork.put_secret("there", b"value-only-there-12345");
    fork.put_secret("there2", b"value-only-there-67890");
    tamper(&fork, "PRAGMA wal_checkpoint(TRUNCATE);");
    tamper(&node, "PRAGMA wal_checkpoint(TRUNCATE);");
    let last: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT MAX(seq) FROM audit", [], |r| r.get(0))
        .unwrap();
    tamper(
        &node,
        &format!(
            "ATTACH '{}' AS fork;
             INSERT INTO audit SELECT * FROM fork.audit WHERE seq = {};",
            fork.data.path().join("keyhole.db").display(),
            last + 1
        ),
    );
    let err = verify_fails(&node);
    assert!(
        err.contains(&format!(
            "record {}: it does not follow record {last}",
            last + 1
        )),
        "spliced: {err}"
    );
    restore(&node, &pristine);
    assert!(node.ok(&["audit", "verify"]).contains("intact"));
}

#[test]
fn requests_are_served_while_the_trail_cannot_be_written() {
    let mut node = Node::new();
    node.put_secret("busy", b"busy-secret-value-9d0c");
    node.granted_probe("busy", "/busy", "busy", "hmac", "");
    node.start();
    node.wait_for("/busy/hmac?binding=KEY", |r| r.status == 200);
    // Another process holds the database's write lock for 3 s: the node's
    // audit writer cannot append, and requests must not wait for it.
    let conn = node.db();
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut ids = Vec::new();
    let started = Instant::now();
    for _ in 0..50 {
        let (reply, id) = node.get_with_id("/busy/hmac?binding=KEY");
        assert_eq!(reply.status, 200);
        ids.push(id);
    }
    let served_in = started.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    conn.execute_batch("ROLLBACK").unwrap();
    drop(conn);
    let found = wait_for_records(&node, "busy", &ids);
    let recorded = by_request(&found);
    for id in &ids {
        assert_eq!(recorded[id].len(), 2, "request {id}: get + hmac, once each");
    }
    eprintln!("50 requests served in {served_in:?} while the trail was locked");
    node.ok(&["audit", "verify"]);
}

#[test]
fn a_function_calling_secrets_in_a_tight_loop_does_not_overflow_the_trail() {
    let mut node = Node::new();
    node.put_secret("flood", b"flood-secret-value-3c1f");
    node.granted_probe("probe", "/probe", "flood", "hmac", "");
    node.start();
    // One request makes 4 n + 1 secret calls in well under a second: many
    // times what a worker's queue (16 384 records) holds between two timed
    // batches, so the writer must be woken as the queue fills, and a record
    // finding the queue full must wait for it rather than be dropped.
    let n: i64 = 100_000;
    node.probe_host_call_timings(n as u32);
    let expected = 4 * n + 1;
    let conn = node.db();
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    let started = Instant::now();
    let (written, lost) = loop {
        let written = count("SELECT COALESCE(MAX(seq), 0) FROM audit")
            - count("SELECT COUNT(*) FROM audit WHERE kind != 'function'");
        let lost = count(
            "SELECT COALESCE(SUM(json_extract(body, '$.event.records')), 0) FROM audit WHERE kind = 'lost'",
        );
        if written + lost >= expected {
            break (written, lost);
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{written} written and {lost} lost of {expected} after 20 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(written + lost, expected, "every call counted once");
    // Without the early wake-up about nine in ten were lost; without the
    // wait for room, about one in ten where commits are slow.
    assert_eq!(
        lost, 0,
        "{lost} of {expected} records lost to a single request"
    );
    eprintln!("{written} records written, {lost} lost");
    node.ok(&["audit", "verify"]);
}

/// Parses `/metrics` with the Prometheus client's own parser and returns
/// `name{labels} value` lines, labels sorted.
fn scrape(node: &Node, token: &str) -> BTreeMap<String, f64> {
    let reply = node.admin_request("GET", "/metrics", Some(token), b"");
    assert_eq!(reply.status, 200, "{reply:?}");
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}} {s.value}")
"#;
    let out = common::python_stdin(script, &reply.body);
    out.lines()
        .map(|line| {
            let (key, value) = line.rsplit_once(' ').unwrap();
            (key.to_owned(), value.parse().unwrap())
        })
        .collect()
}

#[test]
fn metrics_parse_and_move_when_requests_happen() {
    let mut node = Node::new();
    node.put_secret("m", b"metrics-secret-value-1a2b");
    node.granted_probe("met", "/met", "m", "hmac", "[limits]\ntimeout-ms = 300\n");
    node.granted_probe("trap", "/trap", "m", "reveal", "");
    let auditor = node.token(&["--role", "auditor"]);
    node.start_admin();
    node.wait_for("/met/hmac?binding=KEY", |r| r.status == 200);
    let before = scrape(&node, &auditor);
    let value = |m: &BTreeMap<String, f64>, key: &str| m.get(key).copied().unwrap_or(0.0);
    for _ in 0..5 {
        assert_eq!(node.get("/met/hmac?binding=KEY").status, 200);
    }
    assert_eq!(node.get("/met/hmac?binding=NOPE").status, 403);
    assert_eq!(node.get("/met/panic?binding=KEY").status, 403);
    assert_eq!(node.get("/met/spin").status, 504);
    assert_eq!(node.get("/nowhere").status, 404);
    assert_eq!(node.get("/trap/panic?binding=KEY").status, 500);
    std::thread::sleep(Duration::from_millis(300));
    let after = scrape(&node, &auditor);
    let moved = |key: &str| value(&after, key) - value(&before, key);
    assert_eq!(
        moved("keyhole_requests_total{function=met,status=200}"),
        5.0
    );
    assert_eq!(
        moved("keyhole_requests_total{function=met,status=403}"),
        2.0
    );
    assert_eq!(
        moved("keyhole_requests_total{function=met,status=504}"),
        1.0
    );
    assert_eq!(
        moved("keyhole_requests_total{function=(none),status=404}"),
        1.0
    );
    assert_eq!(
        moved("keyhole_request_duration_seconds_count{function=met}"),
        8.0
    );
    assert_eq!(moved("keyhole_instance_traps_total{function=trap}"), 1.0);
    assert_eq!(
        moved(
            "keyhole_secret_operations_total{function=met,operation=hmac-sha256,outcome=allowed}"
        ),
        5.0
    );
    assert_eq!(
        moved("keyhole_secret_denials_total{function=met,operation=get,outcome=not-granted}"),
        1.0
    );
    assert_eq!(
        moved("keyhole_secret_denials_total{function=met,operation=reveal,outcome=denied}"),
        1.0
    );
    assert_eq!(moved("keyhole_instance_timeouts_total{function=met}"), 1.0);
    assert!(value(&after, "keyhole_audit_written_records_total{}") >= 14.0);
    assert_eq!(value(&after, "keyhole_audit_lost_records_total{}"), 0.0);
    assert!(after.contains_key("keyhole_audit_backlog{}"));
    let deployer = node.token(&["--role", "deployer"]);
    let reply = node.admin_request("GET", "/metrics", Some(&deployer), b"");
    assert_eq!(reply.status, 403, "a deployer may not read metrics");
}

#[test]
fn injections_are_recorded_with_where_they_were_bound() {
    let allowed = common::Upstream::start();
    let other = common::Upstream::start();
    let mut node = Node::new();
    node.put_secret("api-token", b"upstream-token-value-6e1f");
    let manifest = node.write_manifest(
        "caller",
        common::artifacts::PROBE,
        "/caller",
        "[bindings.API]\nallow = [\"inject\"]\n",
    );
    node.ok(&["deploy", manifest.to_str().unwrap()]);
    let egress = format!("http://127.0.0.1:{}", allowed.port);
    node.ok(&[
        "grant",
        "caller",
        "API",
        "--secret",
        "api-token",
        "--allow",
        "inject",
        "--egress",
        &egress,
    ]);
    node.start_with_loopback_outbound();
    let (sent, sent_id) = node.get_with_id(&format!(
        "/caller/inject?binding=API&url={}/v1",
        allowed.url()
    ));
    assert_eq!(sent.status, 200, "{sent:?}");
    let (refused, refused_id) =
        node.get_with_id(&format!("/caller/inject?binding=API&url={}/x", other.url()));
    assert_eq!(refused.status, 502, "{refused:?}");
    let found = wait_for_records(&node, "caller", &[sent_id, refused_id]);
    let recorded = by_request(&found);
    assert_eq!(
        recorded[&sent_id],
        pairs(&[
            ("get", "allowed"),
            ("header-token", "allowed"),
            ("inject", "allowed")
        ])
    );
    assert_eq!(
        recorded[&refused_id],
        pairs(&[
            ("get", "allowed"),
            ("header-token", "allowed"),
            ("inject", "denied")
        ])
    );
    let destination = |id: u64| {
        found
            .iter()
            .find(|e| e["request"] == id && e["operation"] == "inject")
            .map(|e| e["destination"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert_eq!(
        destination(sent_id),
        format!("http://127.0.0.1:{}", allowed.port)
    );
    assert_eq!(
        destination(refused_id),
        format!("http://127.0.0.1:{}", other.port)
    );
    assert!(
        !serde_json::to_string(&found)
            .unwrap()
            .contains("upstream-token-value")
    );
    assert_eq!(other.connections(), 0);
}

/// Sequence numbers of the records `keyhole audit` lists.
fn seqs(node: &Node) -> Vec<u64> {
    entries(node, &[])
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect()
}

#[test]
fn retention_prunes_under_a_signed_checkpoint_that_verify_starts_from() {
    let node = Node::new();
    for i in 0..6 {
        node.put_secret(
            &format!("old{i}"),
            format!("old-value-{i}-abcdefgh").as_bytes(),
        );
    }
    std::thread::sleep(Duration::from_millis(1_200));
    node.put_secret("new", b"new-value-abcdefghijkl");
    let before = seqs(&node);
    let newest_old = before[before.len() - 2];

    // A trail with an edited old record is not pruned: that would destroy
    // the evidence.
    let pristine = snapshot(&node);
    tamper(
        &node,
        "UPDATE audit SET body = replace(body, 'secret/old1', 'secret/zzz1') WHERE seq = 2;",
    );
    let refused = node.cli(&["audit", "prune", "--older-than", "1s"]);
    assert!(!refused.status.success(), "a tampered trail was pruned");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("does not verify at record 2") && err.contains("not pruned"),
        "{err}"
    );
    restore(&node, &pristine);

    // Pruning removes the old records, keeps the new one, and says so.
    let report: serde_json::Value =
        serde_json::from_str(&node.ok(&["audit", "prune", "--older-than", "1s", "--json"]))
            .unwrap();
    assert_eq!(report["removed"], newest_old, "{report}");
    assert_eq!(report["pruned"]["through_seq"], newest_old, "{report}");
    let after = entries(&node, &[]);
    assert!(
        after
            .iter()
            .all(|e| e["seq"].as_u64().unwrap() > newest_old),
        "old records survived: {after:?}"
    );
    assert!(
        after.iter().any(|e| e["target"] == "secret/new"),
        "the new record went: {after:?}"
    );
    let prune_record = after
        .iter()
        .find(|e| e["action"] == "audit.prune")
        .expect("the pruning is in the trail");
    assert_eq!(prune_record["token"], "local");
    let verified = node.ok(&["audit", "verify"]);
    assert!(
        verified.contains("intact")
            && verified.contains(&format!(
                "records 1 to {newest_old} were removed by retention"
            )),
        "{verified}"
    );

    // The chain goes on from the pruned trail, and a second pruning moves
    // the checkpoint on without breaking it.
    node.put_secret("newer", b"newer-value-abcdefghij");
    std::thread::sleep(Duration::from_millis(1_200));
    node.put_secret("newest", b"newest-value-abcdefghi");
    node.ok(&["audit", "prune", "--older-than", "1s"]);
    let verified = node.ok(&["audit", "verify", "--json"]);
    let verified: serde_json::Value = serde_json::from_str(&verified).unwrap();
    assert!(verified["first_bad"].is_null(), "{verified}");
    let through = verified["pruned"]["through_seq"].as_u64().unwrap();
    assert!(through > newest_old, "{verified}");
    assert!(
        entries(&node, &[])
            .iter()
            .any(|e| e["target"] == "secret/newest"),
        "the newest record went"
    );

    // What an attacker with the database but not the key might do to make
    // deletions pass for retention, each caught.
    let pruned = snapshot(&node);
    let first_left: i64 = node
        .db()
        .query_row("SELECT MIN(seq) FROM audit", [], |r| r.get(0))
        .unwrap();
    let cases: Vec<(&str, String, String)> = vec![
        (
            "a record after the checkpoint deleted",
            format!("DELETE FROM audit WHERE seq = {first_left};"),
            format!("records {first_left}..{first_left} are missing"),
        ),
        (
            "the checkpoint moved on to hide that deletion",
            format!(
                "DELETE FROM audit WHERE seq = {first_left};
                 UPDATE meta SET value = CAST(replace(CAST(value AS TEXT), '\"seq\":{through}', '\"seq\":{first_left}') AS BLOB)
                  WHERE key = 'audit_checkpoint';"
            ),
            "the retention checkpoint does not match its MAC".into(),
        ),
        (
            "the checkpoint removed",
            "DELETE FROM meta WHERE key = 'audit_checkpoint';".into(),
            format!("records 1..{through} are missing"),
        ),
        (
            "a record planted before the checkpoint",
            format!(
                "INSERT INTO audit (seq, at_ms, kind, function, secret, body, prev, mac)
                 SELECT 1, at_ms, kind, function, secret, body, prev, mac FROM audit WHERE seq = {first_left};"
            ),
            "at or before the retention checkpoint".into(),
        ),
        (
            "the checkpoint unreadable",
            "UPDATE meta SET value = X'00' WHERE key = 'audit_checkpoint';".into(),
            "checkpoint cannot be read".into(),
        ),
        (
            "every row after the checkpoint deleted, and the head",
            "DELETE FROM audit; DELETE FROM meta WHERE key = 'audit_head';".into(),
            "every record after the retention checkpoint is gone".into(),
        ),
    ];
    for (kind, sql, needle) in &cases {
        restore(&node, &pruned);
        tamper(&node, sql);
        let err = verify_fails(&node);
        assert!(err.contains(needle.as_str()), "{kind}: {err}");
    }
    // An older checkpoint put back (from a backup taken after the first
    // pruning) leaves the records between the two missing.
    restore(&node, &pruned);
    let old_checkpoint: Vec<u8> = {
        // Only the key makes a checkpoint, so take a genuine older one: the
        // same store before any pruning, pruned once in a copy.
        let fork = Node::new_sharing_key(&node);
        std::fs::write(fork.data.path().join("keyhole.db"), &pristine).unwrap();
        fork.ok(&["audit", "prune", "--older-than", "1s"]);
        fork.db()
            .query_row(
                "SELECT value FROM meta WHERE key = 'audit_checkpoint'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    node.db()
        .execute(
            "UPDATE meta SET value = ?1 WHERE key = 'audit_checkpoint'",
            [old_checkpoint],
        )
        .unwrap();
    let err = verify_fails(&node);
    assert!(err.contains("are missing"), "older checkpoint: {err}");

    // A checkpoint made in a copy of the store (same key): pruning there,
    // then deleting the same rows here and pasting its checkpoint. The
    // checkpoint names the copy's pruning record, which this trail lacks.
    restore(&node, &pruned);
    let copy = Node::new_sharing_key(&node);
    std::fs::write(copy.data.path().join("keyhole.db"), &pruned).unwrap();
    std::thread::sleep(Duration::from_millis(1_200));
    copy.ok(&["audit", "prune", "--older-than", "1s"]);
    let (copied, copied_through): (Vec<u8>, i64) = {
        let conn = copy.db();
        let value: Vec<u8> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'audit_checkpoint'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let through: serde_json::Value = serde_json::from_slice(&value).unwrap();
        (value, through["seq"].as_i64().unwrap())
    };
    // (Reads append records without changing the sealed state, so the
    // snapshot restored between cases stays in step with the anchor.)
    node.ok(&["secret", "list"]);
    tamper(&node, "PRAGMA wal_checkpoint(TRUNCATE);");
    let conn = node.db();
    conn.execute("DELETE FROM audit WHERE seq <= ?1", [copied_through])
        .unwrap();
    conn.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'audit_checkpoint'",
        [copied],
    )
    .unwrap();
    drop(conn);
    let err = verify_fails(&node);
    assert!(
        err.contains("which this trail does not hold"),
        "checkpoint from a copy: {err}"
    );

    // Records cut off the end: the next append records the cut instead of
    // covering it with a new head, verify fails at that record from then
    // on, and pruning will not remove it.
    restore(&node, &pruned);
    tamper(
        &node,
        "DELETE FROM audit WHERE seq = (SELECT MAX(seq) FROM audit);",
    );
    node.ok(&["secret", "list"]);
    let err = verify_fails(&node);
    assert!(err.contains("were cut off the end"), "cut: {err}");
    assert!(
        node.ok(&["audit"]).contains("CUT: records after"),
        "the cut is not listed"
    );
    std::thread::sleep(Duration::from_millis(1_200));
    node.ok(&["secret", "list"]);
    let refused = node.cli(&["audit", "prune", "--older-than", "1s"]);
    assert!(
        !refused.status.success(),
        "a cut trail was pruned past the cut"
    );
    let err = verify_fails(&node);
    assert!(
        err.contains("were cut off the end"),
        "cut after prune: {err}"
    );

    restore(&node, &pruned);
    assert!(node.ok(&["audit", "verify"]).contains("intact"));
}

#[test]
fn a_node_applies_its_retention_policy_and_only_admins_prune_over_the_api() {
    let mut node = Node::new();
    node.put_secret("early", b"early-value-abcdefghij");
    let auditor = node.token(&["--role", "auditor", "--name", "reader"]);
    node.start_admin_with_env(&[("KEYHOLE_AUDIT_RETENTION", "2s")]);
    let refused = node
        .remote_command(&auditor)
        .args(["audit", "prune", "--older-than", "1s"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("audit:prune"), "{err}");

    let deadline = Instant::now() + Duration::from_secs(30);
    let verified = loop {
        let v: serde_json::Value =
            serde_json::from_str(&node.ok(&["audit", "verify", "--json"])).unwrap();
        if !v["pruned"].is_null() {
            break v;
        }
        assert!(Instant::now() < deadline, "the node never pruned: {v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(verified["first_bad"].is_null(), "{verified}");
    let left = entries(&node, &[]);
    assert!(
        !left.iter().any(|e| e["target"] == "secret/early"),
        "the old record survived: {left:?}"
    );
    let record = left
        .iter()
        .find(|e| e["action"] == "audit.prune" && e["token"] == "retention")
        .expect("the node recorded its pruning");
    assert_eq!(record["outcome"], "ok", "{record}");
    assert!(
        node.logs().contains("audit retention removed old records"),
        "{}",
        node.logs()
    );
}

/// Issue 24 §3. Allowed secret operations are not capped per request, and
/// each is a record: a busy or hostile function could fill the data
/// directory's disk, and then every admin action — `revoke` and `undeploy`
/// included, which must write their record — would fail. Below the reserve
/// (here: a reserve larger than any disk) function records are counted
/// and dropped, with a `lost` record saying how many, and admin actions
/// are still recorded.
#[test]
fn below_the_disk_reserve_function_records_give_way_to_admin_actions() {
    let mut node = Node::new();
    node.put_secret("k", b"reserve-test-key");
    node.granted_probe("probe", "/probe", "k", "hmac", "");
    node.start_with_args(&["--disk-reserve", "100000000GiB"]);
    for _ in 0..5 {
        assert_eq!(node.get("/probe/hmac?binding=KEY").status, 200);
    }
    // Still able to take the grant away, and to say so in the trail.
    node.ok(&["revoke", "probe", "KEY"]);
    node.wait_for("/probe/hmac?binding=KEY", |r| r.status == 403);
    let started = Instant::now();
    let lost = loop {
        let lost: i64 = node
            .db()
            .query_row(
                "SELECT COALESCE(SUM(json_extract(body, '$.event.records')), 0) FROM audit WHERE kind = 'lost'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        // Two records (get, hmac) per allowed request, one refused get.
        if lost >= 11 || started.elapsed() > Duration::from_secs(10) {
            break lost;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(lost >= 11, "{lost} records counted as lost");
    let all = entries(&node, &[]);
    assert!(
        all.iter().all(|e| e["kind"] != "function"),
        "a function record was written below the reserve"
    );
    assert!(
        all.iter()
            .any(|e| e["action"] == "grant.revoke" && e["outcome"] == "ok"),
        "the revoke was not recorded: {all:?}"
    );
    assert!(node.logs().contains("less free space than its reserve"));
    node.ok(&["audit", "verify"]);
}
