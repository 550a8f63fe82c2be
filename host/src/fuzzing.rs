//! Entry points for the fuzz targets in `fuzz/` and for the test that
//! replays their committed corpora (`tests/fuzz_corpora.rs`).
//!
//! Each takes arbitrary bytes and panics only when an invariant breaks:
//! a parser that panics on hostile input, a refused request that still
//! parsed, a secrets call that answers differently from its grant, or a
//! secret value that shows up in an error. Kept in the library so the
//! fuzzer and the replay test run exactly the same checks.

use crate::admin::wire;
use crate::crypto::material::SecretMaterial;
use crate::crypto::secret_value::SecretValue;
use crate::engine::bindings::secrets::{Algorithm, Error, Host, HostSecret};
use crate::node::observe::Observer;
use crate::operations::{Operation, OperationSet};
use crate::outbound::egress::EgressList;
use crate::outbound::injection::MAX_TOKENS;
use crate::secrets::{
    BoundSecret, FunctionSecrets, MAX_BINDING_LEN, MAX_OPEN_HANDLES, SecretHandle, SecretsCtx,
    SecretsView, message,
};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use wasmtime::component::Resource;

/// Parses `data` as a manifest: any input gets a manifest or an error
/// naming a line of the file, never a panic.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz/keyhole.toml");
    match crate::deploy::manifest::parse(text, path, Path::new("fuzz")) {
        Ok(manifest) => {
            assert!(
                !manifest.routes.is_empty(),
                "a manifest with no routes parsed"
            );
        }
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains("fuzz/keyhole.toml"),
                "an error that does not name the file: {message}"
            );
        }
    }
}

/// Splits `data` into an admin request (method, path, query, body) and
/// parses it: a request either parses and encodes back to one that parses
/// the same way, or is refused with a client error (4xx).
pub fn admin_request(data: &[u8]) {
    const METHODS: [&str; 6] = ["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD"];
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let method = METHODS[usize::from(selector) % METHODS.len()];
    let (head, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(head) = std::str::from_utf8(head) else {
        return;
    };
    let (path, query) = match head.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (head, None),
    };
    match wire::parse(method, path, query, body) {
        Ok(request) => {
            let debug = format!("{request:?}");
            let encoded = wire::encode(&request);
            let (path, query) = match encoded.path.split_once('?') {
                Some((path, query)) => (path, Some(query)),
                None => (encoded.path.as_str(), None),
            };
            let body = encoded.body.as_deref().map_or(&[][..], |b| b.as_slice());
            let again = wire::parse(encoded.method, path, query, body)
                .unwrap_or_else(|e| panic!("{debug} encoded to a refused request: {}", e.message));
            assert_eq!(
                format!("{again:?}"),
                debug,
                "the round trip changed the request"
            );
        }
        Err(e) => assert!(
            (400..500).contains(&e.status()),
            "a malformed request answered {}: {}",
            e.status(),
            e.message
        ),
    }
}

/// The bindings a fuzzed function has: (binding, allowed operations,
/// egress, whether it has a usable version).
const BINDINGS: &[(&str, &str, &str, bool)] = &[
    ("HMAC", "hmac", "", true),
    ("REVEAL", "hmac,reveal", "", true),
    ("SEAL", "seal", "", true),
    ("INJECT", "inject", "api.example.com", true),
    ("INJECT_NOWHERE", "inject", "", true),
    ("SIGN", "sign", "", true),
    ("GONE", "hmac,reveal", "", false),
];

/// The value bound to `binding`: 32 bytes derived from its name, so a
/// value is recognisable wherever it leaks.
fn value_of(binding: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(b"keyhole-fuzz").expect("any key length");
    mac.update(binding.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn function_secrets() -> Arc<FunctionSecrets> {
    let bindings = BINDINGS
        .iter()
        .map(|&(binding, allow, egress, usable)| {
            let bound = BoundSecret {
                secret: format!("secret-{binding}").into(),
                allowed: OperationSet::parse_list(allow).expect("valid operations"),
                egress: Arc::new(EgressList::parse_list(egress).expect("valid egress")),
                current: usable
                    .then(|| Arc::new(SecretMaterial::new(1, SecretValue::new(value_of(binding))))),
                grace: Arc::from(Vec::new()),
                usage: Arc::default(),
                in_force: Default::default(),
            };
            (binding.to_owned(), bound)
        })
        .collect::<HashMap<_, _>>();
    Arc::new(FunctionSecrets::new(bindings))
}

/// Reads fuzz input a little at a time; runs dry as zeros.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }

    fn bytes(&mut self) -> Vec<u8> {
        let len = usize::from(self.byte()).min(self.0.len());
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        taken.to_vec()
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Drives the `keyhole:secrets` host implementation with the call sequence
/// `data` describes, and checks every answer against the grants: only
/// granted operations succeed, HMACs and seals are right, a forged or
/// dropped handle is an error (a trap for the guest), and no error text
/// carries a secret value.
pub fn secrets_calls(data: &[u8]) {
    let observer = Arc::new(Observer::default());
    let function: Arc<str> = "fuzzed".into();
    let mut ctx = SecretsCtx::new(
        Arc::clone(&function),
        1,
        function_secrets(),
        observer.function_metrics(&function),
    );
    let mut view = SecretsView { ctx: &mut ctx };
    let mut open: Vec<(u32, &'static str)> = Vec::new();
    let mut sealed: Vec<u8> = Vec::new();
    let mut tokens = 0;
    let mut input = Input(data);
    let mut steps = 0;
    while !input.is_empty() && steps < 4096 {
        steps += 1;
        let op = input.byte() % 12;
        if op == 0 {
            let name = match input.byte() {
                n if usize::from(n) < BINDINGS.len() * 8 => {
                    BINDINGS[usize::from(n) % BINDINGS.len()].0.to_owned()
                }
                250 => "A".repeat(MAX_BINDING_LEN + 1),
                251 => String::new(),
                _ => String::from_utf8_lossy(&input.bytes()).into_owned(),
            };
            let answer = view.get(name.clone());
            if out_of_refusals(&answer) {
                return; // the request is over
            }
            let answer = answer.expect("get never traps but past its refusals");
            let granted = BINDINGS.iter().find(|b| b.0 == name);
            match (answer, granted) {
                (Ok(handle), Some(&(binding, _, _, true))) => {
                    assert!(open.len() < MAX_OPEN_HANDLES, "more handles than the limit");
                    open.push((handle.rep(), binding));
                }
                (Ok(_), _) => panic!("opened `{name}`, which is not usable"),
                (Err(Error::Unavailable(m)), Some((_, _, _, false))) => check_text(&m),
                (Err(Error::InvalidArgument(m)), Some(_)) => {
                    assert_eq!(open.len(), MAX_OPEN_HANDLES, "refused below the limit: {m}");
                }
                (Err(Error::NotGranted(m)), None) => {
                    assert!(!name.is_empty() && name.len() <= MAX_BINDING_LEN, "{m}");
                    check_text(&m);
                }
                (Err(Error::InvalidArgument(m)), None) => {
                    assert!(name.is_empty() || name.len() > MAX_BINDING_LEN, "{m}");
                }
                (Err(e), _) => panic!("get(`{name}`) answered {e:?}"),
            }
            continue;
        }
        // Pick a live handle, or forge an index.
        let selector = input.byte();
        let (rep, binding) = if selector < 224 && !open.is_empty() {
            let (rep, binding) = open[usize::from(selector) % open.len()];
            (rep, Some(binding))
        } else {
            let rep = input.u32();
            (rep, open.iter().find(|(r, _)| *r == rep).map(|(_, b)| *b))
        };
        let handle = || Resource::<SecretHandle>::new_borrow(rep);
        let allowed = |op: Operation| {
            binding.is_some_and(|b| {
                let allow = BINDINGS.iter().find(|x| x.0 == b).expect("known").1;
                OperationSet::parse_list(allow).expect("valid").contains(op)
            })
        };
        match op {
            1 => {
                let message = input.bytes();
                let answer = view.hmac_sha256(handle(), message.clone());
                if out_of_refusals(&answer) {
                    return;
                }
                if let Some(tag) = expect(answer, binding, allowed(Operation::Hmac)) {
                    let mut mac = Hmac::<Sha256>::new_from_slice(&value_of(binding.expect("live")))
                        .expect("any key length");
                    mac.update(&message);
                    assert_eq!(tag, mac.finalize().into_bytes().to_vec(), "a wrong HMAC");
                }
            }
            2 => {
                let (message, tag) = (input.bytes(), input.bytes());
                let answer = view.verify_hmac_sha256(handle(), message, tag);
                if out_of_refusals(&answer) {
                    return;
                }
                expect(answer, binding, allowed(Operation::Hmac));
            }
            3 => {
                let answer = view.reveal_wiped(handle());
                if out_of_refusals(&answer) {
                    return;
                }
                if let Some(value) = expect(answer, binding, allowed(Operation::Reveal)) {
                    assert_eq!(*value, *value_of(binding.expect("live")));
                }
            }
            4 => {
                let (plain, aad) = (input.bytes(), input.bytes());
                let answer = view.seal(handle(), plain.clone(), aad.clone());
                if out_of_refusals(&answer) {
                    return;
                }
                if let Some(out) = expect(answer, binding, allowed(Operation::Seal)) {
                    let back = view.open(handle(), out.clone(), aad).expect("no trap");
                    assert_eq!(back.ok(), Some(plain), "a seal that does not open");
                    sealed = out;
                }
            }
            5 => {
                let mut ciphertext = if input.byte() % 2 == 0 {
                    sealed.clone()
                } else {
                    input.bytes()
                };
                if let Some(first) = ciphertext.get_mut(usize::from(input.byte())) {
                    *first ^= input.byte();
                }
                let aad = input.bytes();
                let answer = view.open(handle(), ciphertext, aad);
                if out_of_refusals(&answer) {
                    return;
                }
                match answer {
                    Err(_) => assert!(binding.is_none(), "a live handle trapped"),
                    Ok(Ok(_)) => assert!(allowed(Operation::Seal)),
                    Ok(Err(e)) => check_text(message(&e)),
                }
            }
            6 => {
                let algorithm = match input.byte() % 3 {
                    0 => Algorithm::Ed25519,
                    1 => Algorithm::EcdsaP256Sha256,
                    _ => Algorithm::RsaPkcs1Sha256,
                };
                let answer = view.sign(handle(), algorithm, input.bytes());
                if out_of_refusals(&answer) {
                    return;
                }
                // The bound values are no keys: even where granted, signing
                // is refused as an invalid argument.
                let signed = expect(answer, binding, allowed(Operation::Sign));
                assert!(signed.is_none(), "signed with a value that is no key");
            }
            7 => {
                let answer = view.public_key(handle());
                if out_of_refusals(&answer) {
                    return;
                }
                let key = expect(answer, binding, allowed(Operation::Sign));
                assert!(key.is_none(), "a public key from a value that is no key");
            }
            8 => {
                let answer = view.header_token(handle());
                if out_of_refusals(&answer) {
                    return;
                }
                let usable = binding == Some("INJECT");
                match answer {
                    Err(_) => assert!(binding.is_none(), "a live handle trapped"),
                    Ok(Ok(token)) => {
                        assert!(usable, "a token for {binding:?}");
                        assert!(tokens < MAX_TOKENS, "more header tokens than the limit");
                        tokens += 1;
                        check_text(&token);
                    }
                    Ok(Err(e)) => {
                        assert!(
                            !usable || tokens == MAX_TOKENS,
                            "INJECT refused token {tokens}: {e:?}"
                        );
                        check_text(message(&e));
                    }
                }
            }
            9 => {
                let answer = HostSecret::drop(&mut view, Resource::new_own(rep));
                match (answer, binding) {
                    (Ok(()), Some(_)) => open.retain(|(r, _)| *r != rep),
                    (Err(_), None) => {}
                    (answer, binding) => panic!("drop of {binding:?}: {answer:?}"),
                }
            }
            10 => {
                let answer = view.name(handle());
                assert_eq!(answer.ok().as_deref(), binding, "name of handle {rep}");
            }
            _ => {
                let answer = view.version(handle());
                assert_eq!(answer.ok(), binding.map(|_| 1), "version of handle {rep}");
            }
        }
    }
}

/// The success value of a call on a handle, after checking the call
/// trapped exactly when the handle is not live, and was refused exactly
/// when its grant lacks the operation.
fn expect<T>(
    answer: wasmtime::Result<Result<T, Error>>,
    binding: Option<&str>,
    allowed: bool,
) -> Option<T> {
    match (answer, binding) {
        (Err(_), None) => None,
        (Err(e), Some(b)) => panic!("a live `{b}` handle trapped: {e}"),
        (Ok(_), None) => panic!("a forged handle answered"),
        (Ok(Ok(value)), Some(b)) => {
            assert!(allowed, "`{b}` did what its grant does not allow");
            Some(value)
        }
        (Ok(Err(e)), Some(b)) => {
            let text = message(&e);
            check_text(text);
            assert!(
                !allowed || matches!(e, Error::InvalidArgument(_)),
                "`{b}` refused what its grant allows: {text}"
            );
            None
        }
    }
}

/// Whether `answer` is the trap that ends a request past its allowance of
/// refusals ([`crate::secrets::MAX_REFUSED_PER_REQUEST`]).
fn out_of_refusals<T>(answer: &wasmtime::Result<T>) -> bool {
    answer.as_ref().err().is_some_and(|e| {
        e.downcast_ref::<crate::secrets::TooManyRefusals>()
            .is_some()
    })
}

/// Panics if `text` holds any bound value, raw or in hex.
fn check_text(text: &str) {
    for &(binding, ..) in BINDINGS {
        let value = value_of(binding);
        assert!(
            !text
                .as_bytes()
                .windows(value.len())
                .any(|w| w == value.as_slice())
                && !text.contains(&hex::encode(&value)),
            "the value of `{binding}` in: {text}"
        );
    }
}
