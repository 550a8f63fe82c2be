//! Keys that never leave the host: signatures and sealing, end to end, checked
//! against peer libraries Keyhole did not write (Python's `cryptography` and
//! PyJWT).

use crate::common;

use common::{Node, artifacts, found_in, python};
use serde_json::Value;

/// Fresh keys from Python's `cryptography`: per kind, the PKCS#8 PEM, its
/// DER, and the public key as SPKI DER (hex).
const KEYGEN: &str = r#"
import json
from cryptography.hazmat.primitives.asymmetric import ed25519, ec, rsa
from cryptography.hazmat.primitives import serialization as s
def pem(k, f=s.PrivateFormat.PKCS8):
    return k.private_bytes(s.Encoding.PEM, f, s.NoEncryption()).decode()
def entry(k):
    return {
        "pem": pem(k),
        "der": k.private_bytes(s.Encoding.DER, s.PrivateFormat.PKCS8, s.NoEncryption()).hex(),
        "spki": k.public_key().public_bytes(s.Encoding.DER, s.PublicFormat.SubjectPublicKeyInfo).hex(),
    }
ed = ed25519.Ed25519PrivateKey.generate()
p256 = ec.generate_private_key(ec.SECP256R1())
p384 = ec.generate_private_key(ec.SECP384R1())
r = rsa.generate_private_key(public_exponent=65537, key_size=2048)
small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
out = {"ed25519": entry(ed), "p256": entry(p256), "p384": entry(p384), "rsa": entry(r), "rsa1024": entry(small)}
out["rsa"]["pkcs1"] = pem(r, s.PrivateFormat.TraditionalOpenSSL)
out["p256"]["sec1"] = pem(p256, s.PrivateFormat.TraditionalOpenSSL)
print(json.dumps(out))
"#;

/// Verifies a signature: argv = kind spki-hex signature-hex message.
/// Prints `verified` or `rejected`.
const VERIFY: &str = r#"
import sys
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils
from cryptography.hazmat.primitives.serialization import load_der_public_key
kind, spki, sig, msg = sys.argv[1], bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3]), sys.argv[4].encode()
key = load_der_public_key(spki)
try:
    if kind == "ed25519":
        key.verify(sig, msg)
    elif kind == "es256":
        assert len(sig) == 64, "ES256 signatures are r || s, 64 bytes"
        r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
        key.verify(utils.encode_dss_signature(r, s), msg, ec.ECDSA(hashes.SHA256()))
    else:
        key.verify(sig, msg, padding.PKCS1v15(), hashes.SHA256())
    print("verified")
except InvalidSignature:
    print("rejected")
"#;

/// Decodes and verifies a JWT with PyJWT: argv = token spki-hex alg.
/// Prints the header and the claims as JSON, or `rejected: <why>`.
const JWT_VERIFY: &str = r#"
import json, sys, jwt
from cryptography.hazmat.primitives.serialization import load_der_public_key
token, key, alg = sys.argv[1], load_der_public_key(bytes.fromhex(sys.argv[2])), sys.argv[3]
try:
    claims = jwt.decode(token, key=key, algorithms=[alg], options={"verify_aud": False})
    print(json.dumps({"header": jwt.get_unverified_header(token), "claims": claims}))
except jwt.InvalidTokenError as e:
    print("rejected: " + type(e).__name__)
"#;

/// Opens or seals with AES-256-GCM in the nonce || ciphertext || tag layout:
/// argv = open|seal key-hex data-hex aad.
const AES: &str = r#"
import os, sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
op, key, data, aad = sys.argv[1], bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3]), sys.argv[4].encode()
if op == "open":
    print(AESGCM(key).decrypt(data[:12], data[12:], aad).decode())
else:
    nonce = os.urandom(12)
    print((nonce + AESGCM(key).encrypt(nonce, data, aad)).hex())
"#;

fn keys() -> Value {
    serde_json::from_str(&python(KEYGEN, &[])).unwrap()
}

fn text(keys: &Value, kind: &str, field: &str) -> String {
    keys[kind][field].as_str().unwrap().to_owned()
}

fn verify(kind: &str, spki: &str, signature: &str, message: &str) -> String {
    python(VERIFY, &[kind, spki, signature, message])
        .trim()
        .to_owned()
}

/// Deploys the probe as `function` requesting every operation on each
/// granted binding and on `TOKEN`, and grants each `(binding, secret, ops)`.
fn probe_with(node: &Node, function: &str, grants: &[(&str, &str, &str)]) {
    let mut manifest = String::new();
    let bindings = grants.iter().map(|(b, _, _)| *b).chain(["TOKEN"]);
    for binding in bindings {
        manifest += &format!(
            "[bindings.{binding}]\nallow = [\"hmac\", \"sign\", \"seal\", \"inject\", \"reveal\"]\n"
        );
    }
    node.deploy_probe(function, &format!("/{function}"), &manifest);
    for (binding, secret, ops) in grants {
        node.ok(&[
            "grant", function, binding, "--secret", secret, "--allow", ops,
        ]);
    }
}

fn put_kind(node: &Node, name: &str, kind: &str, value: &[u8]) -> std::process::Output {
    let file = node.data.path().join(format!("{name}.key"));
    std::fs::write(&file, value).unwrap();
    let out = node.cli(&[
        "secret",
        "put",
        name,
        "--kind",
        kind,
        "--from-file",
        file.to_str().unwrap(),
    ]);
    std::fs::remove_file(file).unwrap();
    out
}

fn put_ok(node: &Node, name: &str, kind: &str, value: &[u8]) {
    let out = put_kind(node, name, kind, value);
    assert!(
        out.status.success(),
        "put {name} --kind {kind}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn signatures_from_the_host_verify_with_a_peer_library() {
    let keys = keys();
    let mut node = Node::new();
    put_ok(
        &node,
        "ed",
        "ed25519",
        text(&keys, "ed25519", "pem").as_bytes(),
    );
    put_ok(
        &node,
        "ec",
        "ecdsa-p256",
        text(&keys, "p256", "pem").as_bytes(),
    );
    put_ok(&node, "rsa8", "rsa", text(&keys, "rsa", "pem").as_bytes());
    put_ok(&node, "rsa1", "rsa", text(&keys, "rsa", "pkcs1").as_bytes());
    probe_with(
        &node,
        "signer",
        &[
            ("ED", "ed", "sign"),
            ("EC", "ec", "sign"),
            ("RSA", "rsa8", "sign"),
            ("RSA1", "rsa1", "sign"),
        ],
    );
    node.start();

    for (binding, alg, kind, key) in [
        ("ED", "ed25519", "ed25519", "ed25519"),
        ("EC", "es256", "es256", "p256"),
        ("RSA", "rs256", "rs256", "rsa"),
        ("RSA1", "rs256", "rs256", "rsa"),
    ] {
        let spki = text(&keys, key, "spki");
        let public = node.get(&format!("/signer/public-key?binding={binding}"));
        assert_eq!(public.status, 200, "{public:?}");
        assert_eq!(
            public.text().trim(),
            spki,
            "{binding}: SPKI as Python derives it"
        );

        let signed = node.get(&format!("/signer/sign?binding={binding}&alg={alg}"));
        assert_eq!(signed.status, 200, "{binding}: {signed:?}");
        let signature = signed.text().trim().to_owned();
        assert_eq!(
            verify(kind, &spki, &signature, "probe"),
            "verified",
            "{binding}"
        );
        assert_eq!(
            verify(kind, &spki, &signature, "probe!"),
            "rejected",
            "{binding}: the verifier must reject another message"
        );
        let mut flipped = hex::decode(&signature).unwrap();
        flipped[10] ^= 1;
        assert_eq!(
            verify(kind, &spki, &hex::encode(flipped), "probe"),
            "rejected",
            "{binding}: the verifier must reject a changed signature"
        );
    }

    // Whole JWTs, verified by PyJWT.
    for (binding, alg, jwt_alg, key) in [
        ("EC", "es256", "ES256", "p256"),
        ("RSA", "rs256", "RS256", "rsa"),
        ("ED", "ed25519", "EdDSA", "ed25519"),
    ] {
        let token = node.get(&format!("/signer/jwt?binding={binding}&alg={alg}"));
        assert_eq!(token.status, 200, "{token:?}");
        let decoded = python(
            JWT_VERIFY,
            &[token.text().trim(), &text(&keys, key, "spki"), jwt_alg],
        );
        let decoded: Value = serde_json::from_str(&decoded)
            .unwrap_or_else(|_| panic!("{binding}: PyJWT said {decoded}"));
        assert_eq!(decoded["header"]["alg"], jwt_alg);
        assert_eq!(decoded["header"]["kid"], "probe");
        assert_eq!(decoded["claims"]["sub"], "probe");
    }
}

#[test]
fn the_jwt_sign_example_issues_tokens_pyjwt_accepts() {
    let keys = keys();
    let mut node = Node::new();
    put_ok(
        &node,
        "jwt-es",
        "ecdsa-p256",
        text(&keys, "p256", "pem").as_bytes(),
    );
    put_ok(&node, "jwt-rs", "rsa", text(&keys, "rsa", "pem").as_bytes());
    node.ok(&["deploy", artifacts::JWT_SIGN_MANIFEST]);
    for (binding, secret) in [("JWT_ES256_KEY", "jwt-es"), ("JWT_RS256_KEY", "jwt-rs")] {
        node.ok(&[
            "grant", "jwt-sign", binding, "--secret", secret, "--allow", "sign",
        ]);
    }
    node.start();

    let unix_now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    for (alg, jwt_alg, key) in [("es256", "ES256", "p256"), ("rs256", "RS256", "rsa")] {
        let before = unix_now();
        let token = node.get(&format!("/token?sub=alice&alg={alg}"));
        let after = unix_now();
        assert_eq!(token.status, 200, "{token:?}");
        let spki = text(&keys, key, "spki");
        let decoded: Value =
            serde_json::from_str(&python(JWT_VERIFY, &[token.text().trim(), &spki, jwt_alg]))
                .unwrap();
        let claims = &decoded["claims"];
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["iss"], "keyhole-jwt-sign");
        let exp = claims["exp"].as_u64().unwrap();
        // Five minutes after the moment the token was made.
        assert!(
            (before + 300..=after + 300).contains(&exp),
            "exp {exp}, made between {before} and {after}"
        );

        // A token whose claims were edited no longer verifies.
        let parts: Vec<String> = token.text().trim().split('.').map(str::to_owned).collect();
        let forged_claims = base64_url(br#"{"sub":"mallory","exp":9999999999}"#);
        let forged = format!("{}.{forged_claims}.{}", parts[0], parts[2]);
        assert_eq!(
            python(JWT_VERIFY, &[&forged, &spki, jwt_alg]).trim(),
            "rejected: InvalidSignatureError"
        );
    }
    // The published verifying key is the PEM of the key's public half.
    let pem = node.get("/token/public-key?alg=es256");
    assert!(
        pem.text().starts_with("-----BEGIN PUBLIC KEY-----"),
        "{pem:?}"
    );
    assert_eq!(node.get("/token?sub=a%22b").status, 400);
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn sealing_interoperates_with_aes_gcm_and_refuses_tampering() {
    let mut node = Node::new();
    let key: [u8; 32] = rand::random();
    let key_hex = hex::encode(key);
    put_ok(&node, "cookie-key", "aes-256", &key);
    node.put_secret("short-key", &[7u8; 16]);
    probe_with(
        &node,
        "sealer",
        &[
            ("AES", "cookie-key", "seal"),
            ("SHORT", "short-key", "seal"),
        ],
    );
    node.start();

    // Keyhole seals; Python's AESGCM opens it.
    let sealed = node.get("/sealer/seal?binding=AES");
    assert_eq!(sealed.status, 200, "{sealed:?}");
    let sealed = sealed.text().trim().to_owned();
    assert_eq!(
        sealed.len(),
        2 * (12 + 15 + 16),
        "nonce || ciphertext || tag"
    );
    assert_eq!(
        python(AES, &["open", &key_hex, &sealed, "probe-aad"]).trim(),
        "probe-plaintext"
    );
    // A fresh nonce every time.
    assert_ne!(node.get("/sealer/seal?binding=AES").text().trim(), sealed);

    // Python seals; Keyhole opens it.
    let theirs = python(AES, &["seal", &key_hex, &hex::encode("from python"), "ctx"]);
    let opened = node.get(&format!(
        "/sealer/open?binding=AES&aad=ctx&sealed={}",
        theirs.trim()
    ));
    assert_eq!((opened.status, opened.text().trim()), (200, "from python"));

    // Tampering anywhere, a wrong aad, or truncation: an error, never garbage.
    let mut tampered = hex::decode(&sealed).unwrap();
    for at in [0, 12, tampered.len() - 1] {
        tampered[at] ^= 0x40;
        let reply = node.get(&format!(
            "/sealer/open?binding=AES&sealed={}",
            hex::encode(&tampered)
        ));
        assert_eq!(reply.status, 403, "byte {at}: {reply:?}");
        assert!(reply.text().contains("invalid-argument"), "{reply:?}");
        assert!(reply.text().contains("does not open"), "{reply:?}");
        tampered[at] ^= 0x40;
    }
    let wrong_aad = node.get(&format!(
        "/sealer/open?binding=AES&aad=other&sealed={sealed}"
    ));
    assert_eq!(wrong_aad.status, 403, "{wrong_aad:?}");
    let truncated = node.get(&format!(
        "/sealer/open?binding=AES&sealed={}",
        &sealed[..20]
    ));
    assert_eq!(truncated.status, 403, "{truncated:?}");

    // A secret that is not a 32-byte key is refused at call time, clearly.
    let short = node.get("/sealer/seal?binding=SHORT");
    assert_eq!(short.status, 403, "{short:?}");
    assert!(
        short
            .text()
            .contains("exactly 32 bytes; this secret is 16 bytes"),
        "{short:?}"
    );
}

#[test]
fn the_session_seal_example_round_trips_a_cookie() {
    let mut node = Node::new();
    put_ok(&node, "session-key", "aes-256", &rand::random::<[u8; 32]>());
    node.deploy_granted(
        artifacts::SESSION_SEAL_MANIFEST,
        "session-seal",
        "SESSION_KEY",
        "session-key",
        "seal",
    );
    node.start();

    let login = node.post("/session/login?user=alice", &[], b"");
    assert_eq!(login.status, 200, "{login:?}");
    let cookie = login.text().trim().to_owned();
    assert!(cookie.starts_with("session="), "{cookie}");
    assert!(!cookie.contains("alice"), "the cookie is sealed, not plain");
    let hello = node.post("/session", &[("cookie", &cookie)], b"");
    assert_eq!((hello.status, hello.text()), (200, "hello alice\n".into()));

    let mut forged = cookie.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert_eq!(
        node.post("/session", &[("cookie", &forged)], b"").status,
        401
    );
    assert_eq!(node.post("/session", &[], b"").status, 401);
}

#[test]
fn each_operation_needs_its_own_grant() {
    let keys = keys();
    let mut node = Node::new();
    put_ok(
        &node,
        "ec",
        "ecdsa-p256",
        text(&keys, "p256", "pem").as_bytes(),
    );
    put_ok(&node, "aes", "aes-256", &[3u8; 32]);
    // Granted only hmac: every new operation is `denied`.
    probe_with(
        &node,
        "narrow",
        &[("EC", "ec", "hmac"), ("AES", "aes", "hmac,reveal")],
    );
    node.start();

    for (path, binding, op) in [
        ("sign?alg=es256", "EC", "sign"),
        ("public-key?", "EC", "sign"),
        ("jwt?alg=es256", "EC", "sign"),
        ("seal?", "AES", "seal"),
        ("open?sealed=00", "AES", "seal"),
        ("token?", "AES", "inject"),
    ] {
        let denied = node.get(&format!("/narrow/{path}&binding={binding}"));
        assert_eq!(denied.status, 403, "{path}: {denied:?}");
        let text = denied.text();
        assert!(text.contains("error denied"), "{path}: {text}");
        assert!(
            text.contains(&format!("not granted `{op}`")),
            "{path}: {text}"
        );

        let ungranted = node.get(&format!("/narrow/{path}&binding=NOPE"));
        assert!(
            ungranted.text().contains("error not-granted"),
            "{path}: {ungranted:?}"
        );
    }
}

#[test]
fn keys_of_the_wrong_kind_are_refused_clearly() {
    let keys = keys();
    let node = Node::new();
    put_ok(&node, "placeholder", "opaque", b"any bytes");
    let refusals: &[(&str, Vec<u8>, &str)] = &[
        (
            "ed25519",
            b"hunter2 is not a key".to_vec(),
            "not a PEM private key",
        ),
        (
            "ecdsa-p256",
            text(&keys, "p384", "pem").into_bytes(),
            "curve P-384",
        ),
        (
            "ed25519",
            text(&keys, "rsa", "pem").into_bytes(),
            "an RSA private key, but this needs an Ed25519 private key",
        ),
        (
            "ecdsa-p256",
            text(&keys, "p256", "sec1").into_bytes(),
            "openssl pkcs8 -topk8",
        ),
        (
            "aes-256",
            vec![1u8; 16],
            "exactly 32 bytes; this secret is 16 bytes",
        ),
        (
            "rsa",
            text(&keys, "ed25519", "pem").into_bytes(),
            "an Ed25519 private key, but this needs an RSA private key",
        ),
    ];
    for (kind, value, why) in refusals {
        let out = put_kind(&node, "bad", kind, value);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--kind {kind} accepted a bad key");
        assert!(stderr.contains(why), "--kind {kind}: {stderr}");
        assert!(stderr.contains("nothing was stored"), "{stderr}");
        // The error never quotes the value.
        let body_line = String::from_utf8_lossy(value)
            .lines()
            .nth(1)
            .unwrap_or("hunter2")
            .to_owned();
        assert!(!stderr.contains(&body_line), "{stderr}");
    }
    let listed = node.ok(&["secret", "list"]);
    assert!(!listed.contains("bad"), "nothing half-stored: {listed}");

    let bad_kind = node.cli(&["secret", "put", "x", "--kind", "dsa"]);
    assert!(!bad_kind.status.success());
    assert!(String::from_utf8_lossy(&bad_kind.stderr).contains("unknown key kind `dsa`"));

    // Accepted keys are listed with their kind.
    put_ok(
        &node,
        "rsa-pkcs1",
        "rsa",
        text(&keys, "rsa", "pkcs1").as_bytes(),
    );
    put_ok(&node, "cookie", "aes-256", &[9u8; 32]);
    let listed = node.ok(&["secret", "list", "--json"]);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let kinds: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("cookie", "aes-256"),
            ("placeholder", "opaque"),
            ("rsa-pkcs1", "rsa")
        ]
    );
}

#[test]
fn keys_of_the_wrong_kind_fail_at_call_time_without_kind() {
    let keys = keys();
    let mut node = Node::new();
    node.put_secret("ed", text(&keys, "ed25519", "pem").as_bytes());
    node.put_secret("password", b"correct horse battery staple");
    probe_with(
        &node,
        "caller",
        &[("ED", "ed", "sign,seal"), ("PW", "password", "sign")],
    );
    node.start();

    let wrong_alg = node.get("/caller/sign?binding=ED&alg=es256");
    assert_eq!(wrong_alg.status, 403);
    assert!(
        wrong_alg
            .text()
            .contains("invalid-argument: binding `ED`: cannot sign ecdsa-p256-sha256: the secret is an Ed25519 private key, but this needs an ECDSA P-256 private key"),
        "{wrong_alg:?}"
    );
    let not_pem = node.get("/caller/sign?binding=PW&alg=ed25519");
    assert!(
        not_pem
            .text()
            .contains("invalid-argument: binding `PW`: not a PEM private key"),
        "{not_pem:?}"
    );
    assert!(!not_pem.text().contains("horse"));
    let not_aes = node.get("/caller/seal?binding=ED");
    assert!(not_aes.text().contains("exactly 32 bytes"), "{not_aes:?}");
    assert!(!node.logs().contains("horse"));
}

#[test]
fn no_operation_but_reveal_puts_key_bytes_in_guest_memory() {
    let keys = keys();
    let upstream = common::Upstream::start();
    let mut node = Node::new();
    let aes: [u8; 32] = rand::random();
    let token = common::random_token();
    put_ok(
        &node,
        "ed",
        "ed25519",
        text(&keys, "ed25519", "pem").as_bytes(),
    );
    put_ok(
        &node,
        "ec",
        "ecdsa-p256",
        text(&keys, "p256", "pem").as_bytes(),
    );
    put_ok(&node, "rsa", "rsa", text(&keys, "rsa", "pem").as_bytes());
    put_ok(&node, "aes", "aes-256", &aes);
    node.put_secret("token", token.as_bytes());
    probe_with(
        &node,
        "mem",
        &[
            ("ED", "ed", "sign"),
            ("EC", "ec", "sign"),
            ("RSA", "rsa", "sign"),
            ("AES", "aes", "seal"),
        ],
    );
    node.ok(&[
        "grant",
        "mem",
        "TOKEN",
        "--secret",
        "token",
        "--allow",
        "inject",
        "--egress",
        &format!("http://127.0.0.1:{}", upstream.port),
    ]);
    node.start_with_loopback_outbound();

    let pem = |kind: &str| text(&keys, kind, "pem").into_bytes();
    let der = |kind: &str| hex::decode(text(&keys, kind, "der")).unwrap();
    let cases: Vec<(&str, String, Vec<Vec<u8>>)> = vec![
        (
            "ED",
            "sign-ed25519".into(),
            vec![pem("ed25519"), der("ed25519")],
        ),
        (
            "ED",
            "public-key".into(),
            vec![pem("ed25519"), der("ed25519")],
        ),
        ("EC", "sign-es256".into(), vec![pem("p256"), der("p256")]),
        ("RSA", "sign-rs256".into(), vec![pem("rsa"), der("rsa")]),
        ("AES", "seal".into(), vec![aes.to_vec()]),
        ("AES", "open".into(), vec![aes.to_vec()]),
        (
            "TOKEN",
            format!("inject&url={}/mem", upstream.url()),
            vec![token.clone().into_bytes()],
        ),
    ];
    for (binding, op, secrets) in cases {
        let dump = node.get(&format!("/mem/dump?binding={binding}&op={op}"));
        assert_eq!(dump.status, 200, "{op}: {dump:?}");
        assert!(dump.body.len() > 1 << 16, "{op}: a whole memory");
        for secret in secrets {
            let found = found_in(&secret, &dump.body);
            assert!(
                found.is_empty(),
                "{op}: secret in guest memory as {found:?}"
            );
        }
    }
    // The injected request did go out with the value: the check above is
    // about the guest, not about the token not being used.
    let sent = upstream.received();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].head.contains(&format!("Bearer {token}")));

    // The control: after reveal, the same dump does show the secret.
    node.ok(&[
        "grant",
        "mem",
        "AES",
        "--secret",
        "aes",
        "--allow",
        "seal,reveal",
    ]);
    let revealed = node.wait_for("/mem/dump?binding=AES&op=reveal", |r| r.status == 200);
    assert!(!found_in(&aes, &revealed.body).is_empty());
}
