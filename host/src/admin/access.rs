//! Who may do what through the admin API: roles, their permissions, and
//! the bearer tokens that carry them.
//!
//! A token is `kh_<id>_<secret>`: the id finds the stored record, the
//! secret's SHA-256 is compared in constant time with the stored hash. Only
//! the hash is kept, so the database file cannot be used to act as anyone.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;
use subtle::ConstantTimeEq;

/// A set of permissions given to a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything: secrets, grants, tokens, deployments, audit.
    Admin,
    /// Deploy and undeploy functions (optionally only some names) and see
    /// whether their bindings are granted; no secrets, no grants.
    Deployer,
    /// Read the audit trail, metrics and metadata; change nothing.
    Auditor,
}

impl Role {
    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Deployer => "deployer",
            Role::Auditor => "auditor",
        }
    }

    /// Whether the role carries `permission`.
    pub fn allows(self, permission: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Admin => true,
            Role::Deployer => matches!(permission, SelfRead | FunctionsRead | FunctionsDeploy),
            Role::Auditor => matches!(
                permission,
                SelfRead
                    | SecretsRead
                    | GrantsRead
                    | FunctionsRead
                    | TokensRead
                    | AuditRead
                    | MetricsRead
            ),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "deployer" => Ok(Role::Deployer),
            "auditor" => Ok(Role::Auditor),
            other => Err(format!(
                "unknown role `{other}` (known: admin, deployer, auditor)"
            )),
        }
    }
}

/// One thing the admin API lets a caller do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// See one's own token: its name, role and scope (every role has it,
    /// so a client such as the console can tell what to offer).
    SelfRead,
    /// List secrets, their versions and dependents; check their integrity.
    SecretsRead,
    /// Store, rotate, roll back and remove secrets.
    SecretsWrite,
    /// List grants.
    GrantsRead,
    /// Grant and revoke.
    GrantsWrite,
    /// List functions and their bindings' states.
    FunctionsRead,
    /// Deploy and undeploy functions.
    FunctionsDeploy,
    /// List tokens (never the tokens themselves).
    TokensRead,
    /// Create and revoke tokens.
    TokensWrite,
    /// Read and verify the audit trail.
    AuditRead,
    /// Prune the audit trail's oldest records (retention).
    AuditPrune,
    /// Scrape `/metrics`.
    MetricsRead,
}

impl Permission {
    /// Every permission.
    pub const ALL: [Permission; 12] = [
        Permission::SelfRead,
        Permission::SecretsRead,
        Permission::SecretsWrite,
        Permission::GrantsRead,
        Permission::GrantsWrite,
        Permission::FunctionsRead,
        Permission::FunctionsDeploy,
        Permission::TokensRead,
        Permission::TokensWrite,
        Permission::AuditRead,
        Permission::AuditPrune,
        Permission::MetricsRead,
    ];

    /// The permission's name, as 403 answers give it.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::SelfRead => "self:read",
            Permission::SecretsRead => "secrets:read",
            Permission::SecretsWrite => "secrets:write",
            Permission::GrantsRead => "grants:read",
            Permission::GrantsWrite => "grants:write",
            Permission::FunctionsRead => "functions:read",
            Permission::FunctionsDeploy => "functions:deploy",
            Permission::TokensRead => "tokens:read",
            Permission::TokensWrite => "tokens:write",
            Permission::AuditRead => "audit:read",
            Permission::AuditPrune => "audit:prune",
            Permission::MetricsRead => "metrics:read",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Function-name patterns a deployer token is limited to, such as
/// `checkout-*`; `*` matches any run of characters. Empty: every function.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FunctionScope(Vec<String>);

impl FunctionScope {
    /// Parses a comma-separated list of patterns.
    pub fn parse_list(list: &str) -> Result<Self, String> {
        Self::new(split_patterns(list))
    }

    /// A scope of `patterns`, each made of name characters and `*`.
    pub fn new(patterns: Vec<String>) -> Result<Self, String> {
        for p in &patterns {
            let ok = !p.is_empty()
                && p.len() <= crate::names::MAX_NAME_LEN
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'*'));
            if !ok {
                return Err(format!(
                    "function pattern `{p}` is invalid: use function-name characters and `*`"
                ));
            }
        }
        Ok(Self(patterns))
    }

    /// Whether the scope limits nothing.
    pub fn is_unlimited(&self) -> bool {
        self.0.is_empty()
    }

    /// The patterns.
    pub fn patterns(&self) -> &[String] {
        &self.0
    }

    /// Whether `function` is within the scope.
    pub fn covers(&self, function: &str) -> bool {
        self.is_unlimited()
            || self
                .0
                .iter()
                .any(|p| glob(p.as_bytes(), function.as_bytes()))
    }
}

impl fmt::Display for FunctionScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_patterns(f, &self.0)
    }
}

/// The non-empty, trimmed items of a comma-separated list.
fn split_patterns(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A scope's patterns as listings show them: comma-separated, or `*` for
/// an unlimited scope.
fn write_patterns(f: &mut fmt::Formatter<'_>, patterns: &[String]) -> fmt::Result {
    if patterns.is_empty() {
        f.write_str("*")
    } else {
        f.write_str(&patterns.join(","))
    }
}

/// Route prefixes a deployer token may claim, such as `/checkout/*`: a
/// deploy is refused when any route it claims lies outside all of them.
/// `/checkout/*` and `/checkout` both mean `/checkout` and every path below
/// it (a route serves its whole subtree, so a narrower reading would
/// promise what routing cannot keep). Empty: every route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct RouteScope(Vec<String>);

impl TryFrom<Vec<String>> for RouteScope {
    type Error = String;
    fn try_from(patterns: Vec<String>) -> Result<Self, String> {
        Self::new(patterns)
    }
}

impl From<RouteScope> for Vec<String> {
    fn from(scope: RouteScope) -> Self {
        scope.0
    }
}

impl RouteScope {
    /// Parses a comma-separated list of route patterns.
    pub fn parse_list(list: &str) -> Result<Self, String> {
        Self::new(split_patterns(list))
    }

    /// A scope of `patterns`, each a route optionally ending in `/*`.
    pub fn new(patterns: Vec<String>) -> Result<Self, String> {
        for p in &patterns {
            let base = route_pattern_base(p);
            if base.contains('*') {
                return Err(format!(
                    "route pattern `{p}` is invalid: `*` may only end it, as `/*` (e.g. '/checkout/*')"
                ));
            }
            crate::deploy::manifest::check_route(base).map_err(|why| {
                format!("route pattern `{p}` is invalid: {why} (e.g. '/checkout/*')")
            })?;
        }
        Ok(Self(patterns))
    }

    /// Whether the scope limits nothing.
    pub fn is_unlimited(&self) -> bool {
        self.0.is_empty()
    }

    /// The patterns, as given.
    pub fn patterns(&self) -> &[String] {
        &self.0
    }

    /// Whether `route` (a checked manifest route) lies within the scope.
    pub fn covers(&self, route: &str) -> bool {
        self.is_unlimited()
            || self
                .0
                .iter()
                .any(|p| route_contains(route_pattern_base(p), route))
    }
}

impl fmt::Display for RouteScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_patterns(f, &self.0)
    }
}

/// `/checkout/*` and `/*` as the route they stand for.
fn route_pattern_base(pattern: &str) -> &str {
    match pattern.strip_suffix("/*") {
        Some("") => "/",
        Some(base) => base,
        None => pattern,
    }
}

/// Whether route `outer` serves every path `inner` serves: it equals
/// `inner`, or is a whole-segment prefix of it.
pub fn route_contains(outer: &str, inner: &str) -> bool {
    outer == "/"
        || inner == outer
        || (inner.starts_with(outer) && inner.as_bytes().get(outer.len()) == Some(&b'/'))
}

/// Whether two routes share any path: one contains the other.
pub fn routes_overlap(a: &str, b: &str) -> bool {
    route_contains(a, b) || route_contains(b, a)
}

/// `*`-only glob matching, iterative with one backtrack point.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// Who is asking, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The CLI working on the data directory: holding the directory (and
    /// its master key) is the root of trust, so it may do everything.
    Local,
    /// A bearer of an admin API token.
    Token {
        /// The token's name.
        name: String,
        /// Its role.
        role: Role,
        /// The functions it may deploy (deployers).
        scope: FunctionScope,
        /// The routes it may claim (deployers).
        routes: RouteScope,
    },
}

impl Caller {
    /// The name audit records give the caller.
    pub fn name(&self) -> &str {
        match self {
            Caller::Local => "local",
            Caller::Token { name, .. } => name,
        }
    }

    /// The caller's role.
    pub fn role(&self) -> Role {
        match self {
            Caller::Local => Role::Admin,
            Caller::Token { role, .. } => *role,
        }
    }

    /// Whether the caller is limited to some functions or routes.
    pub fn is_scoped(&self) -> bool {
        matches!(self, Caller::Token { scope, routes, .. } if !scope.is_unlimited() || !routes.is_unlimited())
    }

    /// Whether the caller may act on `function` (a scoped deployer only on
    /// names its patterns cover).
    pub fn covers(&self, function: &str) -> bool {
        match self {
            Caller::Local => true,
            Caller::Token { scope, .. } => scope.covers(function),
        }
    }

    /// Whether the caller may claim `route` (a route-scoped deployer only
    /// routes inside its patterns).
    pub fn covers_route(&self, route: &str) -> bool {
        match self {
            Caller::Local => true,
            Caller::Token { routes, .. } => routes.covers(route),
        }
    }

    /// Whether the caller may deploy function `function` serving `routes`:
    /// its name and every route are in scope.
    pub fn may_deploy(&self, function: &str, routes: &[String]) -> bool {
        self.covers(function) && routes.iter().all(|r| self.covers_route(r))
    }

    /// The route scope, for messages (`*` when unlimited).
    pub fn route_scope(&self) -> RouteScope {
        match self {
            Caller::Local => RouteScope::default(),
            Caller::Token { routes, .. } => routes.clone(),
        }
    }
}

const TOKEN_PREFIX: &str = "kh_";
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;

/// A freshly made token: shown once, then only its hash is kept.
pub struct NewToken {
    /// The record's id (public; part of the token).
    pub id: String,
    /// The whole bearer token, to print once.
    pub token: zeroize::Zeroizing<String>,
    /// SHA-256 of the token's secret part, to store.
    pub hash: [u8; 32],
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl NewToken {
    /// A new random token.
    pub fn generate() -> Self {
        use base64::Engine as _;
        use rand::Rng as _;
        let mut id = [0u8; ID_BYTES];
        let mut secret = zeroize::Zeroizing::new([0u8; SECRET_BYTES]);
        rand::rng().fill_bytes(&mut id);
        rand::rng().fill_bytes(secret.as_mut());
        let id = hex::encode(id);
        let secret_text = zeroize::Zeroizing::new(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(*secret),
        );
        let hash = hash_secret(&secret_text);
        let token = zeroize::Zeroizing::new(format!("{TOKEN_PREFIX}{id}_{}", secret_text.as_str()));
        Self { id, token, hash }
    }
}

fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A presented bearer token split into its id and secret.
pub struct PresentedToken<'a> {
    /// The id, to look the record up by.
    pub id: &'a str,
    secret: &'a str,
}

impl<'a> PresentedToken<'a> {
    /// Splits `token`; `None` when it is not shaped like a Keyhole token.
    pub fn parse(token: &'a str) -> Option<Self> {
        let rest = token.strip_prefix(TOKEN_PREFIX)?;
        let (id, secret) = rest.split_once('_')?;
        let well_formed = id.len() == ID_BYTES * 2
            && id.bytes().all(|b| b.is_ascii_hexdigit())
            && !secret.is_empty()
            && secret.len() <= 128;
        well_formed.then_some(Self { id, secret })
    }

    /// Whether the secret part hashes to `stored`, compared in constant time.
    pub fn matches(&self, stored: &[u8]) -> bool {
        hash_secret(self.secret).ct_eq(stored).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_carry_exactly_their_permissions() {
        use Permission::*;
        let all = Permission::ALL;
        assert!(all.iter().all(|p| Role::Admin.allows(*p)));
        let deployer: Vec<_> = all.iter().filter(|p| Role::Deployer.allows(**p)).collect();
        assert_eq!(deployer, [&SelfRead, &FunctionsRead, &FunctionsDeploy]);
        let auditor: Vec<_> = all.iter().filter(|p| Role::Auditor.allows(**p)).collect();
        assert!(auditor.iter().all(|p| p.as_str().ends_with(":read")));
        assert_eq!(auditor.len(), 7);
    }

    #[test]
    fn scopes_match_whole_names_with_stars() {
        let scope = FunctionScope::parse_list("checkout-*, billing").unwrap();
        assert!(scope.covers("checkout-api"));
        assert!(scope.covers("checkout-"));
        assert!(scope.covers("billing"));
        assert!(!scope.covers("billing-2"));
        assert!(!scope.covers("my-checkout-api"));
        let middle = FunctionScope::parse_list("a*b*c").unwrap();
        assert!(middle.covers("abc") && middle.covers("axxbyyc") && !middle.covers("axxbyy"));
        assert!(FunctionScope::default().covers("anything"));
        assert!(FunctionScope::parse_list("bad/name").is_err());
    }

    #[test]
    fn route_scopes_cover_whole_segments_below_their_prefix() {
        let scope = RouteScope::parse_list("/checkout/*, /shop").unwrap();
        assert!(scope.covers("/checkout"));
        assert!(scope.covers("/checkout/v2/pay"));
        assert!(scope.covers("/shop/cart"));
        assert!(!scope.covers("/checkouts"));
        assert!(!scope.covers("/"));
        assert!(!scope.covers("/billing"));
        assert!(RouteScope::parse_list("/*").unwrap().covers("/anything"));
        assert!(RouteScope::default().covers("/"));
        for bad in ["checkout", "/a//b", "/a/*/b", "/a/"] {
            let err = RouteScope::parse_list(bad).unwrap_err();
            assert!(err.contains(bad), "{bad}: {err}");
        }
        assert!(routes_overlap("/", "/billing"));
        assert!(routes_overlap("/billing/pay", "/billing"));
        assert!(routes_overlap("/billing", "/billing"));
        assert!(!routes_overlap("/billing", "/billingx"));
    }

    #[test]
    fn tokens_verify_only_with_their_own_secret() {
        let new = NewToken::generate();
        let presented = PresentedToken::parse(&new.token).expect("well formed");
        assert_eq!(presented.id, new.id);
        assert!(presented.matches(&new.hash));
        let other = NewToken::generate();
        assert!(!presented.matches(&other.hash));
        let forged = format!("kh_{}_{}", new.id, "x".repeat(43));
        assert!(!PresentedToken::parse(&forged).unwrap().matches(&new.hash));
        for junk in ["", "kh_", "kh_zz_abc", "Bearer x", "kh_0123456789abcdef_"] {
            assert!(PresentedToken::parse(junk).is_none(), "{junk}");
        }
        assert!(!format!("{new:?}").contains(new.token.as_str()));
    }
}
