//! Bearer tokens injected by the host, against real upstreams on loopback
//! that record what they receive.

mod common;

use common::{Node, Upstream, artifacts, random_token};

/// Deploys the probe as `function` requesting `API` for `inject`, and grants
/// it secret `secret` with `egress`.
fn injecting_probe(node: &Node, function: &str, secret: &str, egress: &str) {
    node.deploy_probe(
        function,
        &format!("/{function}"),
        "[bindings.API]\nallow = [\"inject\"]\n",
    );
    node.ok(&[
        "grant", function, "API", "--secret", secret, "--allow", "inject", "--egress", egress,
    ]);
}

fn token_from(reply: &common::Reply) -> String {
    reply
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("token "))
        .expect("the probe reports the token it used")
        .to_owned()
}

#[test]
fn the_secret_reaches_allowed_hosts_only_and_only_in_headers() {
    let allowed = Upstream::start();
    let other = Upstream::start();
    let secret = random_token();
    let mut node = Node::new();
    node.put_secret("api-token", secret.as_bytes());
    injecting_probe(
        &node,
        "caller",
        "api-token",
        &format!("127.0.0.1:{}", allowed.port),
    );
    node.start();

    // To the allowed host: the header carries the real value.
    let sent = node.get(&format!(
        "/caller/inject?binding=API&url={}/v1",
        allowed.url()
    ));
    assert_eq!(sent.status, 200, "{sent:?}");
    assert!(sent.text().starts_with("status 200"), "{sent:?}");
    let token = token_from(&sent);
    assert!(token.starts_with("keyhole-inject-"), "{token}");
    let received = allowed.received();
    assert_eq!(received.len(), 1);
    let head = received[0].head.to_ascii_lowercase();
    assert!(
        head.contains(&format!(
            "authorization: bearer {}",
            secret.to_ascii_lowercase()
        )),
        "{head}"
    );
    assert!(!head.contains("keyhole-inject-"), "{head}");
    assert!(
        received[0].head.contains("x-probe: 1"),
        "other headers untouched"
    );

    // To any other host: the guest sees an error naming binding and host,
    // and nothing is sent — not even a connection.
    for url in [
        other.url(),
        format!("http://localhost:{}", allowed.port),
        format!("http://127.0.0.1:{}", allowed.port + 1),
    ] {
        let refused = node.get(&format!("/caller/inject?binding=API&url={url}/steal"));
        assert_eq!(refused.status, 502, "{url}: {refused:?}");
        let host = url.strip_prefix("http://").unwrap();
        assert!(
            refused
                .text()
                .contains(&format!("binding `API` may not be sent to `{host}`")),
            "{url}: {refused:?}"
        );
        assert!(!refused.text().contains(&secret));
    }
    assert_eq!(other.connections(), 0, "nothing reached the other host");
    assert_eq!(
        allowed.received().len(),
        1,
        "nor the allowed host by another name"
    );

    // In a URL or a body the token is never substituted.
    let in_url = node.get(&format!(
        "/caller/inject?binding=API&place=url&url={}/q",
        allowed.url()
    ));
    assert_eq!(in_url.status, 200, "{in_url:?}");
    let in_body = node.get(&format!(
        "/caller/inject?binding=API&place=body&url={}/b",
        allowed.url()
    ));
    assert_eq!(in_body.status, 200, "{in_body:?}");
    let received = allowed.received();
    assert_eq!(received.len(), 3);
    for request in &received[1..] {
        let bytes = String::from_utf8_lossy(&request.bytes()).into_owned();
        assert!(bytes.contains("keyhole-inject-"), "{bytes}");
        assert!(!bytes.contains(&secret), "{bytes}");
    }
    assert!(received[1].head.starts_with("GET /q?key=keyhole-inject-"));

    // A token replayed in a later request, or in another function, is inert.
    injecting_probe(
        &node,
        "neighbour",
        "api-token",
        &format!("127.0.0.1:{}", allowed.port),
    );
    for function in ["caller", "neighbour"] {
        let replay = node.wait_for(
            &format!(
                "/{function}/inject?binding=API&token={token}&url={}/replay",
                allowed.url()
            ),
            |r| r.status == 200,
        );
        assert_eq!(token_from(&replay), token);
        let last = allowed.received().pop().unwrap();
        assert!(
            last.head.contains(&format!("Bearer {token}")),
            "{}",
            last.head
        );
        assert!(!last.head.contains(&secret), "{function}: {}", last.head);
    }

    // The node logged the refusals, named, and never the value.
    let logs = node.logs();
    assert!(
        logs.contains("outgoing request refused") && logs.contains("binding=\"API\""),
        "{logs}"
    );
    assert!(!logs.contains(&secret), "{logs}");
}

#[test]
fn wildcard_and_default_port_rules_apply() {
    let upstream = Upstream::start();
    let secret = random_token();
    let mut node = Node::new();
    node.put_secret("api-token", secret.as_bytes());
    // A host without a port means port 80 for http: the loopback upstream's
    // port is not covered, and a wildcard never covers an IP literal.
    injecting_probe(&node, "strict", "api-token", "127.0.0.1,*.0.0.1");
    node.start();
    let refused = node.get(&format!(
        "/strict/inject?binding=API&url={}/x",
        upstream.url()
    ));
    assert_eq!(refused.status, 502, "{refused:?}");
    assert!(
        refused
            .text()
            .contains("its grant allows: 127.0.0.1,*.0.0.1"),
        "{refused:?}"
    );
    assert_eq!(upstream.connections(), 0);
}

#[test]
fn grants_for_inject_need_an_egress_list() {
    let node = Node::new();
    node.put_secret("api-token", b"t");
    node.deploy_probe(
        "f",
        "/f",
        "[bindings.API]\nallow = [\"inject\", \"hmac\"]\n",
    );
    let grant = |extra: &[&str]| {
        let mut args = vec!["grant", "f", "API", "--secret", "api-token"];
        args.extend_from_slice(extra);
        let out = node.cli(&args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, text) = grant(&["--allow", "inject"]);
    assert!(!ok && text.contains("`inject` needs --egress"), "{text}");
    let (ok, text) = grant(&["--allow", "hmac", "--egress", "api.example.com"]);
    assert!(
        !ok && text.contains("--egress applies only to the `inject`"),
        "{text}"
    );
    let (ok, text) = grant(&[
        "--allow",
        "inject",
        "--egress",
        "https://api.example.com/v1",
    ]);
    assert!(
        !ok && text.contains("invalid egress host `https://api.example.com/v1`"),
        "{text}"
    );
    let (ok, text) = grant(&["--allow", "inject", "--egress", "*.com"]);
    assert!(!ok && text.contains("at least two labels"), "{text}");
    assert!(
        node.ok(&["grants", "f"]).lines().count() <= 1,
        "nothing granted"
    );

    let (ok, text) = grant(&[
        "--allow",
        "inject,hmac",
        "--egress",
        "api.example.com, *.stripe.com:8443",
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains("[hmac,inject] egress [api.example.com,*.stripe.com:8443]"),
        "{text}"
    );
    let listed = node.ok(&["grants", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(
        listed[0]["egress"],
        serde_json::json!(["api.example.com", "*.stripe.com:8443"])
    );
    assert_eq!(listed[0]["allow"], serde_json::json!(["hmac", "inject"]));
}

#[test]
fn the_api_proxy_example_forwards_with_the_token_injected() {
    let upstream = Upstream::start();
    let elsewhere = Upstream::start();
    let secret = random_token();
    let mut node = Node::new();
    node.put_secret("api-token", secret.as_bytes());
    node.put_secret("api-upstream", upstream.url().as_bytes());
    node.ok(&["deploy", artifacts::API_PROXY_MANIFEST]);
    node.ok(&[
        "grant",
        "api-proxy",
        "API_TOKEN",
        "--secret",
        "api-token",
        "--allow",
        "inject",
        "--egress",
        &format!("127.0.0.1:{}", upstream.port),
    ]);
    node.ok(&[
        "grant",
        "api-proxy",
        "UPSTREAM_URL",
        "--secret",
        "api-upstream",
        "--allow",
        "reveal",
    ]);
    node.start();

    let reply = node.get("/proxy/v1/items?limit=2");
    assert_eq!((reply.status, reply.text()), (200, "upstream ok\n".into()));
    let received = upstream.received();
    assert_eq!(received.len(), 1);
    assert!(
        received[0]
            .head
            .starts_with("GET /v1/items?limit=2 HTTP/1.1")
    );
    assert!(received[0].head.contains(&format!("Bearer {secret}")));

    // Pointed elsewhere (a compromised config, a hostile redirect), the
    // function still cannot take the token along.
    node.put_secret("api-upstream", elsewhere.url().as_bytes());
    let refused = node.wait_for("/proxy/v1/items", |r| r.status != 200);
    assert_eq!(refused.status, 502, "{refused:?}");
    assert!(
        refused
            .text()
            .contains("binding `API_TOKEN` may not be sent to"),
        "{refused:?}"
    );
    assert_eq!(elsewhere.connections(), 0);
    assert!(!node.logs().contains(&secret));
}
