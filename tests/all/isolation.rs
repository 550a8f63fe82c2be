//! What an untrusted function cannot do: see a key it only used through the
//! host, see the host's environment, outrun its limits, or hurt other
//! requests.

use crate::common;

use common::{Node, found_in, random_secret};

fn node_with_probe(secret: &[u8], extra: &str) -> Node {
    let mut node = Node::new();
    node.put_secret("k", secret);
    node.granted_probe("probe", "/p", "k", "hmac,reveal", extra);
    node.start();
    node
}

#[test]
fn guest_memory_holds_the_key_only_after_reveal() {
    let secret = random_secret();
    let node = node_with_probe(&secret, "");

    let after_hmac = node.get("/p/dump?binding=KEY&op=hmac");
    assert_eq!(after_hmac.status, 200, "{after_hmac:?}");
    assert!(
        after_hmac.body.len() >= 64 * 1024,
        "a whole linear memory: {} bytes",
        after_hmac.body.len()
    );
    assert_eq!(
        found_in(&secret, &after_hmac.body),
        Vec::<String>::new(),
        "hmac must not put the key in guest memory"
    );

    // The check can fail: after `reveal` the same dump finds the raw bytes.
    let after_reveal = node.get("/p/dump?binding=KEY&op=reveal");
    assert_eq!(after_reveal.status, 200);
    assert!(found_in(&secret, &after_reveal.body).contains(&"raw".to_owned()));

    // And a fresh instance carries nothing over from that request.
    let next = node.get("/p/dump?binding=KEY&op=none");
    assert_eq!(next.status, 200);
    assert_eq!(
        found_in(&secret, &next.body),
        Vec::<String>::new(),
        "residue from the previous request"
    );
}

#[test]
fn guests_get_nothing_ambient() {
    let node = node_with_probe(&random_secret(), "");
    let port = node.base.rsplit(':').next().unwrap().to_owned();
    let report = node.get(&format!("/p/ambient?port={port}"));
    assert_eq!(report.status, 200, "{report:?}");
    let text = report.text();
    for line in ["env 0", "args 0", "preopens 0"] {
        assert!(
            text.lines().any(|l| l == line),
            "expected `{line}` in:\n{text}"
        );
    }
    let files: Vec<&str> = text.lines().filter(|l| l.starts_with("file ")).collect();
    assert_eq!(files.len(), 6, "{text}");
    for line in files {
        assert!(line.contains("denied"), "{line}");
    }
    let tcp = text.lines().find(|l| l.starts_with("tcp ")).unwrap();
    assert!(tcp.contains("denied"), "{tcp}");
}

#[test]
fn an_endless_loop_is_cut_off_and_the_node_keeps_serving() {
    let node = node_with_probe(&random_secret(), "[limits]\ntimeout-ms = 300\n");
    let started = std::time::Instant::now();
    let reply = node.get("/p/spin");
    assert_eq!(reply.status, 504, "{reply:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(node.get("/p/ok").status, 200);
    assert_eq!(node.get("/p/hmac?binding=KEY").status, 200);
}

#[test]
fn memory_past_the_limit_fails_that_request_only() {
    let node = node_with_probe(&random_secret(), "[limits]\nmemory-mib = 16\n");
    let reply = node.get("/p/grow");
    assert_eq!(reply.status, 500, "{reply:?}");
    assert!(
        reply.text().contains("function `probe` failed"),
        "{reply:?}"
    );
    assert_eq!(node.get("/p/ok").status, 200);
}

#[test]
fn concurrent_failures_do_not_disturb_other_requests() {
    let node = node_with_probe(&random_secret(), "[limits]\ntimeout-ms = 500\n");
    std::thread::scope(|s| {
        let spinners: Vec<_> = (0..4)
            .map(|_| s.spawn(|| node.get("/p/spin").status))
            .collect();
        for _ in 0..20 {
            assert_eq!(node.get("/p/hmac?binding=KEY").status, 200);
        }
        for spinner in spinners {
            assert_eq!(spinner.join().unwrap(), 504);
        }
    });
}

#[test]
fn unknown_routes_are_404() {
    let node = node_with_probe(&random_secret(), "");
    assert_eq!(node.get("/nothing-here").status, 404);
    assert_eq!(
        node.get("/pp").status,
        404,
        "routes match whole path segments"
    );
    assert_eq!(node.get("/p").status, 200);
}

#[test]
fn a_function_in_an_endless_loop_does_not_stall_others_on_its_worker() {
    let mut node = Node::new();
    node.put_secret("k", &random_secret());
    node.granted_probe("probe", "/p", "k", "hmac", "[limits]\ntimeout-ms = 2000\n");
    // One worker thread: the loop and every other request share it.
    node.start_with_args(&["--workers", "1"]);
    assert_eq!(node.get("/p/ok").status, 200);
    std::thread::scope(|s| {
        let spinner = s.spawn(|| node.get("/p/spin").status);
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut slowest = std::time::Duration::ZERO;
        let mut served = 0;
        while !spinner.is_finished() && served < 30 {
            let started = std::time::Instant::now();
            assert_eq!(node.get("/p/ok").status, 200);
            slowest = slowest.max(started.elapsed());
            served += 1;
        }
        assert_eq!(spinner.join().unwrap(), 504, "the loop ran into its limit");
        eprintln!("{served} requests served while the loop ran, the slowest in {slowest:?}");
        // The worker polls its sockets whenever the loop yields (every 10
        // ms), not only every 61 turns of its tasks: a request used to wait
        // up to about 600 ms behind the loop.
        assert!(served >= 10, "{served} requests served while the loop ran");
        assert!(
            slowest < std::time::Duration::from_millis(250),
            "a request waited {slowest:?} behind the loop ({served} served)"
        );
    });
}
