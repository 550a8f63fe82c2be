//! Bearer tokens injected by the host: `header-token` hands the guest a
//! stand-in, and an outgoing request's header values get the real secret
//! in its place, only toward hosts on the grant's egress list.
//!
//! Tokens are 256 random bits and live in the request's own [`Injector`],
//! so a token from another request or another function resolves to
//! nothing. URLs and bodies are never touched.
//!
//! The injector is also where every outgoing request is decided: one that
//! carries none of its tokens goes out only toward the function's approved
//! outbound hosts, and then only through [`crate::outbound::send`], which
//! checks the address it connects to.

use crate::audit::{FunctionEvent, OpOutcome};
use crate::crypto::material::SecretMaterial;
use crate::node::observe::FunctionMetrics;
use crate::outbound::egress::EgressList;
use crate::outbound::{self, Destination, HOPS_HEADER, OutboundRules};
use crate::secrets::standing::InForce;
use crate::secrets::{LAST_RECORDED_REFUSAL, Refusal, RefusalBudget};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::header::HeaderValue;
use rand::Rng;
use std::collections::HashMap;
use std::sync::Arc;
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};
use zeroize::Zeroizing;

/// Every token starts with this, so header values are scanned only where
/// one may be.
pub const TOKEN_PREFIX: &str = "keyhole-inject-";
/// Random bytes per token.
const TOKEN_RANDOM_BYTES: usize = 32;
/// Length of a token: the prefix plus the random bytes in unpadded base64url.
pub const TOKEN_LEN: usize = TOKEN_PREFIX.len() + (TOKEN_RANDOM_BYTES * 4).div_ceil(3);
/// How many tokens one request may hold.
pub const MAX_TOKENS: usize = 256;

/// What a token stands for: one version of one bound secret, and where it
/// may go.
pub struct Issue {
    /// The binding's name, as the function asked for it.
    pub binding: Arc<str>,
    /// The stored secret's name, for the audit trail.
    pub secret: Arc<str>,
    /// The value injected in the token's place.
    pub material: Arc<SecretMaterial>,
    /// Hosts the value may be sent to.
    pub egress: Arc<EgressList>,
    /// Whether the binding is still granted: checked when the token is
    /// used, so a revoke reaches tokens already issued.
    pub in_force: InForce,
}

/// One request's tokens, and the `wasi:http` hook that substitutes them.
pub struct Injector {
    function: Arc<str>,
    request: u64,
    tokens: HashMap<String, Issue>,
    metrics: Arc<FunctionMetrics>,
    outbound: Arc<OutboundRules>,
    /// How many Keyhole nodes the incoming request passed through.
    hops: u8,
    /// The SHA-256 of the function's component, for the audit trail.
    digest: Option<Arc<str>>,
    /// The request's allowance of refusals: past it, a refusal is still a
    /// refusal, but neither recorded nor logged.
    refusals: Arc<RefusalBudget>,
}

/// Why a token could not be issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("too many header tokens in one request (at most {MAX_TOKENS})")]
pub struct TooManyTokens;

impl Injector {
    /// An injector with no tokens, for request `request` of `function`,
    /// reporting every injection (and refusal) to `metrics`; requests
    /// without tokens may reach what `outbound` allows.
    pub fn new(
        function: Arc<str>,
        request: u64,
        metrics: Arc<FunctionMetrics>,
        outbound: Arc<OutboundRules>,
    ) -> Self {
        Self {
            function,
            request,
            tokens: HashMap::new(),
            metrics,
            outbound,
            hops: 0,
            digest: None,
            refusals: Arc::default(),
        }
    }

    /// The same, counting its refusals against `refusals` (the request's
    /// secret calls share it).
    pub fn with_refusals(mut self, refusals: Arc<RefusalBudget>) -> Self {
        self.refusals = refusals;
        self
    }

    /// Spends one refusal of the request's allowance and says what to
    /// record: `why` within it, `why` with [`LAST_RECORDED_REFUSAL`] for
    /// the refusal that spends it, nothing past it.
    fn spend_refusal(&self, why: String) -> Option<String> {
        match self.refusals.spend() {
            Refusal::Within => Some(why),
            Refusal::Exhausted => Some(format!("{why}; {LAST_RECORDED_REFUSAL}")),
            Refusal::Over => None,
        }
    }

    /// The same, auditing its injections as made by the component with
    /// SHA-256 `digest`.
    pub fn for_component(mut self, digest: Arc<str>) -> Self {
        self.digest = Some(digest);
        self
    }

    /// Records how many Keyhole nodes the incoming request passed through:
    /// outgoing requests carry one more.
    pub fn set_hops(&mut self, hops: u8) {
        self.hops = hops;
    }

    /// Decides whether `request` may go out: substitutes its tokens (each
    /// checked against its egress list) or checks its host against the
    /// function's outbound list; returns where it goes.
    pub fn check(
        &self,
        request: &mut hyper::Request<WasiBody>,
    ) -> Result<Destination, wasmtime_wasi_http::Error> {
        let Some(destination) = Destination::of(request.uri()) else {
            return Err(self.refuse_outbound(
                &request.uri().to_string(),
                "outgoing requests need an http:// or https:// URL with a host",
            ));
        };
        let injected = self.substitute(request, &destination)?;
        if !injected
            && !self.outbound.allowed.allows(
                destination.plain_http,
                &destination.host,
                destination.port,
            )
        {
            let shown = destination.shown();
            let why = if self.outbound.allowed.is_empty() {
                "the function has no approved outbound hosts (manifest `[outbound] allow`, then `keyhole approve`)".to_owned()
            } else {
                format!("its approved outbound hosts are {}", self.outbound.allowed)
            };
            return Err(self.refuse_outbound(&shown, &why));
        }
        Ok(destination)
    }

    fn refuse_outbound(&self, destination: &str, why: &str) -> wasmtime_wasi_http::Error {
        let destination = destination.escape_debug().to_string();
        if let Some(recorded) = self.spend_refusal(why.to_owned()) {
            tracing::warn!(
                request = self.request,
                function = %self.function.escape_debug(),
                host = %destination,
                "outgoing request refused: {recorded}"
            );
        }
        self.metrics.outbound_refused();
        wasmtime_wasi_http::Error::InternalError(Some(format!(
            "keyhole: outgoing request to `{destination}` refused: {why}; nothing was sent"
        )))
    }

    /// Reports an injection of `issued` toward `destination` to the audit
    /// trail.
    fn report(&self, issued: &Issue, destination: &str, refused: Option<String>) {
        self.metrics.secret_operation(
            FunctionEvent {
                function: Arc::clone(&self.function),
                request: self.request,
                binding: Arc::clone(&issued.binding),
                secret: Some(Arc::clone(&issued.secret)),
                version: Some(issued.material.version()),
                operation: "inject".into(),
                outcome: if refused.is_some() {
                    OpOutcome::Denied
                } else {
                    OpOutcome::Allowed
                },
                destination: Some(destination.escape_debug().to_string()),
                reason: refused,
                digest: self.digest.clone(),
            },
            "inject",
        );
    }

    /// A fresh token standing for `issue`'s value, which may reach the
    /// hosts on its egress list while its binding stays in force.
    pub fn issue(&mut self, issue: Issue) -> Result<String, TooManyTokens> {
        if self.tokens.len() >= MAX_TOKENS {
            return Err(TooManyTokens);
        }
        let mut random = [0u8; TOKEN_RANDOM_BYTES];
        rand::rng().fill_bytes(&mut random);
        let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(random));
        self.tokens.insert(token.clone(), issue);
        Ok(token)
    }

    /// Replaces this request's tokens in `request`'s header values with
    /// their secrets, or explains why the request may not be sent; returns
    /// whether it carried any. Every token is checked before any header
    /// changes, so a refused request is left as the guest made it.
    pub fn substitute(
        &self,
        request: &mut hyper::Request<WasiBody>,
        destination: &Destination,
    ) -> Result<bool, wasmtime_wasi_http::Error> {
        if self.tokens.is_empty() {
            return Ok(false);
        }
        let shown = destination.shown();
        let mut replacements = Vec::new();
        let mut used = Vec::new();
        for (index, value) in request.headers().values().enumerate() {
            if let Some(replaced) =
                self.replace_tokens(value.as_bytes(), destination, &shown, &mut used)?
            {
                replacements.push((index, replaced));
            }
        }
        let injected = !used.is_empty();
        for issued in used {
            self.report(issued, &shown, None);
        }
        let mut replacements = replacements.into_iter().peekable();
        for (index, value) in request.headers_mut().values_mut().enumerate() {
            if let Some((_, replaced)) = replacements.next_if(|(i, _)| *i == index) {
                *value = replaced;
            }
        }
        Ok(injected)
    }

    /// `value` with this request's tokens replaced, or `None` when it holds
    /// none of them.
    fn replace_tokens<'s>(
        &'s self,
        value: &[u8],
        destination: &Destination,
        shown: &str,
        used: &mut Vec<&'s Issue>,
    ) -> Result<Option<HeaderValue>, wasmtime_wasi_http::Error> {
        let prefix = TOKEN_PREFIX.as_bytes();
        let found = memchr::memmem::find_iter(value, prefix).count();
        if found == 0 {
            return Ok(None);
        }
        // Sized for the worst case up front: a reallocation would leave an
        // unwiped copy of a secret behind.
        let longest = self
            .tokens
            .values()
            .map(|t| t.material.value().len())
            .max()
            .unwrap_or(0);
        let mut replaced = Zeroizing::new(Vec::with_capacity(value.len() + found * longest));
        let mut substituted = false;
        let mut at = 0;
        while let Some(offset) = memchr::memmem::find(&value[at..], prefix) {
            let start = at + offset;
            let end = (start + TOKEN_LEN).min(value.len());
            let issued = std::str::from_utf8(&value[start..end])
                .ok()
                .and_then(|token| self.tokens.get(token));
            replaced.extend_from_slice(&value[at..start]);
            match issued {
                Some(issued) => {
                    if let Some(why) = issued.withdrawn() {
                        return Err(self.refuse_withdrawn(issued, shown, &why));
                    }
                    if !issued.egress.allows(
                        destination.plain_http,
                        &destination.host,
                        destination.port,
                    ) {
                        return Err(self.refuse(issued, shown));
                    }
                    used.push(issued);
                    replaced.extend_from_slice(issued.material.value().expose());
                    substituted = true;
                    at = end;
                }
                None => {
                    // Not one of this request's tokens: left as it is.
                    replaced.extend_from_slice(prefix);
                    at = start + prefix.len();
                }
            }
        }
        if !substituted {
            return Ok(None);
        }
        replaced.extend_from_slice(&value[at..]);
        let mut header = HeaderValue::from_bytes(&replaced).map_err(|_| {
            wasmtime_wasi_http::Error::InternalError(Some(
                "an injected secret is not a valid HTTP header value (it holds control characters)"
                    .to_owned(),
            ))
        })?;
        header.set_sensitive(true);
        Ok(Some(header))
    }

    fn refuse_withdrawn(
        &self,
        issued: &Issue,
        destination: &str,
        why: &str,
    ) -> wasmtime_wasi_http::Error {
        let binding = &*issued.binding;
        if let Some(recorded) = self.spend_refusal(format!("binding `{binding}`: {why}")) {
            self.report(issued, destination, Some(recorded));
            tracing::warn!(
                request = self.request,
                function = %self.function,
                binding,
                "outgoing request refused: its token's binding was withdrawn while the request ran"
            );
        }
        wasmtime_wasi_http::Error::InternalError(Some(format!(
            "keyhole: binding `{binding}` may no longer be injected: {why}; nothing was sent"
        )))
    }

    fn refuse(&self, issued: &Issue, destination: &str) -> wasmtime_wasi_http::Error {
        let (binding, egress) = (&*issued.binding, &issued.egress);
        let shown = destination.escape_debug().to_string();
        if let Some(recorded) =
            self.spend_refusal(format!("the grant's egress list allows only {egress}"))
        {
            self.report(issued, destination, Some(recorded));
            tracing::warn!(
                request = self.request,
                function = %self.function,
                binding,
                host = %shown,
                "outgoing request refused: host is not on the binding's egress list"
            );
        }
        let destination = shown;
        wasmtime_wasi_http::Error::InternalError(Some(format!(
            "keyhole: binding `{binding}` may not be sent to `{destination}` (its grant allows: {egress}); nothing was sent"
        )))
    }
}

impl Issue {
    /// Why the binding may no longer be injected, if a load since the
    /// token was issued has withdrawn it (or its `inject`).
    fn withdrawn(&self) -> Option<String> {
        if let Err(e) = self.in_force.fresh() {
            return Some(e.to_string());
        }
        if let Err(e) = self.in_force.check() {
            return Some(e.to_string());
        }
        let allowed = self.in_force.allowed_now();
        (!allowed.contains(crate::operations::Operation::Inject))
            .then(|| format!("it is no longer granted `inject` (granted: {allowed})"))
    }
}

impl WasiHttpHooks for Injector {
    fn send_request(
        &mut self,
        mut request: hyper::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        hyper::Response<WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        drop(fut);
        let checked = self.check(&mut request);
        let rules = Arc::clone(&self.outbound);
        let hops = self.hops.saturating_add(1);
        Box::new(async move {
            let destination = checked?;
            request
                .headers_mut()
                .insert(HOPS_HEADER, HeaderValue::from(u16::from(hops)));
            outbound::send(
                request,
                options,
                destination,
                Arc::clone(&rules.addresses),
                Arc::clone(&rules.resolver),
            )
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::secret_value::SecretValue;
    use http_body_util::{BodyExt as _, Empty};

    fn metrics() -> Arc<FunctionMetrics> {
        Arc::new(crate::node::observe::Observer::default()).function_metrics(&"f".into())
    }

    fn material(value: &[u8]) -> Arc<SecretMaterial> {
        Arc::new(SecretMaterial::new(1, SecretValue::new(value.to_vec())))
    }

    fn issued(binding: &str, material: Arc<SecretMaterial>, egress: Arc<EgressList>) -> Issue {
        Issue {
            binding: binding.into(),
            secret: "s".into(),
            material,
            egress,
            in_force: InForce::default(),
        }
    }

    fn egress(list: &str) -> Arc<EgressList> {
        Arc::new(EgressList::parse_list(list).unwrap())
    }

    fn injector(outbound: &str) -> Injector {
        let rules = OutboundRules {
            allowed: EgressList::parse_list(outbound).unwrap(),
            ..OutboundRules::default()
        };
        Injector::new("f".into(), 1, metrics(), Arc::new(rules))
    }

    fn substitute(
        injector: &Injector,
        req: &mut hyper::Request<WasiBody>,
    ) -> Result<bool, wasmtime_wasi_http::Error> {
        let destination = Destination::of(req.uri()).unwrap();
        injector.substitute(req, &destination)
    }

    fn request(uri: &str, headers: &[(&str, &str)]) -> hyper::Request<WasiBody> {
        let mut builder = hyper::Request::get(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder
            .body(Empty::new().map_err(|never| match never {}).boxed_unsync())
            .unwrap()
    }

    #[test]
    fn every_own_token_in_a_header_value_is_replaced() {
        let mut injector = injector("");
        let a = injector
            .issue(issued("A", material(b"alpha"), egress("api.example.com")))
            .unwrap();
        let b = injector
            .issue(issued("B", material(b"beta"), egress("*.example.com")))
            .unwrap();
        assert_eq!(a.len(), TOKEN_LEN);
        assert_ne!(a, b);
        let foreign = format!("{TOKEN_PREFIX}{}", "x".repeat(43));
        let mut req = request(
            "https://api.example.com/v1",
            &[
                ("authorization", &format!("Bearer {a}")),
                ("x-pair", &format!("{a}:{b};{foreign}")),
                ("x-plain", "untouched"),
            ],
        );
        substitute(&injector, &mut req).unwrap();
        let h = req.headers();
        assert_eq!(h["authorization"], "Bearer alpha");
        assert!(h["authorization"].is_sensitive());
        assert_eq!(h["x-pair"], format!("alpha:beta;{foreign}").as_str());
        assert_eq!(h["x-plain"], "untouched");
        assert_eq!(req.uri(), "https://api.example.com/v1");
    }

    #[test]
    fn a_token_toward_another_host_stops_the_request() {
        let mut injector = injector("");
        let token = injector
            .issue(issued(
                "API",
                material(b"secret-value"),
                egress("api.example.com"),
            ))
            .unwrap();
        for uri in [
            "https://evil.example.net/",
            "https://api.example.com:8443/",
            "http://api.example.com.evil.net/",
        ] {
            let mut req = request(uri, &[("authorization", &format!("Bearer {token}"))]);
            let err = substitute(&injector, &mut req).unwrap_err();
            let text = format!("{err:?}");
            assert!(text.contains("binding `API` may not be sent to"), "{text}");
            assert!(!text.contains("secret-value"), "{text}");
            assert_eq!(
                req.headers()["authorization"],
                format!("Bearer {token}").as_str(),
                "nothing substituted"
            );
        }
    }

    #[test]
    fn a_refused_request_is_left_as_the_guest_made_it() {
        let mut injector = injector("");
        let ok = injector
            .issue(issued(
                "OK",
                material(b"allowed-value"),
                egress("api.example.com"),
            ))
            .unwrap();
        let other = injector
            .issue(issued(
                "OTHER",
                material(b"other-value"),
                egress("other.example.com"),
            ))
            .unwrap();
        let mut req = request(
            "https://api.example.com/",
            &[("authorization", &ok), ("x-other", &other)],
        );
        let err = format!("{:?}", substitute(&injector, &mut req).unwrap_err());
        assert!(err.contains("binding `OTHER`"), "{err}");
        assert_eq!(req.headers()["authorization"], ok.as_str());
        assert_eq!(req.headers()["x-other"], other.as_str());
    }

    #[test]
    fn a_value_that_cannot_be_a_header_is_refused_without_echoing_it() {
        let mut injector = injector("");
        let token = injector
            .issue(issued(
                "API",
                material(b"line\r\nbreak"),
                egress("api.example.com"),
            ))
            .unwrap();
        let mut req = request("https://api.example.com/", &[("authorization", &token)]);
        let text = format!("{:?}", substitute(&injector, &mut req).unwrap_err());
        assert!(text.contains("not a valid HTTP header value"), "{text}");
        assert!(!text.contains("break"), "{text}");
    }

    #[test]
    fn requests_without_tokens_reach_only_approved_outbound_hosts() {
        let mut injector = injector("api.example.com, http://plain.example.com:8080");
        for uri in [
            "https://api.example.com/v1",
            "http://plain.example.com:8080/",
        ] {
            let destination = injector.check(&mut request(uri, &[])).unwrap();
            assert_eq!(
                destination.host,
                Destination::of(&uri.parse().unwrap()).unwrap().host
            );
        }
        for (uri, why) in [
            (
                "https://evil.example.net/",
                "its approved outbound hosts are",
            ),
            ("http://api.example.com/", "its approved outbound hosts are"),
            (
                "https://plain.example.com:8080/",
                "its approved outbound hosts are",
            ),
            ("ftp://api.example.com/", "need an http:// or https:// URL"),
        ] {
            let err = format!("{:?}", injector.check(&mut request(uri, &[])).unwrap_err());
            assert!(
                err.contains(why) && err.contains("nothing was sent"),
                "{uri}: {err}"
            );
        }
        let err = format!(
            "{:?}",
            self::injector("")
                .check(&mut request("https://api.example.com/", &[]))
                .unwrap_err()
        );
        assert!(err.contains("no approved outbound hosts"), "{err}");

        // A request carrying its own token needs the grant's egress list,
        // not the outbound list; over http only where that list says http://.
        let token = injector
            .issue(issued(
                "API",
                material(b"tok"),
                egress("tokens.example.com, http://10.0.0.1:81"),
            ))
            .unwrap();
        let bearer = format!("Bearer {token}");
        let mut req = request("https://tokens.example.com/", &[("authorization", &bearer)]);
        injector.check(&mut req).unwrap();
        assert_eq!(req.headers()["authorization"], "Bearer tok");
        let mut req = request("http://tokens.example.com/", &[("authorization", &bearer)]);
        let err = format!("{:?}", injector.check(&mut req).unwrap_err());
        assert!(err.contains("binding `API` may not be sent to"), "{err}");
        let mut req = request("http://10.0.0.1:81/", &[("authorization", &bearer)]);
        injector.check(&mut req).unwrap();
    }

    #[test]
    fn tokens_are_capped_per_request() {
        let mut injector = injector("");
        for _ in 0..MAX_TOKENS {
            injector
                .issue(issued("A", material(b"v"), egress("api.example.com")))
                .unwrap();
        }
        assert_eq!(
            injector.issue(issued("A", material(b"v"), egress("api.example.com"))),
            Err(TooManyTokens)
        );
    }

    #[test]
    fn the_refusal_that_spends_the_allowance_says_so_and_later_ones_go_unrecorded() {
        let budget = Arc::new(RefusalBudget::default());
        for _ in 1..crate::secrets::MAX_REFUSED_PER_REQUEST {
            assert_eq!(budget.spend(), Refusal::Within);
        }
        let injector = injector("").with_refusals(Arc::clone(&budget));
        assert_eq!(injector.spend_refusal("why".into()).as_deref(), Some("why"));
        let last = injector.spend_refusal("why".into()).unwrap();
        assert!(
            last.starts_with("why; ") && last.ends_with(LAST_RECORDED_REFUSAL),
            "{last}"
        );
        assert_eq!(injector.spend_refusal("why".into()), None);
        assert_eq!(budget.spend(), Refusal::Over, "the secret calls share it");
    }
}
