//! The developer's manifest, `keyhole.toml`: what a function is and what it
//! asks for.
//!
//! ```toml
//! name = "webhook-verify"
//! component = "../target/wasm32-wasip2/release/webhook_verify.wasm"
//! routes = ["/webhook"]
//!
//! [limits]
//! memory-mib = 64      # default 64, at most 1024
//! timeout-ms = 5000    # default 10000, at most 300000
//! max-concurrency = 20 # requests at once; default: the node's fair share
//!
//! [bindings.GITHUB_WEBHOOK]
//! allow = ["hmac"]
//!
//! [outbound]                  # hosts it calls; none by default
//! allow = ["api.github.com"]  # https unless a pattern says http://
//!
//! [config]                    # non-secret settings, read through wasi:config/store
//! greeting = "hello"
//! ```
//!
//! Unknown fields are errors, and every error names the file and the line.

use crate::names;
use crate::operations::{Operation, OperationSet};
use crate::outbound::egress::{EgressList, EgressPattern};
use crate::store::RequestedBinding;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Memory limit when the manifest names none, in MiB.
pub const DEFAULT_MEMORY_MIB: u32 = 64;
/// The largest memory limit a manifest may ask for, in MiB.
pub const MAX_MEMORY_MIB: u32 = 1024;
/// Wall-clock limit per request when the manifest names none, in ms.
pub const DEFAULT_TIMEOUT_MS: u32 = 10_000;
/// The longest wall-clock limit a manifest may ask for, in ms.
pub const MAX_TIMEOUT_MS: u32 = 300_000;
/// The most requests at once a manifest may ask for (a node holds its
/// functions to its own share too: `keyhole serve --max-function-share`).
pub const MAX_CONCURRENCY: u32 = 100_000;
/// The most `[config]` entries a manifest may have.
pub const MAX_CONFIG_ENTRIES: usize = 256;
/// The longest `[config]` key, in bytes.
pub const MAX_CONFIG_KEY_LEN: usize = 256;
/// The longest `[config]` value, in bytes.
pub const MAX_CONFIG_VALUE_LEN: usize = 16 * 1024;

/// A checked manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The function's name.
    pub name: String,
    /// The component file, resolved against the manifest's folder.
    pub component: PathBuf,
    /// Path prefixes the function serves.
    pub routes: Vec<String>,
    /// Memory limit in MiB.
    pub memory_mib: u32,
    /// Wall-clock limit per request in ms.
    pub timeout_ms: u32,
    /// Requests it may run at once, if it names a limit (below the node's
    /// share for one function, which always applies).
    pub max_concurrency: Option<u32>,
    /// Bindings requested, in name order.
    pub bindings: Vec<RequestedBinding>,
    /// Hosts it asks to call (an operator approves them).
    pub outbound: EgressList,
    /// Non-secret settings, by key, that the function reads through
    /// `wasi:config/store`.
    pub config: BTreeMap<String, String>,
}

/// Why a manifest was refused: the file, the line when known, and the rule.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read manifest {path}")]
    Read {
        /// The manifest path.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not have the manifest's shape.
    #[error("invalid manifest {path}: {message}")]
    Syntax {
        /// The manifest path.
        path: PathBuf,
        /// The parser's explanation, with line and column.
        message: String,
    },
    /// A value breaks a rule.
    #[error("invalid manifest {path}, line {line}: {message}")]
    Invalid {
        /// The manifest path.
        path: PathBuf,
        /// 1-based line of the offending value.
        line: usize,
        /// What is wrong and what is allowed.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawManifest {
    name: Spanned<String>,
    component: Spanned<String>,
    routes: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    bindings: BTreeMap<Spanned<String>, RawBinding>,
    #[serde(default)]
    outbound: Option<RawOutbound>,
    #[serde(default)]
    config: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawOutbound {
    allow: Vec<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawLimits {
    memory_mib: Option<Spanned<u32>>,
    timeout_ms: Option<Spanned<u32>>,
    max_concurrency: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawBinding {
    allow: Spanned<Vec<Spanned<String>>>,
}

/// Reads and checks the manifest at `path`.
pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: path.to_owned(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, path, base)
}

/// Checks manifest `text`, read from `path`, resolving the component
/// against `base`.
pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Manifest, ManifestError> {
    let raw: RawManifest = toml::from_str(text).map_err(|e| ManifestError::Syntax {
        path: path.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    let invalid = |span: std::ops::Range<usize>, message: String| ManifestError::Invalid {
        path: path.to_owned(),
        line: text[..span.start.min(text.len())].matches('\n').count() + 1,
        message,
    };

    names::validate("function", raw.name.get_ref())
        .map_err(|e| invalid(raw.name.span(), e.to_string()))?;
    if raw.component.get_ref().trim().is_empty() {
        return Err(invalid(
            raw.component.span(),
            "`component` is empty: give the path of the .wasm file".into(),
        ));
    }
    if raw.routes.get_ref().is_empty() {
        return Err(invalid(
            raw.routes.span(),
            "`routes` is empty: give at least one path prefix, e.g. [\"/hello\"]".into(),
        ));
    }
    let mut routes = Vec::new();
    for route in raw.routes.get_ref() {
        check_route(route.get_ref()).map_err(|m| invalid(route.span(), m))?;
        if routes.contains(route.get_ref()) {
            return Err(invalid(
                route.span(),
                format!("route `{}` is listed twice", route.get_ref()),
            ));
        }
        routes.push(route.get_ref().clone());
    }

    let memory_mib = match &raw.limits.memory_mib {
        None => DEFAULT_MEMORY_MIB,
        Some(m) if (1..=MAX_MEMORY_MIB).contains(m.get_ref()) => *m.get_ref(),
        Some(m) => {
            return Err(invalid(
                m.span(),
                format!("`memory-mib` must be between 1 and {MAX_MEMORY_MIB}"),
            ));
        }
    };
    let timeout_ms = match &raw.limits.timeout_ms {
        None => DEFAULT_TIMEOUT_MS,
        Some(t) if (1..=MAX_TIMEOUT_MS).contains(t.get_ref()) => *t.get_ref(),
        Some(t) => {
            return Err(invalid(
                t.span(),
                format!("`timeout-ms` must be between 1 and {MAX_TIMEOUT_MS}"),
            ));
        }
    };

    let max_concurrency = match &raw.limits.max_concurrency {
        None => None,
        Some(n) if (1..=MAX_CONCURRENCY).contains(n.get_ref()) => Some(*n.get_ref()),
        Some(n) => {
            return Err(invalid(
                n.span(),
                format!("`max-concurrency` must be between 1 and {MAX_CONCURRENCY}"),
            ));
        }
    };

    let mut bindings = Vec::new();
    for (name, binding) in &raw.bindings {
        names::validate("binding", name.get_ref())
            .map_err(|e| invalid(name.span(), e.to_string()))?;
        let mut operations = OperationSet::EMPTY;
        for op in binding.allow.get_ref() {
            let op: Operation =
                op.get_ref()
                    .parse()
                    .map_err(|e: crate::operations::UnknownOperation| {
                        invalid(op.span(), format!("binding `{}`: {e}", name.get_ref()))
                    })?;
            operations = operations.with(op);
        }
        if operations.is_empty() {
            return Err(invalid(
                binding.allow.span(),
                format!(
                    "binding `{}` allows nothing: list the operations it needs, e.g. allow = [\"hmac\"]",
                    name.get_ref()
                ),
            ));
        }
        bindings.push(RequestedBinding {
            binding: name.get_ref().clone(),
            operations,
        });
    }

    let mut outbound = Vec::new();
    for pattern in raw.outbound.iter().flat_map(|o| &o.allow) {
        let parsed: EgressPattern =
            pattern
                .get_ref()
                .parse()
                .map_err(|e: crate::outbound::egress::EgressError| {
                    invalid(pattern.span(), format!("[outbound] {e}"))
                })?;
        outbound.push(parsed.to_string());
    }
    let outbound =
        EgressList::parse_list(&outbound.join(",")).map_err(|e| invalid(0..0, e.to_string()))?;

    if raw.config.len() > MAX_CONFIG_ENTRIES {
        let first = raw.config.keys().next().map_or(0..0, Spanned::span);
        return Err(invalid(
            first,
            format!(
                "[config] has {} entries; at most {MAX_CONFIG_ENTRIES}",
                raw.config.len()
            ),
        ));
    }
    let mut config = BTreeMap::new();
    for (key, value) in &raw.config {
        check_config_key(key.get_ref()).map_err(|m| invalid(key.span(), m))?;
        let toml::Value::String(text) = value.get_ref() else {
            return Err(invalid(
                value.span(),
                format!(
                    "[config] `{}` is a {}: config values are strings (quote it)",
                    key.get_ref(),
                    value.get_ref().type_str()
                ),
            ));
        };
        if text.len() > MAX_CONFIG_VALUE_LEN {
            return Err(invalid(
                value.span(),
                format!(
                    "[config] `{}` is {} bytes long; at most {MAX_CONFIG_VALUE_LEN} (config is for settings, not data)",
                    key.get_ref(),
                    text.len()
                ),
            ));
        }
        config.insert(key.get_ref().clone(), text.clone());
    }

    Ok(Manifest {
        config,
        outbound,
        name: raw.name.into_inner(),
        component: base.join(raw.component.get_ref()),
        routes,
        memory_mib,
        timeout_ms,
        max_concurrency,
        bindings,
    })
}

/// A `[config]` key: 1 to [`MAX_CONFIG_KEY_LEN`] bytes, no control
/// characters (keys are echoed in messages and listings).
fn check_config_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_CONFIG_KEY_LEN {
        return Err(format!(
            "[config] keys are 1 to {MAX_CONFIG_KEY_LEN} bytes long (got {})",
            key.len()
        ));
    }
    if key.chars().any(char::is_control) {
        return Err(format!(
            "[config] key `{}` holds a control character",
            key.escape_debug()
        ));
    }
    Ok(())
}

/// A route is an absolute path prefix: `/`, or `/a/b` with no trailing
/// slash, query, fragment, whitespace, or `.`/`..` segment.
pub fn check_route(route: &str) -> Result<(), String> {
    let fail = |why: &str| Err(format!("route `{route}` {why}"));
    if !route.starts_with('/') {
        return fail("must start with `/`");
    }
    if route.len() > 1 && route.ends_with('/') {
        return fail("must not end with `/`");
    }
    if route
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '%'))
    {
        return fail("must not contain whitespace, `?`, `#` or `%`");
    }
    if route
        .split('/')
        .skip(1)
        .any(|seg| route.len() > 1 && (seg.is_empty() || seg == "." || seg == ".."))
    {
        return fail("must not contain empty, `.` or `..` segments");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Manifest, ManifestError> {
        parse(text, Path::new("keyhole.toml"), Path::new("/app"))
    }

    const GOOD: &str = r#"
name = "webhook-verify"
component = "target/f.wasm"
routes = ["/webhook"]

[limits]
memory-mib = 32

[bindings.GITHUB_WEBHOOK]
allow = ["hmac"]
"#;

    #[test]
    fn parses_a_good_manifest_with_defaults() {
        let m = check(GOOD).unwrap();
        assert_eq!(m.name, "webhook-verify");
        assert_eq!(m.component, Path::new("/app/target/f.wasm"));
        assert_eq!((m.memory_mib, m.timeout_ms), (32, DEFAULT_TIMEOUT_MS));
        assert_eq!(m.bindings[0].binding, "GITHUB_WEBHOOK");
        assert_eq!(m.bindings[0].operations.to_string(), "hmac");
        assert!(m.outbound.is_empty(), "no outbound hosts unless asked");
    }

    #[test]
    fn config_is_strings_by_key_and_checked() {
        assert!(check(GOOD).unwrap().config.is_empty());
        let m = check(&format!(
            "{GOOD}\n[config]\ngreeting = \"hi\"\n\"api.url\" = \"https://x\"\n"
        ))
        .unwrap();
        assert_eq!(m.config["greeting"], "hi");
        assert_eq!(m.config["api.url"], "https://x");
        let err = check(&format!("{GOOD}\n[config]\nretries = 3\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 13") && err.contains("config values are strings"),
            "{err}"
        );
        let long = "x".repeat(MAX_CONFIG_VALUE_LEN + 1);
        let err = check(&format!("{GOOD}\n[config]\nbig = \"{long}\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most 16384"), "{err}");
        let err = check(&format!("{GOOD}\n[config]\n\"a\\u0007b\" = \"v\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("control character"), "{err}");
    }

    #[test]
    fn max_concurrency_is_optional_and_checked() {
        assert_eq!(check(GOOD).unwrap().max_concurrency, None);
        let m = check(&GOOD.replace("memory-mib = 32", "memory-mib = 32\nmax-concurrency = 4"));
        assert_eq!(m.unwrap().max_concurrency, Some(4));
        let zero = check(&GOOD.replace("memory-mib = 32", "memory-mib = 32\nmax-concurrency = 0"))
            .unwrap_err()
            .to_string();
        assert!(
            zero.contains("line 8") && zero.contains("`max-concurrency` must be between 1"),
            "{zero}"
        );
    }

    #[test]
    fn outbound_hosts_are_patterns_checked_with_their_line() {
        let m = check(&format!(
            "{GOOD}\n[outbound]\nallow = [\"api.github.com\", \"HTTP://127.0.0.1:9000\", \"*.stripe.com:8443\"]\n"
        ))
        .unwrap();
        assert_eq!(
            m.outbound.to_string(),
            "api.github.com,http://127.0.0.1:9000,*.stripe.com:8443"
        );
        let err = check(&format!(
            "{GOOD}\n[outbound]\nallow = [\"ok.example.com\",\n  \"https://x.example.com/path\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("line 14") && err.contains("not a URL"),
            "{err}"
        );
        let err = check(&format!("{GOOD}\n[outbound]\nhosts = []\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("hosts"), "{err}");
    }

    #[test]
    fn unknown_field_is_named_with_its_line() {
        let err = check(&GOOD.replace("memory-mib = 32", "memory = 32"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `memory`"), "{err}");
        assert!(err.contains("line 7"), "{err}");
    }

    #[test]
    fn bad_values_name_their_line() {
        let cases = [
            (
                GOOD.replace("\"/webhook\"", "\"webhook\""),
                "line 4",
                "must start with `/`",
            ),
            (
                GOOD.replace("memory-mib = 32", "memory-mib = 4096"),
                "line 7",
                "between 1 and 1024",
            ),
            (
                GOOD.replace("[\"hmac\"]", "[\"hmac\", \"encrypt\"]"),
                "line 10",
                "unknown operation `encrypt`",
            ),
            (
                GOOD.replace("[\"hmac\"]", "[]"),
                "line 10",
                "allows nothing",
            ),
            (
                GOOD.replace("\"webhook-verify\"", "\"bad name\""),
                "line 2",
                "function name",
            ),
            (
                GOOD.replace("GITHUB_WEBHOOK", "\"A B\""),
                "line 9",
                "binding name",
            ),
        ];
        for (text, line, what) in cases {
            let err = check(&text).unwrap_err().to_string();
            assert!(
                err.contains(line) && err.contains(what),
                "expected {line} / {what}: {err}"
            );
        }
    }

    #[test]
    fn syntax_errors_and_missing_fields() {
        let err = check("name = \"x\"\nroutes = [\n").unwrap_err().to_string();
        assert!(err.contains("line"), "{err}");
        let err = check("name = \"x\"\nroutes = [\"/x\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing field `component`"), "{err}");
    }
}
