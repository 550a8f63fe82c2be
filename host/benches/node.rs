//! Prints figures for a real node: requests/s and p50/p99 latency for the
//! `hello-secret` and `webhook-verify` examples through the HTTP path, and
//! the cost of `keyhole:secrets` host calls timed from inside a guest.
//!
//! `cargo bench -p keyhole-host --bench node` (`KEYHOLE_BENCH_SECONDS`, default 10).
//! Each run is made with `RUST_BACKTRACE=1` and with it unset.

#[path = "../../tests/common/mod.rs"]
mod common;

use bytes::Bytes;
use common::{Node, artifacts};
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use sha2::Sha256;
use std::rc::Rc;
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
        node.ok(&["deploy", artifacts::HELLO_SECRET_MANIFEST]);
        node.ok(&["deploy", artifacts::WEBHOOK_VERIFY_MANIFEST]);
        node.granted_probe("probe", "/probe", "webhook", "hmac", "");
        node.ok(&[
            "grant",
            "hello-secret",
            "GREETING_KEY",
            "--secret",
            "greeting",
            "--allow",
            "hmac",
        ]);
        node.ok(&[
            "grant",
            "webhook-verify",
            "GITHUB_WEBHOOK",
            "--secret",
            "webhook",
            "--allow",
            "hmac",
        ]);
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

        let calls = node.get("/probe/bench?binding=KEY&n=200000");
        assert_eq!(calls.status, 200, "{calls:?}");
        for line in calls.text().lines() {
            println!("host call, timed in the guest: {line}");
        }
    }
}
