//! Egress lists: the hosts an injected secret may be sent to, and the hosts
//! a function may call at all (its manifest's `[outbound]`).
//!
//! A pattern is an exact `host` or `host:port`, or `*.example.com` for any
//! subdomain of `example.com` (not `example.com` itself), optionally behind
//! a scheme. Without one it means `https://`: a bearer token (or any
//! request) leaves over plain `http://` only where the pattern says
//! `http://` in so many words, since nothing else authenticates the host it
//! reaches. A pattern without a port matches only the scheme's default port
//! (443 for https, 80 for http), so `api.example.com` never lets a token
//! reach `api.example.com:8080`. Hosts compare case-insensitively.

use std::fmt;
use std::str::FromStr;

/// One allowed destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EgressPattern {
    /// Plain `http://` (only when the pattern says so) rather than https.
    plain_http: bool,
    host: HostPattern,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum HostPattern {
    /// Exactly this host (lower case).
    Exact(String),
    /// Any host ending in `.` + this suffix (lower case).
    Subdomains(String),
}

/// Why an egress pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid egress host `{pattern}`: {reason}")]
pub struct EgressError {
    /// The pattern as given.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl FromStr for EgressPattern {
    type Err = EgressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let original = s.trim();
        let err = |reason| EgressError {
            pattern: original.to_owned(),
            reason,
        };
        let (plain_http, rest) = if let Some(rest) = strip_prefix_ignore_case(original, "http://") {
            (true, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(original, "https://") {
            (false, rest)
        } else {
            (false, original)
        };
        if rest.contains("://") || rest.contains('/') {
            return Err(err(
                "give a host or host:port, optionally behind http:// or https://, not a URL (no other scheme, no path)",
            ));
        }
        let original_host_part = rest;
        if original_host_part.contains('@') {
            return Err(err("give a host or host:port, without user information"));
        }
        let (host, port) = split_port(original_host_part).map_err(err)?;
        let host = host.to_ascii_lowercase();
        if host.is_empty() {
            return Err(err("the host is empty"));
        }
        let host = if let Some(suffix) = host.strip_prefix("*.") {
            check_host(suffix).map_err(err)?;
            if !suffix.contains('.') {
                return Err(err(
                    "a wildcard must keep at least two labels, e.g. `*.example.com`",
                ));
            }
            HostPattern::Subdomains(suffix.to_owned())
        } else {
            check_host(&host).map_err(err)?;
            HostPattern::Exact(host)
        };
        Ok(EgressPattern {
            plain_http,
            host,
            port,
        })
    }
}

fn strip_prefix_ignore_case<'s>(s: &'s str, prefix: &str) -> Option<&'s str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn split_port(s: &str) -> Result<(&str, Option<u16>), &'static str> {
    // A bracketed IPv6 literal: `[::1]` or `[::1]:8443`.
    if s.starts_with('[') {
        let end = s.find(']').ok_or("an IPv6 literal needs its closing `]`")?;
        let (host, rest) = s.split_at(end + 1);
        return match rest.strip_prefix(':') {
            Some(port) => Ok((host, Some(parse_port(port)?))),
            None if rest.is_empty() => Ok((host, None)),
            None => Err("unexpected text after the IPv6 literal"),
        };
    }
    match s.rsplit_once(':') {
        Some((host, port)) => Ok((host, Some(parse_port(port)?))),
        None => Ok((s, None)),
    }
}

fn parse_port(port: &str) -> Result<u16, &'static str> {
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err("the port must be a number from 1 to 65535"),
        Ok(port) => Ok(port),
    }
}

fn check_host(host: &str) -> Result<(), &'static str> {
    if let Some(bracketed) = host.strip_prefix('[') {
        let inner = bracketed.strip_suffix(']').unwrap_or_default();
        let valid = !inner.is_empty()
            && inner
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
        return if valid {
            Ok(())
        } else {
            Err("not a valid IPv6 literal")
        };
    }
    if host.contains('*') {
        return Err("`*` is allowed only as a leading `*.` label");
    }
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if host.len() > 253 || !host.split('.').all(valid_label) {
        return Err("hosts are dot-separated labels of letters, digits and `-`");
    }
    Ok(())
}

impl EgressPattern {
    /// Whether a request to `host` on `port` over https (or plain http when
    /// `plain_http`) matches.
    pub fn matches(&self, plain_http: bool, host: &str, port: u16) -> bool {
        if plain_http != self.plain_http {
            return false;
        }
        let default_port = if self.plain_http { 80 } else { 443 };
        if port != self.port.unwrap_or(default_port) {
            return false;
        }
        let host = host.to_ascii_lowercase();
        match &self.host {
            HostPattern::Exact(exact) => host == *exact,
            // Wildcards name DNS subdomains; an IP address is never one.
            HostPattern::Subdomains(_) if is_ip_literal(&host) => false,
            HostPattern::Subdomains(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }
}

fn is_ip_literal(host: &str) -> bool {
    host.starts_with('[') || host.parse::<std::net::IpAddr>().is_ok()
}

impl fmt::Display for EgressPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.plain_http {
            f.write_str("http://")?;
        }
        match &self.host {
            HostPattern::Exact(host) => f.write_str(host)?,
            HostPattern::Subdomains(suffix) => write!(f, "*.{suffix}")?,
        }
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

/// The hosts one grant may send its secret to, or one function may call;
/// empty allows none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct EgressList(Vec<EgressPattern>);

impl EgressList {
    /// Parses a comma-separated list such as `api.example.com,*.stripe.com`.
    pub fn parse_list(list: &str) -> Result<Self, EgressError> {
        let mut patterns: Vec<EgressPattern> = list
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        patterns.dedup();
        Ok(EgressList(patterns))
    }

    /// The patterns comma-separated, as [`EgressList::parse_list`] reads
    /// them back (empty for an empty list).
    pub fn to_string_stored(&self) -> String {
        self.0
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether the list allows nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The patterns, in the order given.
    pub fn patterns(&self) -> &[EgressPattern] {
        &self.0
    }

    /// Whether a request to `host` on `port`, over https or plain http,
    /// is allowed.
    pub fn allows(&self, plain_http: bool, host: &str, port: u16) -> bool {
        self.0.iter().any(|p| p.matches(plain_http, host, port))
    }

    /// The patterns of this list that `other` also holds, in this list's
    /// order: what a manifest asks for and an operator approved.
    pub fn intersect(&self, other: &EgressList) -> EgressList {
        EgressList(
            self.0
                .iter()
                .filter(|p| other.0.contains(p))
                .cloned()
                .collect(),
        )
    }

    /// The patterns of this list that `other` lacks.
    pub fn without(&self, other: &EgressList) -> EgressList {
        EgressList(
            self.0
                .iter()
                .filter(|p| !other.0.contains(p))
                .cloned()
                .collect(),
        )
    }
}

impl fmt::Display for EgressList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(none)");
        }
        let names: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&names.join(","))
    }
}

impl serde::Serialize for EgressList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(ToString::to_string))
    }
}

/// A list of host patterns, each checked as `keyhole grant --egress` checks it.
impl<'de> serde::Deserialize<'de> for EgressList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items: Vec<String> = serde::Deserialize::deserialize(d)?;
        items
            .iter()
            .map(|item| item.parse::<EgressPattern>())
            .collect::<Result<Vec<_>, _>>()
            .map(EgressList)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(s: &str) -> EgressList {
        EgressList::parse_list(s).unwrap()
    }

    #[test]
    fn exact_hosts_match_their_default_port_unless_a_port_is_given() {
        let l = list("API.example.com, 127.0.0.1:8080");
        assert!(l.allows(false, "api.example.com", 443));
        assert!(l.allows(false, "Api.Example.Com", 443));
        assert!(!l.allows(false, "api.example.com", 8443));
        assert!(!l.allows(false, "example.com", 443));
        assert!(!l.allows(false, "api.example.com.evil.net", 443));
        assert!(l.allows(false, "127.0.0.1", 8080));
        assert!(!l.allows(false, "127.0.0.1", 8081));
        assert_eq!(l.to_string(), "api.example.com,127.0.0.1:8080");
    }

    #[test]
    fn plain_http_is_allowed_only_where_the_pattern_says_http() {
        let l = list("api.example.com, 127.0.0.1:8080");
        assert!(!l.allows(true, "api.example.com", 80));
        assert!(!l.allows(true, "api.example.com", 443));
        assert!(!l.allows(true, "127.0.0.1", 8080));
        let l = list("HTTP://127.0.0.1:8080, http://plain.example.com, https://tls.example.com");
        assert!(l.allows(true, "127.0.0.1", 8080));
        assert!(!l.allows(false, "127.0.0.1", 8080), "http:// is not https");
        assert!(l.allows(true, "plain.example.com", 80));
        assert!(!l.allows(true, "plain.example.com", 443));
        assert!(l.allows(false, "tls.example.com", 443));
        assert_eq!(
            l.to_string(),
            "http://127.0.0.1:8080,http://plain.example.com,tls.example.com"
        );
        let asked = list("a.example.com,http://b.example.com");
        let approved = list("http://b.example.com,c.example.com");
        assert_eq!(
            asked.intersect(&approved).to_string(),
            "http://b.example.com"
        );
        assert_eq!(asked.without(&approved).to_string(), "a.example.com");
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        let l = list("*.stripe.com");
        assert!(l.allows(false, "api.stripe.com", 443));
        assert!(l.allows(false, "a.b.stripe.com", 443));
        assert!(!l.allows(false, "stripe.com", 443));
        assert!(!l.allows(false, "evilstripe.com", 443));
        assert!(!l.allows(false, "stripe.com.evil.net", 443));
        assert!(
            !list("*.0.0.1").allows(false, "127.0.0.1", 443),
            "not for IPs"
        );
    }

    #[test]
    fn bad_patterns_say_what_is_wrong() {
        for (bad, why) in [
            ("https://api.example.com/v1", "not a URL"),
            ("ftp://api.example.com", "not a URL"),
            ("api.example.com/v1", "not a URL"),
            ("*", "leading `*.`"),
            ("*.com", "at least two labels"),
            ("api.*.com", "leading `*.`"),
            ("api.example.com:0", "port"),
            ("api.example.com:99999", "port"),
            ("user@api.example.com", "user information"),
            ("bad_host.com", "labels"),
            (":443", "empty"),
        ] {
            let err = EgressList::parse_list(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
            assert!(err.contains(bad.trim()), "{bad}: {err}");
        }
        assert!(EgressList::parse_list("").unwrap().is_empty());
        assert!(list("[::1]:8080").allows(false, "[::1]", 8080));
        assert!(EgressList::parse_list("*.[").is_err());
    }
}
