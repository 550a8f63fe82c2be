//! Redaction of secret values from text a guest writes.
//!
//! A [`Redactor`] knows every encoding of every value a function can open
//! that a careless (or hostile) guest might print: raw bytes, hex in both
//! cases, base64 and base64url (padded, unpadded, and the runs that stay the
//! same wherever the value sits in a longer base64 stream), and
//! percent-encoding. Each match becomes `[REDACTED:BINDING]`.
//!
//! Patterns are held in wiped buffers; matching uses `memchr`'s substring
//! search, which keeps no copy of them.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use std::fmt;
use zeroize::Zeroizing;

/// Fragments shorter than this (from the offset base64 forms) are not
/// redacted on their own: they are too short to tell apart from ordinary text.
const MIN_FRAGMENT_LEN: usize = 8;

struct Pattern {
    bytes: Zeroizing<Vec<u8>>,
    label: usize,
}

/// Finds and replaces the encodings of a set of secret values.
#[derive(Default)]
pub struct Redactor {
    patterns: Vec<Pattern>,
    labels: Vec<Vec<u8>>,
    longest: usize,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} patterns)", self.patterns.len())
    }
}

impl Redactor {
    /// A redactor for `values`, each named by the binding it is shown as.
    pub fn new<'a>(values: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Self {
        let mut redactor = Redactor::default();
        for (binding, value) in values {
            if value.is_empty() {
                continue;
            }
            redactor
                .labels
                .push(format!("[REDACTED:{binding}]").into_bytes());
            let label = redactor.labels.len() - 1;
            for (_, bytes) in encodings(value) {
                if redactor.patterns.iter().any(|p| p.bytes == bytes) {
                    continue;
                }
                redactor.longest = redactor.longest.max(bytes.len());
                redactor.patterns.push(Pattern { bytes, label });
            }
        }
        redactor
    }

    /// The length of the longest pattern: text closer than this to the end
    /// of what has arrived may still turn out to be part of a match.
    pub fn longest(&self) -> usize {
        self.longest
    }

    /// The leftmost match at or after `from` (the longest, at a tie), as
    /// `(start, end, label)`.
    fn find(&self, text: &[u8], from: usize) -> Option<(usize, usize, usize)> {
        let mut best: Option<(usize, usize, usize)> = None;
        for pattern in &self.patterns {
            // Only a match starting no later than the best so far can win.
            let limit = best.map_or(text.len(), |(start, _, _)| {
                (start + pattern.bytes.len()).min(text.len())
            });
            if limit <= from {
                continue;
            }
            if let Some(at) = memchr::memmem::find(&text[from..limit], &pattern.bytes) {
                let start = from + at;
                let end = start + pattern.bytes.len();
                let better = match best {
                    None => true,
                    Some((s, e, _)) => start < s || (start == s && end > e),
                };
                if better {
                    best = Some((start, end, pattern.label));
                }
            }
        }
        best
    }

    /// Redacts the part of `text` that can be decided now and returns it with
    /// how many bytes of `text` it covers. With `complete`, that is all of
    /// it; otherwise the tail that a later write could complete into a match
    /// is left for the next call.
    pub fn redact_prefix(&self, text: &[u8], complete: bool) -> (Vec<u8>, usize) {
        let mut cut = if complete || self.longest == 0 {
            text.len()
        } else {
            text.len().saturating_sub(self.longest - 1)
        };
        let mut out = Vec::with_capacity(cut);
        let mut at = 0;
        while let Some((start, end, label)) = self.find(text, at) {
            if start >= cut {
                break;
            }
            if end > cut {
                // A match straddles the cut: keep all of it for later.
                cut = start;
                break;
            }
            out.extend_from_slice(&text[at..start]);
            out.extend_from_slice(&self.labels[label]);
            at = end;
        }
        out.extend_from_slice(&text[at..cut]);
        (out, cut)
    }
}

impl Redactor {
    /// Redacts all of `text`, the last of a stream that will be logged,
    /// knowing that `following` came after it and will not be: a match that
    /// starts in `text` and runs on into `following` is replaced whole, so a
    /// value straddling a cut shows none of its bytes.
    pub fn redact_before_cut(&self, text: &[u8], following: &[u8]) -> Vec<u8> {
        let look = following.len().min(self.longest.saturating_sub(1));
        let mut joined = Zeroizing::new(Vec::with_capacity(text.len() + look));
        joined.extend_from_slice(text);
        joined.extend_from_slice(&following[..look]);
        let mut out = Vec::with_capacity(text.len());
        let mut at = 0;
        while at < text.len() {
            let Some((start, end, label)) = self.find(&joined, at) else {
                break;
            };
            if start >= text.len() {
                break;
            }
            out.extend_from_slice(&text[at..start]);
            out.extend_from_slice(&self.labels[label]);
            at = end;
        }
        if at < text.len() {
            out.extend_from_slice(&text[at..]);
        }
        out
    }
}

/// Every form of `value` the redactor (and the deploy scanner) looks for,
/// each with the name of its encoding.
pub(crate) fn encodings(value: &[u8]) -> Vec<(&'static str, Zeroizing<Vec<u8>>)> {
    let mut out = vec![
        ("raw", Zeroizing::new(value.to_vec())),
        ("hex", Zeroizing::new(hex::encode(value).into_bytes())),
        ("hex", Zeroizing::new(hex::encode_upper(value).into_bytes())),
        (
            "percent-encoded",
            percent_encode(value, b"0123456789ABCDEF"),
        ),
        (
            "percent-encoded",
            percent_encode(value, b"0123456789abcdef"),
        ),
    ];
    for (name, engine) in [("base64", &STANDARD), ("base64url", &URL_SAFE)] {
        out.push((name, Zeroizing::new(engine.encode(value).into_bytes())));
    }
    for (name, engine) in [
        ("base64", &STANDARD_NO_PAD),
        ("base64url", &URL_SAFE_NO_PAD),
    ] {
        out.push((name, Zeroizing::new(engine.encode(value).into_bytes())));
        for offset in 0..3 {
            let fragment = base64_fragment(engine, value, offset);
            if fragment.len() >= MIN_FRAGMENT_LEN {
                out.push((name, fragment));
            }
        }
    }
    out
}

/// The base64 characters that depend only on `value` when it starts
/// `offset` bytes into a 3-byte group of a longer stream.
fn base64_fragment(
    engine: &base64::engine::GeneralPurpose,
    value: &[u8],
    offset: usize,
) -> Zeroizing<Vec<u8>> {
    let mut shifted = Zeroizing::new(vec![0u8; offset]);
    shifted.extend_from_slice(value);
    let encoded = Zeroizing::new(engine.encode(shifted.as_slice()).into_bytes());
    // Characters holding any bit of the leading filler, and a trailing
    // character holding bits of whatever follows, depend on the context.
    let first = [0, 2, 3][offset];
    let last = (8 * (offset + value.len())) / 6;
    Zeroizing::new(encoded.get(first..last).unwrap_or_default().to_vec())
}

/// Percent-encoding of every byte outside RFC 3986's unreserved set.
fn percent_encode(value: &[u8], digits: &[u8; 16]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(value.len() * 3));
    for &b in value {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(&[
                b'%',
                digits[usize::from(b >> 4)],
                digits[usize::from(b & 15)],
            ]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"s3cr3t/value+with=odd&chars\x01\xff";

    impl Redactor {
        /// `text` with every match replaced.
        fn redact(&self, text: &[u8]) -> Vec<u8> {
            self.redact_prefix(text, true).0
        }
    }

    fn redacted(text: &[u8]) -> String {
        String::from_utf8_lossy(&Redactor::new([("API", SECRET)]).redact(text)).into_owned()
    }

    #[test]
    fn every_encoding_is_redacted() {
        let mut forms = vec![
            SECRET.to_vec(),
            hex::encode(SECRET).into_bytes(),
            hex::encode_upper(SECRET).into_bytes(),
            STANDARD.encode(SECRET).into_bytes(),
            URL_SAFE_NO_PAD.encode(SECRET).into_bytes(),
            percent_encode(SECRET, b"0123456789ABCDEF").to_vec(),
        ];
        // The value inside a longer base64 stream, at each offset.
        for prefix in [&b""[..], b"a", b"ab"] {
            for engine in [&STANDARD, &URL_SAFE] {
                let mut stream = prefix.to_vec();
                stream.extend_from_slice(SECRET);
                stream.extend_from_slice(b"trailing bytes");
                forms.push(engine.encode(&stream).into_bytes());
            }
        }
        for form in forms {
            let mut text = b"before ".to_vec();
            text.extend_from_slice(&form);
            text.extend_from_slice(b" after");
            let out = Redactor::new([("API", SECRET)]).redact(&text);
            assert!(
                String::from_utf8_lossy(&out).contains("[REDACTED:API]"),
                "{}",
                String::from_utf8_lossy(&out)
            );
            for (_, other) in encodings(SECRET) {
                assert!(memchr::memmem::find(&out, &other).is_none());
            }
        }
    }

    #[test]
    fn ordinary_text_is_untouched() {
        assert_eq!(redacted(b"nothing to see here\n"), "nothing to see here\n");
        assert_eq!(
            redacted(b"x s3cr3t/value+with=odd&chars\x01\xff y"),
            "x [REDACTED:API] y"
        );
    }

    #[test]
    fn a_match_straddling_the_cut_waits_for_the_rest() {
        let redactor = Redactor::new([("API", SECRET)]);
        let mut text = b"log: ".to_vec();
        text.extend_from_slice(&SECRET[..10]);
        let (done, used) = redactor.redact_prefix(&text, false);
        assert!(memchr::memmem::find(&done, &SECRET[..10]).is_none());
        text.drain(..used);
        text.extend_from_slice(&SECRET[10..]);
        let (rest, used) = redactor.redact_prefix(&text, true);
        assert_eq!(used, text.len());
        assert_eq!(
            String::from_utf8_lossy(&[done, rest].concat()),
            "log: [REDACTED:API]"
        );
    }

    #[test]
    fn debug_shows_no_pattern() {
        let printed = format!("{:?}", Redactor::new([("API", SECRET)]));
        assert!(!printed.contains("s3cr3t"), "{printed}");
    }
}
