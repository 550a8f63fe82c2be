//! Prints how long the deploy gate takes to scan a 10 MiB component: its
//! data segments and custom sections, for credential formats and for the
//! encodings of 0, 10, 100 and 1000 stored secret values.
//!
//! `cargo bench -p keyhole-host --bench scan`

use keyhole_host::crypto::secret_value::SecretValue;
use keyhole_host::deploy::scan::{self, KnownValue};
use std::time::Instant;

const SIZE: usize = 10 * 1024 * 1024;

/// A component whose core module holds `SIZE` bytes of data: half random
/// bytes, half the kind of text binaries carry (messages, names, a few
/// `key=`-like phrases), plus a custom section.
fn component() -> Vec<u8> {
    let text = b"error: could not read the access token from the configuration; \
        expected key=value pairs, api_version=2, secret_name=webhook\0\
        core::panicking::panic_fmt src/lib.rs index out of bounds\0";
    let mut data = Vec::with_capacity(SIZE);
    while data.len() < SIZE {
        let random: [u8; 256] = rand::random();
        data.extend_from_slice(&random);
        data.extend_from_slice(text);
    }
    data.truncate(SIZE);
    let escape = |bytes: &[u8]| -> String { bytes.iter().map(|b| format!("\\{b:02x}")).collect() };
    wat::parse_str(format!(
        r#"(component (core module (memory 200) (data (i32.const 0) "{}") (@custom "notes" "{}")))"#,
        escape(&data),
        escape(&text[..])
    ))
    .expect("the bench component builds")
}

fn main() {
    let component = component();
    let mib = component.len() as f64 / (1024.0 * 1024.0);
    println!("component: {mib:.1} MiB");
    for secrets in [0usize, 10, 100, 1000] {
        let known: Vec<KnownValue> = (0..secrets)
            .map(|i| KnownValue {
                secret: format!("secret-{i}"),
                version: 1,
                value: SecretValue::new(rand::random::<[u8; 32]>().to_vec()),
            })
            .collect();
        let mut times = Vec::new();
        let mut findings = 0;
        for _ in 0..5 {
            let start = Instant::now();
            findings = scan::scan(&component, &known).expect("scans").len();
            times.push(start.elapsed());
        }
        times.sort();
        let median = times[times.len() / 2];
        println!(
            "scan with {secrets:>4} stored values: {:>7.1} ms median of 5 ({:>6.0} MiB/s, {findings} findings)",
            median.as_secs_f64() * 1000.0,
            mib / median.as_secs_f64()
        );
    }
}
