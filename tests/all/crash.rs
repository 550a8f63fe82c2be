//! Crash consistency: a node takes a stream of secret puts, rotations and
//! grants through its admin API and is killed with SIGKILL at a random
//! moment, again and again. After every kill the store must open (the node
//! restarts and serves), every acknowledged write must be there and
//! decrypt to the value sent, an unacknowledged write must be wholly there
//! or wholly absent, and the audit trail must verify.
//!
//! `KEYHOLE_CRASH_ROUNDS` sets the number of kills (default 100);
//! `scripts/crash-soak` runs many more.

use crate::common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::Node;
use keyhole_host::crypto::{AesKey, SealedVersion, open_version};
use rand::RngExt;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const SECRETS: usize = 4;
const BINDINGS: usize = 6;

/// Everything sent so far, and which of it the node acknowledged.
#[derive(Default)]
struct Ledger {
    /// Every value sent for each secret, acknowledged or not.
    sent: BTreeMap<String, BTreeSet<Vec<u8>>>,
    /// Acknowledged versions: (secret, version) → value.
    acked_versions: BTreeMap<(String, u32), Vec<u8>>,
    /// Every grant sent: binding → the secrets it was pointed at.
    grants_sent: BTreeMap<String, BTreeSet<String>>,
    /// The last acknowledged grant of each binding.
    grants_acked: BTreeMap<String, String>,
    /// Acknowledged writes, all rounds.
    acked: usize,
    /// Values in flight when the node died: (secret, value).
    in_flight: Vec<(String, Vec<u8>)>,
}

/// Sends writes to the node until `stop` is set or the node is gone.
/// Returns how many it sent.
fn write_until_killed(admin: &str, token: &str, ledger: &mut Ledger, stop: &AtomicBool) -> usize {
    let agent = Node::agent();
    let auth = format!("Bearer {token}");
    let mut rng = rand::rng();
    let mut sent = 0;
    while !stop.load(Ordering::Relaxed) {
        let secret = format!("s{}", rng.random_range(0..SECRETS));
        let (method, path, body, value) = match rng.random_range(0..3) {
            0 | 1 => {
                let value: Vec<u8> = (0..rng.random_range(1..200))
                    .map(|_| rng.random())
                    .collect();
                let rotate = rng.random_bool(0.5);
                let body = if rotate {
                    serde_json::json!({ "value": STANDARD.encode(&value), "grace_secs": 3600 })
                } else {
                    serde_json::json!({ "value": STANDARD.encode(&value) })
                };
                let path = if rotate {
                    format!("/v1/secrets/{secret}/rotate")
                } else {
                    format!("/v1/secrets/{secret}")
                };
                let method = if rotate { "POST" } else { "PUT" };
                (method, path, body, Some(value))
            }
            _ => {
                let binding = format!("B{}", rng.random_range(0..BINDINGS));
                let body = serde_json::json!({ "secret": secret, "allow": ["hmac"] });
                ledger
                    .grants_sent
                    .entry(binding.clone())
                    .or_default()
                    .insert(secret.clone());
                ("PUT", format!("/v1/grants/f/{binding}"), body, None)
            }
        };
        if let Some(value) = &value {
            ledger
                .sent
                .entry(secret.clone())
                .or_default()
                .insert(value.clone());
        }
        let url = format!("{admin}{path}");
        let bytes = serde_json::to_vec(&body).unwrap();
        let request = match method {
            "PUT" => agent.put(&url),
            _ => agent.post(&url),
        };
        sent += 1;
        let answer = request
            .header("Authorization", &auth)
            .send(&bytes[..])
            .and_then(|mut response| {
                let text = response.body_mut().read_to_string()?;
                Ok((response.status(), text))
            });
        let Ok((status, text)) = answer else {
            // Killed mid-request: not acknowledged, so it may or may not have landed.
            if let Some(value) = value {
                ledger.in_flight.push((secret, value));
            }
            break;
        };
        // The first 200 is the acknowledgement; anything else is a bug.
        assert_eq!(status, 200, "{method} {path}: {text}");
        ledger.acked += 1;
        match value {
            Some(value) => {
                let reply: serde_json::Value = serde_json::from_str(&text).unwrap();
                let version = reply["version"].as_u64().expect("a version") as u32;
                ledger.acked_versions.insert((secret, version), value);
            }
            None => {
                let binding = path.rsplit('/').next().unwrap().to_owned();
                ledger.grants_acked.insert(binding, secret);
            }
        }
    }
    sent
}

/// Checks the stopped node's store against the ledger; returns every
/// stored value of each secret.
fn check_store(
    node: &Node,
    master: &AesKey,
    ledger: &Ledger,
    round: usize,
) -> BTreeMap<String, BTreeSet<Vec<u8>>> {
    let mut values: BTreeMap<String, BTreeSet<Vec<u8>>> = BTreeMap::new();
    let db = node.db();
    let integrity: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok", "round {round}");

    // Every stored version decrypts, to a value that was sent for it.
    let mut stored: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut statement = db
        .prepare("SELECT name, version, wrapped_key, ciphertext FROM secret_versions ORDER BY name, version")
        .unwrap();
    let rows = statement
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, u32>(1)?,
                SealedVersion {
                    wrapped_key: r.get(2)?,
                    ciphertext: r.get(3)?,
                },
            ))
        })
        .unwrap();
    for row in rows {
        let (name, version, sealed) = row.unwrap();
        let value = open_version(master, &name, version, &sealed)
            .unwrap_or_else(|_| panic!("round {round}: {name} v{version} does not decrypt"));
        assert!(
            ledger
                .sent
                .get(&name)
                .is_some_and(|s| s.contains(value.expose())),
            "round {round}: {name} v{version} holds a value never sent"
        );
        if let Some(acked) = ledger.acked_versions.get(&(name.clone(), version)) {
            assert_eq!(
                value.expose(),
                &acked[..],
                "round {round}: {name} v{version}"
            );
        }
        values
            .entry(name.clone())
            .or_default()
            .insert(value.expose().to_vec());
        stored.entry(name).or_default().push(version);
    }
    // Versions run 1..=n with the newest current: no half-applied rotation.
    for (name, versions) in &stored {
        let expected: Vec<u32> = (1..=versions.len() as u32).collect();
        assert_eq!(versions, &expected, "round {round}: {name}");
        let current: u32 = db
            .query_row(
                "SELECT current_version FROM secrets WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(current, *versions.last().unwrap(), "round {round}: {name}");
    }
    // Every acknowledged version is there.
    for (name, version) in ledger.acked_versions.keys() {
        assert!(
            stored.get(name).is_some_and(|v| v.contains(version)),
            "round {round}: acknowledged {name} v{version} is missing"
        );
    }
    // Grants: each binding points at a secret it was sent; one that was
    // acknowledged is present.
    let grants: BTreeMap<String, String> = db
        .prepare("SELECT binding, secret FROM grants WHERE function = 'f'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (binding, secret) in &grants {
        assert!(
            ledger.grants_sent[binding].contains(secret),
            "round {round}: {binding} → {secret} was never sent"
        );
    }
    for binding in ledger.grants_acked.keys() {
        assert!(
            grants.contains_key(binding),
            "round {round}: acknowledged grant {binding} is missing"
        );
    }
    values
}

#[test]
fn acknowledged_writes_survive_sigkill_at_any_moment() {
    let rounds: usize = std::env::var("KEYHOLE_CRASH_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    let mut node = Node::new();
    let master = AesKey::from_slice(&STANDARD.decode(node.env_key().unwrap()).unwrap()).unwrap();
    let bindings: String = (0..BINDINGS)
        .map(|i| format!("[bindings.B{i}]\nallow = [\"hmac\"]\n"))
        .collect();
    node.deploy_probe("f", "/f", &bindings);
    let token = node.token(&["--role", "admin", "--name", "crash"]);
    let mut ledger = Ledger::default();
    for i in 0..SECRETS {
        let (name, value) = (format!("s{i}"), format!("first-{i}").into_bytes());
        node.put_secret(&name, &value);
        ledger
            .sent
            .entry(name.clone())
            .or_default()
            .insert(value.clone());
        ledger.acked_versions.insert((name, 1), value);
    }
    let mut rng = rand::rng();
    let started = Instant::now();
    let mut sent = 0;
    let mut kills_mid_stream = 0;
    // Unacknowledged writes found committed after the kill, and not.
    let (mut landed, mut lost) = (0, 0);
    for round in 0..rounds {
        // The restart: the store must open and the node serve, every time.
        node.start_admin();
        let stop = AtomicBool::new(false);
        let kill_after = Duration::from_millis(rng.random_range(5..250));
        let before = ledger.acked;
        let admin = node.admin.clone();
        std::thread::scope(|s| {
            let writer = s.spawn(|| write_until_killed(&admin, &token, &mut ledger, &stop));
            std::thread::sleep(kill_after);
            node.kill();
            stop.store(true, Ordering::Relaxed);
            sent += writer.join().unwrap();
        });
        if ledger.acked > before {
            kills_mid_stream += 1;
        }
        let values = check_store(&node, &master, &ledger, round);
        if let Some((secret, value)) = ledger.in_flight.last()
            && ledger.in_flight.len() > landed + lost
        {
            if values.get(secret).is_some_and(|v| v.contains(value)) {
                landed += 1;
            } else {
                lost += 1;
            }
        }
        let verify = node.cli(&["audit", "verify"]);
        assert!(
            verify.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&verify.stderr)
        );
    }
    // After the last kill the node still serves the current versions.
    node.start_admin();
    let check = node.ok(&["check"]);
    assert!(check.contains(" 0 failed"), "{check}");
    println!(
        "{rounds} kills in {:.1} s: {sent} writes sent, {} acknowledged ({} versions), {kills_mid_stream} kills after at least one acknowledged write; of the writes cut off by a kill, {landed} had committed and {lost} had not",
        started.elapsed().as_secs_f64(),
        ledger.acked,
        ledger.acked_versions.len()
    );
    assert!(
        kills_mid_stream * 2 > rounds,
        "most kills must land while writes flow"
    );
}
