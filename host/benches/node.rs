//! Prints figures for a real node: requests/s and p50/p99 latency for the
//! `hello-secret` and `webhook-verify` examples through the HTTP path, the
//! cost of `keyhole:secrets` host calls timed from inside a guest (HMAC,
//! each signature algorithm, seal/open of 1 KiB, header tokens), and the
//! host-side cost of substituting a token into an outgoing request.
//! Keys are made with the `openssl` command.
//!
//! `cargo bench -p keyhole-host --bench node` (`KEYHOLE_BENCH_SECONDS`, default 10).
//! Each run is made with `RUST_BACKTRACE=1` and with it unset.

#[path = "../../tests/all/common/mod.rs"]
mod common;

use bytes::Bytes;
use common::{Node, artifacts};
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use keyhole_host::crypto::material::SecretMaterial;
use keyhole_host::crypto::secret_value::SecretValue;
use keyhole_host::outbound::egress::EgressList;
use keyhole_host::outbound::injection::{Injector, Issue};
use keyhole_host::secrets::standing::InForce;
use sha2::Sha256;
use std::process::Command;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 32;
const WEBHOOK_KEY: &[u8] = b"bench-webhook-key";

struct Figures {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

impl Figures {
    fn print(&mut self, label: &str) {
        self.latencies_us.sort_unstable();
        let pct = |p: f64| {
            let i = ((self.latencies_us.len() as f64 * p) as usize)
                .min(self.latencies_us.len().saturating_sub(1));
            self.latencies_us.get(i).copied().unwrap_or(0) as f64 / 1000.0
        };
        println!(
            "{label:<44} {:>9.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   ({} requests, {} non-2xx)",
            self.requests as f64 / self.elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.99),
            self.requests,
            self.errors
        );
    }
}

/// Builds one request of a run.
type MakeRequest = Rc<dyn Fn() -> hyper::Request<Full<Bytes>>>;

/// Drives `CONNECTIONS` keep-alive connections at `addr` for `duration`,
/// each sending `request()` back to back.
fn load(addr: &str, duration: Duration, request: MakeRequest) -> Figures {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = addr.trim_start_matches("http://").to_owned();
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let deadline = Instant::now() + duration;
        let started = Instant::now();
        let tasks: Vec<_> = (0..CONNECTIONS)
            .map(|_| {
                tokio::task::spawn_local(connection(addr.clone(), deadline, Rc::clone(&request)))
            })
            .collect();
        let mut figures = Figures {
            requests: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            latencies_us: Vec::new(),
        };
        for task in tasks {
            let (latencies, errors) = task.await.unwrap();
            figures.requests += latencies.len();
            figures.errors += errors;
            figures.latencies_us.extend(latencies);
        }
        figures.elapsed = started.elapsed();
        figures
    })
}

/// One keep-alive connection sending requests until `deadline`; returns
/// each request's latency in µs and the count of non-2xx answers.
async fn connection(addr: String, deadline: Instant, request: MakeRequest) -> (Vec<u32>, usize) {
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::task::spawn_local(conn);
    let (mut latencies, mut errors) = (Vec::new(), 0usize);
    while Instant::now() < deadline {
        let sent = Instant::now();
        let response = sender.send_request(request()).await.unwrap();
        let ok = response.status().is_success();
        response.into_body().collect().await.unwrap();
        latencies.push(sent.elapsed().as_micros() as u32);
        errors += usize::from(!ok);
    }
    drop(sender);
    let _ = conn.await;
    (latencies, errors)
}

fn main() {
    let seconds: u64 = std::env::var("KEYHOLE_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let duration = Duration::from_secs(seconds);
    let body = Bytes::from_static(
        br#"{"action":"opened","number":1,"repository":{"full_name":"keyhole/keyhole"}}"#,
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_KEY).unwrap();
    mac.update(&body);
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));

    println!(
        "keyhole node benchmark: {CONNECTIONS} connections, {seconds} s per run, loopback HTTP/1.1"
    );
    for backtrace in [true, false] {
        let mut node = Node::new();
        node.put_secret("greeting", b"bench-greeting-key");
        node.put_secret("webhook", WEBHOOK_KEY);
        node.deploy_granted(
            artifacts::HELLO_SECRET_MANIFEST,
            "hello-secret",
            "GREETING_KEY",
            "greeting",
            "hmac",
        );
        node.deploy_granted(
            artifacts::WEBHOOK_VERIFY_MANIFEST,
            "webhook-verify",
            "GITHUB_WEBHOOK",
            "webhook",
            "hmac",
        );
        node.granted_probe("probe", "/probe", "webhook", "hmac", "");
        node.start_with_backtrace(backtrace);
        let setting = if backtrace {
            "RUST_BACKTRACE=1"
        } else {
            "RUST_BACKTRACE unset"
        };
        println!("\n[{setting}]");

        let hello: MakeRequest = Rc::new(|| {
            hyper::Request::get("/hello")
                .header("host", "bench")
                .body(Full::default())
                .unwrap()
        });
        let webhook: MakeRequest = {
            let (body, signature) = (body.clone(), signature.clone());
            Rc::new(move || {
                hyper::Request::post("/webhook")
                    .header("host", "bench")
                    .header("x-hub-signature-256", &signature)
                    .body(Full::new(body.clone()))
                    .unwrap()
            })
        };
        let warm = load(&node.base, Duration::from_secs(1), Rc::clone(&hello));
        assert_eq!(
            warm.errors, 0,
            "hello-secret answered non-2xx during warm-up"
        );
        load(&node.base, duration, hello).print("hello-secret (GET /hello)");
        load(&node.base, duration, webhook).print("webhook-verify (POST /webhook, valid sig)");

        for (label, median) in node.probe_host_call_round_trips(100) {
            println!("host call, timed in the guest: {label} {median} ns (median of 100 requests)");
        }
        key_operations(&mut node);
    }
    println!(
        "\ninjection, host side: substituting one token into an outgoing request's headers: {:.0} ns",
        substitution_ns()
    );
}

/// A fresh private key from `openssl genpkey`, as PKCS#8 PEM.
fn openssl_key(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .arg("genpkey")
        .args(args)
        .output()
        .expect("the benchmark makes its keys with the `openssl` command");
    assert!(out.status.success(), "openssl genpkey {args:?} failed");
    out.stdout
}

/// Deploys the probe with signing, sealing and injecting grants and prints
/// the per-call cost of each operation, timed inside the guest.
fn key_operations(node: &mut Node) {
    let keys = [
        ("ED", openssl_key(&["-algorithm", "ed25519"])),
        (
            "EC",
            openssl_key(&["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]),
        ),
        (
            "RSA",
            openssl_key(&["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
        ),
        ("AES", rand::random::<[u8; 32]>().to_vec()),
    ];
    let mut manifest = String::new();
    for (binding, value) in &keys {
        node.put_secret(&binding.to_lowercase(), value);
        manifest += &format!("[bindings.{binding}]\nallow = [\"sign\", \"seal\", \"inject\"]\n");
    }
    node.deploy_probe("keys", "/keys", &manifest);
    for (binding, _) in &keys {
        let secret = binding.to_lowercase();
        let (ops, egress) = if *binding == "AES" {
            ("seal,inject", "api.example.com")
        } else {
            ("sign", "")
        };
        let mut args = vec![
            "grant", "keys", binding, "--secret", &secret, "--allow", ops,
        ];
        if !egress.is_empty() {
            args.extend(["--egress", egress]);
        }
        node.ok(&args);
    }
    for (binding, op, n) in [
        ("ED", "sign-ed25519", 20_000),
        ("EC", "sign-es256", 20_000),
        ("RSA", "sign-rs256", 1_000),
        ("AES", "seal", 100_000),
        ("AES", "open", 100_000),
        ("AES", "header-token", 250),
    ] {
        let reply = node.wait_for(
            &format!("/keys/bench-op?binding={binding}&op={op}&n=1"),
            |r| r.status == 200,
        );
        assert!(reply.text().starts_with(op), "{reply:?}");
        let timed = node.get(&format!("/keys/bench-op?binding={binding}&op={op}&n={n}"));
        assert_eq!(timed.status, 200, "{timed:?}");
        let detail = match op {
            "seal" | "open" => " (1 KiB)",
            "header-token" => " (on a held handle)",
            _ => " (256-byte message)",
        };
        println!(
            "host call, timed in the guest: {}{detail}",
            timed.text().trim()
        );
    }
}

/// Nanoseconds the host spends deciding an outgoing request and replacing
/// one token in its headers (the request's own construction subtracted).
fn substitution_ns() -> f64 {
    // Each substitution is also counted and queued for the audit trail, as
    // on a node (the queue is never written here, so past its capacity the
    // records are counted as lost instead).
    let metrics = Arc::new(keyhole_host::node::observe::Observer::default())
        .function_metrics(&"bench".into());
    let mut injector = Injector::new("bench".into(), 1, metrics, Arc::default());
    let material = Arc::new(SecretMaterial::new(
        1,
        SecretValue::new(b"sk_live_0123456789abcdefghijklmnopqrstuvwxyz".to_vec()),
    ));
    let egress = Arc::new(EgressList::parse_list("api.example.com").unwrap());
    let token = injector
        .issue(Issue {
            binding: "API".into(),
            secret: "api-key".into(),
            material,
            egress,
            in_force: InForce::default(),
        })
        .unwrap();
    let bearer = format!("Bearer {token}");
    let request = || {
        hyper::Request::get("https://api.example.com/v1/items?limit=10")
            .header("authorization", &bearer)
            .header("accept", "application/json")
            .header("user-agent", "keyhole-bench/1")
            .body(
                http_body_util::Empty::<Bytes>::new()
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .unwrap()
    };
    let rounds = 500_000u32;
    let time = |substitute: bool| {
        let start = Instant::now();
        for _ in 0..rounds {
            let mut r = request();
            if substitute {
                // The whole outbound decision: destination, token, egress.
                injector.check(&mut r).unwrap();
            }
            std::hint::black_box(r);
        }
        start.elapsed().as_nanos() as f64 / f64::from(rounds)
    };
    time(true);
    let (plain, substituted) = (time(false), time(true));
    substituted - plain
}
