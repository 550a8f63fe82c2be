//! Prints how fast the audit trail takes function records (the node's
//! writer appends a batch every 100 ms), how fast `audit verify` walks the
//! chain, and what queueing one record costs on the request path.
//!
//! `cargo bench -p keyhole-host --bench audit`

use keyhole_host::audit::trail::FunctionTrail;
use keyhole_host::audit::{Event, FunctionEvent, OpOutcome, Timed, now_ms};
use keyhole_host::crypto::AesKey;
use keyhole_host::store::{AuditLog, SqliteStore};
use std::sync::Arc;
use std::time::Instant;

const RECORDS: usize = 200_000;
const BATCH: usize = 3_000;

fn event(
    request: u64,
    function: &Arc<str>,
    binding: &Arc<str>,
    secret: &Arc<str>,
    digest: &Arc<str>,
) -> FunctionEvent {
    FunctionEvent {
        function: Arc::clone(function),
        request,
        binding: Arc::clone(binding),
        secret: Some(Arc::clone(secret)),
        version: Some(3),
        operation: "verify-hmac-sha256".into(),
        outcome: OpOutcome::Allowed,
        destination: None,
        reason: None,
        digest: Some(Arc::clone(digest)),
    }
}

fn main() {
    let (function, binding, secret): (Arc<str>, Arc<str>, Arc<str>) = (
        "webhook-verify".into(),
        "GITHUB_WEBHOOK".into(),
        "gh-webhook-prod".into(),
    );
    // A component's SHA-256, as every record names the code it ran under.
    let digest: Arc<str> =
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into();

    // The request path: push onto the queue (drained as a writer would).
    let trail = FunctionTrail::default();
    let rounds = 1_000_000u64;
    let start = Instant::now();
    for i in 0..rounds {
        trail.record(event(i, &function, &binding, &secret, &digest));
        if i % 50_000 == 0 {
            drop(trail.take_batch());
        }
    }
    let per_record = start.elapsed().as_nanos() as f64 / rounds as f64;
    println!("queueing one function record on the request path: {per_record:.0} ns");

    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), AesKey::generate()).unwrap();
    let records: Vec<Timed> = (0..RECORDS as u64)
        .map(|i| Timed {
            at_ms: now_ms(),
            event: Event::Function(event(i, &function, &binding, &secret, &digest)),
        })
        .collect();
    {
        // What the writer does per row: encode a run of records, MAC it once.
        let key = keyhole_host::audit::chain::ChainKey::from_slice(&[7u8; 32]).unwrap();
        let start = Instant::now();
        let mut prev = [0u8; 32];
        for run in records.chunks(keyhole_host::audit::chain::MAX_RECORDS_PER_ROW) {
            let run: Vec<&Timed> = run.iter().collect();
            let body = keyhole_host::audit::run::encode(&run).unwrap();
            prev = key.link(&prev, 1, &body);
        }
        println!(
            "encoding and chaining alone: {:.2} µs per record (in runs of {})",
            start.elapsed().as_micros() as f64 / RECORDS as f64,
            keyhole_host::audit::chain::MAX_RECORDS_PER_ROW
        );
    }
    let cpu_before = cpu_seconds();
    let start = Instant::now();
    for batch in records.chunks(BATCH) {
        store.append_audit(batch).unwrap();
    }
    let elapsed = start.elapsed();
    let cpu = cpu_seconds() - cpu_before;
    println!(
        "appending {RECORDS} records in batches of {BATCH}: {:.2} s, {:.0} records/s ({:.1} µs each, of which {:.1} µs CPU; fsync per batch)",
        elapsed.as_secs_f64(),
        RECORDS as f64 / elapsed.as_secs_f64(),
        elapsed.as_micros() as f64 / RECORDS as f64,
        cpu * 1e6 / RECORDS as f64
    );
    let start = Instant::now();
    let verification = store.verify_audit().unwrap();
    let elapsed = start.elapsed();
    assert_eq!(verification.first_bad, None);
    println!(
        "audit verify over {} records: {:.2} s ({:.0} records/s)",
        verification.records,
        elapsed.as_secs_f64(),
        verification.records as f64 / elapsed.as_secs_f64()
    );
    let size = dir_size(dir.path());
    println!(
        "database size: {:.1} MiB ({:.0} bytes per record)",
        size as f64 / (1024.0 * 1024.0),
        size as f64 / RECORDS as f64
    );

    // The costly case: records that share nothing but their function (a
    // guest guessing binding names, each refused with its own reason).
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), AesKey::generate()).unwrap();
    let guesses: Vec<Timed> = (0..RECORDS as u64)
        .map(|i| {
            let binding = format!("GUESS_{i}");
            Timed {
                at_ms: now_ms(),
                event: Event::Function(FunctionEvent {
                    function: Arc::clone(&function),
                    request: i,
                    reason: Some(format!(
                        "function `{function}` has no grant for binding `{binding}`"
                    )),
                    binding: binding.into(),
                    secret: None,
                    version: None,
                    operation: "get".into(),
                    outcome: OpOutcome::NotGranted,
                    digest: None,
                    destination: None,
                }),
            }
        })
        .collect();
    let cpu_before = cpu_seconds();
    for batch in guesses.chunks(BATCH) {
        store.append_audit(batch).unwrap();
    }
    let cpu = cpu_seconds() - cpu_before;
    let size = dir_size(dir.path());
    println!(
        "records that each differ (guessed binding names): {:.1} µs CPU and {:.0} bytes per record",
        cpu * 1e6 / RECORDS as f64,
        size as f64 / RECORDS as f64
    );
}

/// Bytes in the files of `dir` (the database, its WAL and shared memory).
fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// CPU time (user + system) this process has used, from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after `)`.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}
