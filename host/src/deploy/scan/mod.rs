//! The deploy gate: look inside a component for credentials before it is
//! stored.
//!
//! Only the bytes a component carries as data are searched: core modules'
//! data segments and every custom section, found by parsing the binary with
//! `wasmparser`. Three kinds of finding:
//! 1. the value of a secret in the store (current or in grace), raw or in
//!    any encoding the redactor knows — only Keyhole can see these, since
//!    only it holds the values;
//! 2. well-known credential formats ([`rules`]);
//! 3. high-entropy values assigned to names like key, token or password.
//!
//! Findings name their kind, where they are, and for (1) the secret's name;
//! never the bytes.

pub mod rules;

use crate::crypto::secret_value::SecretValue;
use crate::redact;
use crate::store::{Store, StoreError};
use aho_corasick::{AhoCorasick, MatchKind};
use std::fmt;
use wasmparser::{Encoding, Parser, Payload};

/// Stored values shorter than this are not searched for: they are too
/// short to tell apart from ordinary bytes.
pub const MIN_VALUE_LEN: usize = 8;

/// The identifier of findings that are a stored secret's value.
pub const STORED_SECRET_ID: &str = "stored-secret";

/// What a finding is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FindingKind {
    /// The value of a secret in the store.
    StoredSecret {
        /// The secret's name.
        secret: String,
        /// The version whose value it is.
        version: u32,
        /// How it is encoded in the component.
        encoding: &'static str,
    },
    /// The value of a stored secret, not named or placed: what a deployer
    /// is told about the secrets its own functions are bound to.
    StoredValue,
    /// A well-known credential format, or a high-entropy assignment.
    Credential {
        /// The rule that matched.
        rule: &'static str,
        /// What the rule finds, in words.
        description: &'static str,
    },
}

/// One suspected hard-coded credential.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// `KIND@OFFSET`: what `--allow-finding` names.
    pub id: String,
    /// What it is.
    #[serde(flatten)]
    pub kind: FindingKind,
    /// Where: which data segment or custom section.
    pub section: String,
    /// Its byte offset in the component file.
    pub offset: usize,
    /// How many bytes it spans.
    pub len: usize,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            FindingKind::StoredSecret {
                secret,
                version,
                encoding,
            } => write!(
                f,
                "{}: the value of stored secret `{secret}` (version {version}, {encoding})",
                self.id
            )?,
            FindingKind::StoredValue => {
                return write!(
                    f,
                    "{}: the value of a stored secret bound to your functions, in {}",
                    self.id, self.section
                );
            }
            FindingKind::Credential { description, .. } => {
                write!(f, "{}: {description}", self.id)?;
            }
        }
        write!(
            f,
            " in {}, at byte {} ({} bytes)",
            self.section, self.offset, self.len
        )
    }
}

impl Finding {
    /// The stored secret whose value this is, if it is one.
    pub fn stored_secret(&self) -> Option<&str> {
        match &self.kind {
            FindingKind::StoredSecret { secret, .. } => Some(secret),
            _ => None,
        }
    }

    /// The one finding a deployer is shown for all the values of secrets
    /// its functions are bound to: no name, place or count.
    pub fn anonymous_stored_value() -> Finding {
        Finding {
            id: STORED_SECRET_ID.to_owned(),
            kind: FindingKind::StoredValue,
            section: "the component (where is shown to operators, in the audit trail)".into(),
            offset: 0,
            len: 0,
        }
    }
}

/// Why a component could not be scanned.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The binary does not parse.
    #[error("cannot parse the component to scan it: {0}")]
    Parse(#[from] wasmparser::BinaryReaderError),
    /// The stored values are too many to search for at once.
    #[error("cannot build the search for the store's values: {0}")]
    Values(#[from] aho_corasick::BuildError),
}

/// A secret's value to look for, with what it is called.
pub struct KnownValue {
    /// The secret's name.
    pub secret: String,
    /// The version.
    pub version: u32,
    /// The value; wiped on drop.
    pub value: SecretValue,
}

impl fmt::Debug for KnownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KnownValue({} v{})", self.secret, self.version)
    }
}

/// The values a component must not carry, and the secrets that could not
/// be read to look for.
#[derive(Debug, Default)]
pub struct StoredValues {
    /// Every current and grace version that decrypted.
    pub values: Vec<KnownValue>,
    /// Secrets whose current version failed its integrity check: not
    /// searched for, and worth the operator's attention anyway.
    pub unreadable: Vec<String>,
}

/// Every current and grace version in `store`.
pub fn stored_values(store: &dyn Store) -> Result<StoredValues, StoreError> {
    let mut stored = StoredValues::default();
    for info in store.list_secrets()? {
        let usable = match store.usable_versions(&info.name) {
            Ok(Some(usable)) => usable,
            Ok(None) => continue,
            Err(StoreError::Integrity { name, .. }) => {
                stored.unreadable.push(name);
                continue;
            }
            Err(e) => return Err(e),
        };
        let grace = usable.grace.into_iter().map(|(v, _)| v);
        for version in std::iter::once(usable.current).chain(grace) {
            stored.values.push(KnownValue {
                secret: info.name.clone(),
                version: version.version,
                value: version.value,
            });
        }
    }
    Ok(stored)
}

/// Searches for known values' encodings in one pass over each section.
struct ValueMatcher {
    automaton: Option<AhoCorasick>,
    /// For each pattern: index into the known values, and encoding name.
    owners: Vec<(usize, &'static str)>,
}

impl ValueMatcher {
    fn new(values: &[KnownValue]) -> Result<Self, ScanError> {
        let mut patterns = Vec::new();
        let mut owners = Vec::new();
        for (i, known) in values.iter().enumerate() {
            if known.value.len() < MIN_VALUE_LEN {
                continue;
            }
            for (encoding, bytes) in redact::encodings(known.value.expose()) {
                if bytes.len() >= MIN_VALUE_LEN {
                    patterns.push(bytes);
                    owners.push((i, encoding));
                }
            }
        }
        let automaton = if patterns.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(patterns.iter().map(|p| p.as_slice()))?,
            )
        };
        Ok(Self { automaton, owners })
    }
}

/// A stretch of the component that holds data, and where it sits.
struct Region<'a> {
    bytes: &'a [u8],
    offset: usize,
    section: String,
}

/// The data segments and custom sections of `component` (or of a core
/// module), with their file offsets, at every nesting depth.
fn regions(component: &[u8]) -> Result<Vec<Region<'_>>, ScanError> {
    let mut out = Vec::new();
    let mut modules = 0usize;
    // Which core module each nesting level is, if it is one.
    let mut stack: Vec<Option<usize>> = Vec::new();
    for payload in Parser::new(0).parse_all(component) {
        match payload? {
            Payload::Version { encoding, .. } => {
                stack.push((encoding == Encoding::Module).then(|| {
                    modules += 1;
                    modules - 1
                }));
            }
            Payload::End(_) => {
                stack.pop();
            }
            Payload::DataSection(reader) => {
                let module = stack.last().copied().flatten().unwrap_or(0);
                for (i, data) in reader.into_iter().enumerate() {
                    let data = data?;
                    out.push(Region {
                        bytes: data.data,
                        offset: data.range.end - data.data.len(),
                        section: format!("data segment {i} of core module {module}"),
                    });
                }
            }
            Payload::CustomSection(reader) => {
                let place = match stack.last().copied().flatten() {
                    Some(module) => format!(" of core module {module}"),
                    None => String::new(),
                };
                out.push(Region {
                    bytes: reader.data(),
                    offset: reader.data_offset(),
                    section: format!("custom section `{}`{place}", reader.name().escape_debug()),
                });
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Every finding in `component`, by offset: `known` values first among
/// findings at the same place; a credential format that is also a stored
/// value is reported once, as the stronger finding.
pub fn scan(component: &[u8], known: &[KnownValue]) -> Result<Vec<Finding>, ScanError> {
    let mut findings = scan_all(component, known)?;
    drop_shadowed(&mut findings);
    Ok(findings)
}

/// Removes the credential-format findings that overlap a stored value's
/// finding in `findings`. The deploy gate calls it only after deciding
/// which stored values a caller is told of: a format finding that vanished
/// because of a value the caller is not told of would tell it anyway.
pub fn drop_shadowed(findings: &mut Vec<Finding>) {
    let stored: Vec<(usize, usize)> = findings
        .iter()
        .filter(|f| {
            matches!(
                f.kind,
                FindingKind::StoredSecret { .. } | FindingKind::StoredValue
            )
        })
        .map(|f| (f.offset, f.offset + f.len))
        .collect();
    findings.retain(|f| {
        !matches!(f.kind, FindingKind::Credential { .. })
            || !stored
                .iter()
                .any(|&(s, e)| s < f.offset + f.len && f.offset < e)
    });
}

/// Every finding in `component`, stored values and credential formats
/// alike, overlapping or not, by offset.
pub fn scan_all(component: &[u8], known: &[KnownValue]) -> Result<Vec<Finding>, ScanError> {
    let matcher = ValueMatcher::new(known)?;
    let mut findings = Vec::new();
    for region in regions(component)? {
        if let Some(automaton) = &matcher.automaton {
            for m in automaton.find_iter(region.bytes) {
                let (value, encoding) = matcher.owners[m.pattern().as_usize()];
                let offset = region.offset + m.start();
                findings.push(Finding {
                    id: format!("{STORED_SECRET_ID}@{offset}"),
                    kind: FindingKind::StoredSecret {
                        secret: known[value].secret.clone(),
                        version: known[value].version,
                        encoding,
                    },
                    section: region.section.clone(),
                    offset,
                    len: m.len(),
                });
            }
        }
        for m in rules::find(region.bytes) {
            let offset = region.offset + m.start;
            findings.push(Finding {
                id: format!("{}@{offset}", m.rule),
                kind: FindingKind::Credential {
                    rule: m.rule,
                    description: m.description,
                },
                section: region.section.clone(),
                offset,
                len: m.end - m.start,
            });
        }
    }
    findings.sort_by_key(|f| f.offset);
    Ok(findings)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component whose core module carries `data` in a data segment and
    /// `custom` in a custom section.
    fn component(data: &[u8], custom: &[u8]) -> Vec<u8> {
        let escape =
            |bytes: &[u8]| -> String { bytes.iter().map(|b| format!("\\{b:02x}")).collect() };
        wat::parse_str(format!(
            r#"(component
                 (core module
                   (memory 1)
                   (data (i32.const 16) "{}")
                   (@custom "notes" "{}")))"#,
            escape(data),
            escape(custom)
        ))
        .unwrap()
    }

    fn known(secret: &str, value: &[u8]) -> KnownValue {
        KnownValue {
            secret: secret.into(),
            version: 2,
            value: SecretValue::new(value.to_vec()),
        }
    }

    #[test]
    fn stored_values_are_found_in_every_encoding_and_named_never_shown() {
        let value = b"w3bh00k-s3cret-value-0451";
        let values = [known("gh-webhook", value)];
        for (encoding, bytes) in redact::encodings(value) {
            let mut data = b"prefix:".to_vec();
            data.extend_from_slice(&bytes);
            let bin = component(&data, b"");
            let findings = scan(&bin, &values).unwrap();
            let f = findings
                .iter()
                .find(|f| matches!(&f.kind, FindingKind::StoredSecret { secret, .. } if secret == "gh-webhook"))
                .unwrap_or_else(|| panic!("{encoding} not found: {findings:?}"));
            assert_eq!(&bin[f.offset..f.offset + f.len], &bytes[..f.len]);
            assert!(
                f.section.starts_with("data segment 0 of core module 0"),
                "{}",
                f.section
            );
            let text = f.to_string();
            assert!(
                !text.contains(std::str::from_utf8(&bytes).unwrap_or("\u{0}")),
                "{text}"
            );
            assert!(text.contains("`gh-webhook`"), "{text}");
        }
    }

    #[test]
    fn short_values_are_not_searched_for() {
        let bin = component(b"admin", b"");
        assert!(scan(&bin, &[known("short", b"admin")]).unwrap().is_empty());
    }

    #[test]
    fn custom_sections_are_scanned_and_placed() {
        let token = format!("ghp_{}", "R4nd0mT0k3nV4lu3aBcDeFgHiJkLmNoPqRsT");
        let bin = component(b"nothing here", token.as_bytes());
        let findings = scan(&bin, &[]).unwrap();
        assert_eq!(findings.len(), 1, "{findings:?}");
        let f = &findings[0];
        assert_eq!(f.id, format!("github-pat@{}", f.offset));
        assert_eq!(f.section, "custom section `notes` of core module 0");
        assert_eq!(&bin[f.offset..f.offset + f.len], token.as_bytes());
    }

    #[test]
    fn a_stored_value_shaped_like_a_token_is_reported_once() {
        let token = format!("ghp_{}", "R4nd0mT0k3nV4lu3aBcDeFgHiJkLmNoPqRsT");
        let bin = component(token.as_bytes(), b"");
        let findings = scan(&bin, &[known("gh-token", token.as_bytes())]).unwrap();
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert!(findings[0].id.starts_with("stored-secret@"));
    }

    #[test]
    fn garbage_is_a_parse_error() {
        assert!(scan(b"\0asm\x0d\0\x01\0garbage", &[]).is_err());
    }
}
