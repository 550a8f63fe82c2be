//! Rules for the names people choose: secrets, functions, bindings.

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} name `{name}` is invalid: {why}")]
pub struct NameError {
    /// What the name is for ("secret", "function", "binding").
    pub kind: &'static str,
    /// The name as given (names are not secret).
    pub name: String,
    /// What rule it breaks.
    pub why: &'static str,
}

/// The longest name accepted anywhere.
pub const MAX_NAME_LEN: usize = 128;

/// Checks a secret, function or binding name: 1 to 128 characters of ASCII
/// letters, digits, `-`, `_` and `.`, starting with a letter or digit.
/// Such names are safe in paths, logs, and encryption context strings.
pub fn validate(kind: &'static str, name: &str) -> Result<(), NameError> {
    let fail = |why| {
        Err(NameError {
            kind,
            name: name.to_owned(),
            why,
        })
    };
    if name.is_empty() {
        return fail("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return fail("it is longer than 128 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return fail("use only ASCII letters, digits, `-`, `_` and `.`");
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return fail("it must start with a letter or digit");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn accepts_ordinary_names() {
        for name in ["GITHUB_WEBHOOK", "gh-webhook-prod", "a", "v1.2"] {
            validate("secret", name).unwrap();
        }
    }

    #[test]
    fn refuses_odd_names() {
        for name in ["", "-x", "a b", "a/b", "é", &"x".repeat(129)] {
            let err = validate("secret", name).unwrap_err();
            assert!(err.to_string().starts_with("secret name"), "{err}");
        }
    }
}
