//! Bearer tokens injected by the host, against real upstreams on loopback
//! that record what they receive.

use crate::common;

use common::{Node, Upstream, artifacts, random_token};

/// Deploys the probe as `function` requesting `API` for `inject`, and grants
/// it secret `secret` with `egress`; with `outbound`, it also asks to call
/// those hosts without a token, and an operator approves them.
fn injecting_probe(node: &Node, function: &str, secret: &str, egress: &str, outbound: &[&str]) {
    let mut extra = "[bindings.API]\nallow = [\"inject\"]\n".to_owned();
    if !outbound.is_empty() {
        extra += &Node::outbound_section(outbound);
    }
    node.deploy_probe(function, &format!("/{function}"), &extra);
    node.ok(&[
        "grant", function, "API", "--secret", secret, "--allow", "inject", "--egress", egress,
    ]);
    if !outbound.is_empty() {
        node.ok(&["approve", function]);
    }
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
    // Tokens go to the allowed upstream; plain requests (a token in a URL
    // or a body, a replayed token) need the function's approved outbound
    // list, which names the same upstream.
    let upstream = format!("http://127.0.0.1:{}", allowed.port);
    injecting_probe(&node, "caller", "api-token", &upstream, &[&upstream]);
    node.start_with_loopback_outbound();

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
        assert!(
            refused
                .text()
                .contains(&format!("binding `API` may not be sent to `{url}`")),
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
    injecting_probe(&node, "neighbour", "api-token", &upstream, &[&upstream]);
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
    // A host without a scheme means https, without a port the scheme's
    // default port: the plain-http loopback upstream is not covered, and a
    // wildcard never covers an IP literal.
    injecting_probe(&node, "strict", "api-token", "127.0.0.1,*.0.0.1", &[]);
    node.start_with_loopback_outbound();
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
        &format!("http://127.0.0.1:{}", upstream.port),
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
    node.start_with_loopback_outbound();

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

/// Issue 23 §2. On the old main a guest's plain request went wherever it
/// said: here the node's own admin API on loopback answered it (the guest
/// saw `status 401` and the node recorded an unauthenticated admin request),
/// and cloud metadata, private services or the node's own listener would
/// have answered as readily. Now nothing leaves unless the manifest asked
/// for the host and an operator approved it, and the address the name
/// resolves to is checked and connected to: loopback (even by the name
/// `localhost`) only where the operator allows it, and the node's own
/// listeners never.
#[test]
fn outgoing_requests_are_denied_by_default_and_checked_at_their_address() {
    let upstream = Upstream::start();
    let up = format!("http://127.0.0.1:{}", upstream.port);
    let by_name = format!("http://localhost:{}", upstream.port);
    let mut node = Node::new();
    node.deploy_probe("plain", "/plain", "");
    node.start_admin();
    let fetch = |node: &Node, function: &str, url: &str| {
        node.get(&format!("/{function}/inject?token=plain&url={url}/x"))
    };

    // A function that asked for nothing reaches nothing: not the admin API,
    // not an upstream.
    for url in [node.admin.clone(), up.clone()] {
        let refused = fetch(&node, "plain", &url);
        assert_eq!(refused.status, 502, "{url}: {refused:?}");
        assert!(
            refused.text().contains("no approved outbound hosts")
                && refused.text().contains("nothing was sent"),
            "{url}: {refused:?}"
        );
    }
    // Asking is not enough: the operator approves.
    node.deploy_probe("asks", "/asks", &Node::outbound_section(&[&up, &by_name]));
    let pending = node.wait_for(&format!("/asks/inject?token=plain&url={up}/x"), |r| {
        r.status != 404
    });
    assert_eq!(pending.status, 502, "{pending:?}");
    let listed = node.ok(&["functions"]);
    assert!(listed.contains(":pending"), "{listed}");
    let out = node.cli(&["approve", "asks", "--digest", &"0".repeat(32)]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is deployed with component sha256"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let approved = node.ok(&["approve", "asks"]);
    assert!(approved.contains("outbound http://127.0.0.1"), "{approved}");
    // Approved, but loopback is not a public address: refused at the
    // address, also when the name only resolves there.
    for url in [&up, &by_name] {
        let refused = node.wait_for(&format!("/asks/inject?token=plain&url={url}/x"), |r| {
            r.text().contains("may not be reached")
        });
        assert_eq!(refused.status, 502, "{url}: {refused:?}");
        assert!(
            refused.text().contains("loopback address")
                && refused.text().contains("--outbound-allow-ip"),
            "{url}: {refused:?}"
        );
    }
    assert_eq!(upstream.connections(), 0, "nothing reached the upstream");
    let trail = node.ok(&["audit", "--json"]);
    assert!(
        !trail.contains("(unauthenticated)"),
        "the admin API was reached: {trail}"
    );
    let metrics = node.admin_request(
        "GET",
        "/metrics",
        Some(&node.token(&["--role", "auditor"])),
        b"",
    );
    assert!(
        metrics
            .text()
            .contains("keyhole_outbound_refused_total{function=\"plain\"} 2"),
        "{}",
        metrics.text()
    );

    // The operator allows loopback: the approved hosts answer, by address
    // and by name, each request marked as having passed one node.
    node.kill();
    node.spawn_admin_with(&["--outbound-allow-ip", "127.0.0.1"]);
    for url in [&up, &by_name] {
        let sent = fetch(&node, "asks", url);
        assert_eq!(sent.status, 200, "{url}: {sent:?}");
        assert!(sent.text().starts_with("status 200"), "{sent:?}");
    }
    let received = upstream.received();
    assert_eq!(received.len(), 2);
    assert!(
        received[0].head.contains("keyhole-hops: 1"),
        "{}",
        received[0].head
    );
    // Still nothing unapproved, and never the node's own listeners, even
    // when approved and inside an allowed network.
    assert_eq!(fetch(&node, "plain", &up).status, 502);
    node.deploy_probe(
        "selfish",
        "/selfish",
        &Node::outbound_section(&[&node.base, &node.admin]),
    );
    node.ok(&["approve", "selfish"]);
    for url in [node.base.clone(), node.admin.clone()] {
        // Until the node has loaded both the deploy and the approval, it
        // answers 404 or refuses for want of approval.
        let refused = node.wait_for(&format!("/selfish/inject?token=plain&url={url}/x"), |r| {
            r.status != 404 && !r.text().contains("no approved outbound hosts")
        });
        assert_eq!(refused.status, 502, "{url}: {refused:?}");
        assert!(
            refused.text().contains("own listener"),
            "{url}: {refused:?}"
        );
    }
    let trail = node.ok(&["audit", "--json"]);
    assert!(!trail.contains("(unauthenticated)"), "{trail}");

    // A request that already passed through MAX_HOPS nodes, or that lies
    // about it, is refused before any instance runs.
    for hops in ["4", "255", "x"] {
        let looped = node.post("/asks/ok", &[("keyhole-hops", hops)], b"");
        assert_eq!(looped.status, 508, "{hops}: {looped:?}");
    }
    assert_eq!(
        node.post("/asks/ok", &[("keyhole-hops", "3")], b"").status,
        200
    );
}
