//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the
//! same checks the fuzz targets run, so every test run exercises them and
//! an input the fuzzer once found stays fixed.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8]), at_least: usize) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    inputs.sort();
    assert!(
        inputs.len() >= at_least,
        "{target}: {} inputs, expected at least {at_least}",
        inputs.len()
    );
    for input in &inputs {
        let data = std::fs::read(input).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{target}: {} fails", input.display());
    }
    println!("{target}: {} inputs replayed", inputs.len());
}

#[test]
fn manifest_corpus() {
    replay("manifest", keyhole_host::fuzzing::manifest, 10);
}

#[test]
fn admin_request_corpus() {
    replay("admin_request", keyhole_host::fuzzing::admin_request, 20);
}

#[test]
fn secrets_calls_corpus() {
    replay("secrets_calls", keyhole_host::fuzzing::secrets_calls, 10);
}
