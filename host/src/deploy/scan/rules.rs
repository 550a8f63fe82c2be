//! Well-known credential formats, modelled on gitleaks' rule set, and the
//! generic "a high-entropy value assigned to something called key, token,
//! secret or password" rule.

use regex::bytes::Regex;
use std::sync::LazyLock;

/// One credential format.
pub struct Rule {
    /// Stable identifier, used in finding IDs and `--allow-finding`.
    pub id: &'static str,
    /// What a match is, in words.
    pub description: &'static str,
    regex: Regex,
}

/// Every format rule. Unlike gitleaks, which reads source text, no rule
/// anchors on word boundaries: a compiler packs string constants back to
/// back, so a token in a binary usually touches its neighbours.
pub static RULES: LazyLock<Vec<Rule>> =
    LazyLock::new(|| {
        [
        (
            "aws-access-key",
            "an AWS access key ID",
            r"(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}",
        ),
        ("github-pat", "a GitHub personal access token", r"ghp_[0-9a-zA-Z]{36}"),
        (
            "github-fine-grained-pat",
            "a GitHub fine-grained personal access token",
            r"github_pat_[0-9a-zA-Z_]{82}",
        ),
        ("github-oauth", "a GitHub OAuth access token", r"gho_[0-9a-zA-Z]{36}"),
        (
            "github-app-token",
            "a GitHub app token",
            r"(?:ghu|ghs)_[0-9a-zA-Z]{36}",
        ),
        (
            "github-refresh-token",
            "a GitHub refresh token",
            r"ghr_[0-9a-zA-Z]{36}",
        ),
        (
            "gitlab-pat",
            "a GitLab personal access token",
            r"glpat-[0-9a-zA-Z_\-]{20}",
        ),
        (
            "gitlab-pipeline-trigger-token",
            "a GitLab pipeline trigger token",
            r"glptt-[0-9a-f]{40}",
        ),
        (
            "gitlab-runner-registration-token",
            "a GitLab runner registration token",
            r"GR1348941[0-9a-zA-Z_\-]{20}",
        ),
        (
            "stripe-key",
            "a Stripe secret or restricted key",
            r"(?:sk|rk)_(?:test|live|prod)_[0-9a-zA-Z]{10,99}",
        ),
        (
            "slack-bot-token",
            "a Slack bot token",
            r"xoxb-[0-9]{10,13}-[0-9]{10,13}[a-zA-Z0-9-]{0,64}",
        ),
        (
            "slack-user-token",
            "a Slack user token",
            r"xox[pe](?:-[0-9]{10,13}){3}-[a-zA-Z0-9-]{28,34}",
        ),
        (
            "slack-app-token",
            "a Slack app-level token",
            r"(?i)xapp-[0-9]-[A-Z0-9]+-[0-9]+-[a-z0-9]+",
        ),
        (
            "slack-webhook-url",
            "a Slack incoming-webhook URL",
            r"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/]{43,56}",
        ),
        (
            "private-key",
            "a PEM private-key block",
            r"-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----\s*[A-Za-z0-9+/=\s:,\-]{64,}",
        ),
        (
            "jwt",
            "a JSON Web Token",
            r"ey[a-zA-Z0-9]{17,}\.ey[a-zA-Z0-9/\\_-]{17,}\.(?:[a-zA-Z0-9/\\_-]{10,}={0,2})?",
        ),
    ]
    .into_iter()
    .map(|(id, description, pattern)| Rule {
        id,
        description,
        // ASCII semantics: binaries are bytes, not UTF-8 text.
        regex: Regex::new(&format!("(?-u){pattern}")).expect("rule patterns are valid"),
    })
    .collect()
    });

/// The generic rule's identifier.
pub const GENERIC_ID: &str = "high-entropy-assignment";

/// A value of 10–150 token characters assigned (`=`, `:`, `=>`, …) to a
/// name containing key, token, secret, password and the like.
static GENERIC: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?-u)(?i)(?:key|api|token|secret|client|passwd|password|auth|access|bearer)[0-9a-z\-_\t .]{0,20}['"\s]{0,3}(?:=|>|:{1,3}=|\|\|:|<=|=>|:|\?=|\s)['"\s=`]{0,5}([0-9a-z\-_.=+/]{10,150})(?:['"\s`;,&]|$)"#,
    )
    .expect("the generic pattern is valid")
});

/// Shannon entropy of `bytes`, in bits per byte.
pub fn entropy(bytes: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for &b in bytes {
        counts[usize::from(b)] += 1;
    }
    let len = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / len;
            -p * p.log2()
        })
        .sum()
}

/// The least entropy (bits per byte) a generic value needs: below this it
/// reads as a word or a placeholder rather than a credential.
pub const MIN_GENERIC_ENTROPY: f64 = 3.5;

/// A rule's match in a piece of bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMatch {
    /// The rule's identifier.
    pub rule: &'static str,
    /// What it is, in words.
    pub description: &'static str,
    /// Where it starts in the bytes searched.
    pub start: usize,
    /// Where it ends.
    pub end: usize,
}

/// Every credential-format match in `bytes`, then every generic match that
/// does not overlap one of them, by position.
pub fn find(bytes: &[u8]) -> Vec<RuleMatch> {
    let mut found: Vec<RuleMatch> = Vec::new();
    for rule in RULES.iter() {
        found.extend(rule.regex.find_iter(bytes).map(|m| RuleMatch {
            rule: rule.id,
            description: rule.description,
            start: m.start(),
            end: m.end(),
        }));
    }
    for captures in GENERIC.captures_iter(bytes) {
        let value = captures.get(1).expect("group 1 always takes part");
        let text = value.as_bytes();
        let plausible = text.iter().any(u8::is_ascii_digit)
            && text.iter().any(u8::is_ascii_alphabetic)
            && entropy(text) >= MIN_GENERIC_ENTROPY;
        let overlaps = found
            .iter()
            .any(|f| f.start < value.end() && value.start() < f.end);
        if plausible && !overlaps {
            found.push(RuleMatch {
                rule: GENERIC_ID,
                description: "a high-entropy value assigned to a key, token, secret or password",
                start: value.start(),
                end: value.end(),
            });
        }
    }
    found.sort_by_key(|m| (m.start, m.end));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (rule, text that must match it, similar text that must not).
    /// Tokens are assembled at run time so this file trips no scanner.
    fn fixtures() -> Vec<(&'static str, String, String)> {
        let r36 = "R4nd0mT0k3nV4lu3aBcDeFgHiJkLmNoPqRsT";
        vec![
            (
                "aws-access-key",
                format!("id={}{}", "AKIA", "IOSFODNN7EXAMPL2"),
                format!("{}{}", "AKIA", "iosfodnn7exampl2"),
            ),
            (
                "github-pat",
                format!("ghp_{r36}"),
                format!("ghp_{}", &r36[..20]),
            ),
            (
                "github-fine-grained-pat",
                format!("github_pat_{}", "A1b2C3d4E5_".repeat(7) + &"x".repeat(5)),
                format!("github_pat_{}", "short"),
            ),
            ("github-oauth", format!("gho_{r36}"), format!("gho-{r36}")),
            (
                "github-app-token",
                format!("ghs_{r36}"),
                format!("ghx_{r36}"),
            ),
            (
                "github-refresh-token",
                format!("ghr_{r36}"),
                format!("ghr_{}", &r36[..35]),
            ),
            (
                "gitlab-pat",
                format!("glpat-{}", "xYz12-abcDEF_3456789"),
                format!("glpat-{}", "tooshort"),
            ),
            (
                "gitlab-pipeline-trigger-token",
                format!("glptt-{}", "0123456789abcdef".repeat(3)[..40].to_owned()),
                format!("glptt-{}", "Z".repeat(40)),
            ),
            (
                "gitlab-runner-registration-token",
                format!("GR1348941{}", "abcDEF123_-xyzXYZ987"),
                format!("GR1348942{}", "abcDEF123_-xyzXYZ987"),
            ),
            (
                "stripe-key",
                format!("{}_live_{}", "sk", "4eC39HqLyjWDarjtT1zdp7dc"),
                format!("{}_demo_{}", "sk", "4eC39HqLyjWDarjtT1zdp7dc"),
            ),
            (
                "slack-bot-token",
                format!(
                    "{}-{}-{}-{}",
                    "xoxb", "1234567890", "1234567890123", "AbCdEfGh"
                ),
                format!("{}-{}", "xoxb", "notdigits"),
            ),
            (
                "slack-user-token",
                format!(
                    "{}-{}-{}-{}-{}",
                    "xoxp",
                    "1234567890",
                    "1234567890",
                    "1234567890",
                    "a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4"
                ),
                format!("{}-{}", "xoxp", "1234567890"),
            ),
            (
                "slack-app-token",
                format!(
                    "{}-1-{}-{}-{}",
                    "xapp", "A01B2C3D4E5", "1234567890123", "abc123def456"
                ),
                format!("{}-x-{}", "xapp", "A01B2C3D4E5"),
            ),
            (
                "slack-webhook-url",
                format!(
                    "https://{}/services/{}",
                    "hooks.slack.com", "T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
                ),
                format!("https://{}/services/", "hooks.slack.com"),
            ),
            (
                "private-key",
                format!(
                    "-----BEGIN {}-----\n{}\n-----END PRIVATE KEY-----",
                    "PRIVATE KEY",
                    "MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF"
                ),
                // A label alone, as PEM parsers carry it, is not a key.
                format!("-----BEGIN {}-----", "PRIVATE KEY"),
            ),
            (
                "jwt",
                format!(
                    "{}.{}.{}",
                    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
                    "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ",
                    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
                ),
                "eyes.eyebrows.eyelashes".to_owned(),
            ),
            (
                GENERIC_ID,
                format!("api_key = \"{}\"", "q8ZfN2vLp0XwYt7RbKc4"),
                // Low entropy, or no digits: words and placeholders.
                "password = \"changeme-changeme\" token: placeholder_value".to_owned(),
            ),
        ]
    }

    #[test]
    fn every_rule_finds_its_fixture_and_ignores_the_near_miss() {
        for (rule, hit, miss) in fixtures() {
            let found = find(hit.as_bytes());
            assert!(
                found.iter().any(|m| m.rule == rule),
                "{rule} missed {hit:?}: {found:?}"
            );
            let found = find(miss.as_bytes());
            assert!(
                found.is_empty(),
                "{rule}: false positive on {miss:?}: {found:?}"
            );
        }
    }

    #[test]
    fn every_rule_has_a_fixture() {
        let covered: Vec<&str> = fixtures().iter().map(|f| f.0).collect();
        for rule in RULES.iter() {
            assert!(covered.contains(&rule.id), "{} has no fixture", rule.id);
        }
    }

    #[test]
    fn tokens_packed_between_other_constants_are_found() {
        for (rule, hit, _) in fixtures() {
            if rule == GENERIC_ID {
                continue;
            }
            let packed = format!("Abc123{hit}Xyz789");
            assert!(
                find(packed.as_bytes()).iter().any(|m| m.rule == rule),
                "{rule} missed when packed: {packed:?}"
            );
        }
    }

    #[test]
    fn matches_are_found_inside_binary_data() {
        let mut bytes = vec![0u8, 0xff, 0x13];
        let token = format!("ghp_{}", "R4nd0mT0k3nV4lu3aBcDeFgHiJkLmNoPqRsT");
        bytes.extend_from_slice(token.as_bytes());
        bytes.extend_from_slice(&[0x80, 0x00]);
        let found = find(&bytes);
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].start, found[0].end), (3, 3 + token.len()));
    }

    #[test]
    fn entropy_tells_random_from_repetitive() {
        assert_eq!(entropy(b"aaaaaaaa"), 0.0);
        assert!((entropy(b"abcdefgh") - 3.0).abs() < 1e-9);
        assert!(entropy(b"q8ZfN2vLp0XwYt7RbKc4") > MIN_GENERIC_ENTROPY);
    }
}
