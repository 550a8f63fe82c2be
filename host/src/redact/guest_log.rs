//! Guest stdout and stderr, captured, redacted, and written to the node's
//! log tagged with function and request.
//!
//! Every secret value the function can open is replaced by
//! `[REDACTED:BINDING]` (see [`crate::redact`]) before a byte reaches the
//! log, also when a value is split across writes: text near the end of what
//! has arrived is held back until it cannot be the start of a match, and
//! whatever is left is redacted and written when the request ends.

use crate::redact::Redactor;
use crate::secrets::FunctionSecrets;
use bytes::Bytes;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use zeroize::Zeroizing;

/// Bytes of output kept per stream per request; the rest is counted and dropped.
pub(crate) const MAX_OUTPUT_BYTES: usize = 64 * 1024;
/// Log lines kept per stream per request; the rest is counted and dropped.
/// Bytes alone do not bound the work: 64 KiB of newlines would be 64 k log
/// events.
pub(crate) const MAX_OUTPUT_LINES: usize = 256;
/// The longest log line; longer lines are split.
const MAX_LINE: usize = 8 * 1024;

/// Which of the guest's streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One of a request's output streams, as WASI hands it to the guest.
#[derive(Clone)]
pub(crate) struct GuestOutput(Arc<Mutex<Capture>>);

impl GuestOutput {
    /// The `stream` of request `request` of `function`, redacting the
    /// values of `secrets`.
    pub(crate) fn new(
        stream: Stream,
        function: Arc<str>,
        request: u64,
        secrets: Arc<FunctionSecrets>,
    ) -> Self {
        GuestOutput(Arc::new(Mutex::new(Capture {
            stream,
            function,
            request,
            secrets,
            lines: Lines::default(),
            taken: 0,
            dropped: 0,
            lines_logged: 0,
            lines_dropped: 0,
            after_cap: Zeroizing::new(Vec::new()),
        })))
    }

    fn write(&self, bytes: &[u8]) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(bytes);
    }
}

struct Capture {
    stream: Stream,
    function: Arc<str>,
    request: u64,
    secrets: Arc<FunctionSecrets>,
    lines: Lines,
    /// Bytes accepted so far.
    taken: usize,
    /// Bytes dropped over the limit.
    dropped: usize,
    /// Lines logged so far.
    lines_logged: usize,
    /// Lines dropped over [`MAX_OUTPUT_LINES`].
    lines_dropped: usize,
    /// The first bytes past the limit, never logged: what a value that
    /// straddles the cut needs to be recognised, and redacted whole.
    after_cap: Zeroizing<Vec<u8>>,
}

impl Capture {
    fn push(&mut self, bytes: &[u8]) {
        let room = MAX_OUTPUT_BYTES - self.taken;
        let (kept, over) = bytes.split_at(bytes.len().min(room));
        self.taken += kept.len();
        self.dropped += over.len();
        let wanted = self
            .secrets
            .redactor()
            .longest()
            .saturating_sub(self.after_cap.len());
        self.after_cap
            .extend_from_slice(&over[..over.len().min(wanted)]);
        if !kept.is_empty() {
            let done = self.lines.push(self.secrets.redactor(), kept);
            self.emit(done);
        }
    }

    fn emit(&mut self, lines: Vec<Vec<u8>>) {
        let room = MAX_OUTPUT_LINES - self.lines_logged;
        self.lines_dropped += lines.len().saturating_sub(room);
        self.lines_logged += lines.len().min(room);
        for line in lines.into_iter().take(room) {
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            let text = printable(line);
            tracing::info!(
                target: "keyhole::guest",
                function = %self.function,
                request = self.request,
                stream = self.stream.as_str(),
                "{text}"
            );
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if self.taken == 0 && self.dropped == 0 {
            return;
        }
        let rest = self
            .lines
            .finish_before(self.secrets.redactor(), &self.after_cap);
        self.emit(rest);
        if self.dropped > 0 || self.lines_dropped > 0 {
            tracing::warn!(
                target: "keyhole::guest",
                function = %self.function,
                request = self.request,
                stream = self.stream.as_str(),
                "{} bytes and {} lines of output dropped (at most {MAX_OUTPUT_BYTES} bytes and {MAX_OUTPUT_LINES} lines per stream per request)",
                self.dropped,
                self.lines_dropped
            );
        }
    }
}

/// Turns a stream of writes into redacted lines.
#[derive(Default)]
struct Lines {
    /// Arrived, not yet redacted.
    raw: Vec<u8>,
    /// Redacted, waiting for the end of its line.
    line: Vec<u8>,
}

impl Lines {
    /// Takes `bytes` and returns the lines that are now complete.
    fn push(&mut self, redactor: &Redactor, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.raw.extend_from_slice(bytes);
        // Redacting rescans what is held back, so do it only once enough
        // has arrived to make progress, at the end of a line.
        let longest = redactor.longest();
        if (bytes.contains(&b'\n') && self.raw.len() >= 2 * longest)
            || self.raw.len() >= MAX_LINE + longest
        {
            self.redact(redactor, false)
        } else {
            Vec::new()
        }
    }

    /// Everything still held, redacted, as the last lines.
    #[cfg(test)]
    fn finish(&mut self, redactor: &Redactor) -> Vec<Vec<u8>> {
        self.finish_before(redactor, &[])
    }

    /// Everything still held, redacted, as the last lines, where `dropped`
    /// followed it and is not logged (a value running on into it is
    /// redacted whole).
    fn finish_before(&mut self, redactor: &Redactor, dropped: &[u8]) -> Vec<Vec<u8>> {
        let clean = redactor.redact_before_cut(&self.raw, dropped);
        self.raw.clear();
        let mut lines = self.take_lines(&clean);
        if !self.line.is_empty() {
            lines.push(std::mem::take(&mut self.line));
        }
        lines
    }

    /// Moves what can be decided from `raw` to `line`; returns full lines.
    fn redact(&mut self, redactor: &Redactor, complete: bool) -> Vec<Vec<u8>> {
        let (clean, used) = redactor.redact_prefix(&self.raw, complete);
        self.raw.drain(..used);
        self.take_lines(&clean)
    }

    /// Appends redacted `clean` text to `line`; returns the lines it ends.
    fn take_lines(&mut self, clean: &[u8]) -> Vec<Vec<u8>> {
        self.line.extend_from_slice(clean);
        let mut lines = Vec::new();
        while let Some(end) = memchr::memchr(b'\n', &self.line) {
            let rest = self.line.split_off(end + 1);
            let mut line = std::mem::replace(&mut self.line, rest);
            line.truncate(end);
            lines.push(line);
        }
        while self.line.len() >= MAX_LINE {
            let rest = self.line.split_off(split_point(&self.line));
            lines.push(std::mem::replace(&mut self.line, rest));
        }
        lines
    }
}

/// Where to split a line of `MAX_LINE` bytes or more: at `MAX_LINE`, or
/// just before a redaction label that would straddle it, so a reader (or a
/// test) sees every `[REDACTED:…]` whole.
fn split_point(line: &[u8]) -> usize {
    const OPEN: &[u8] = b"[REDACTED:";
    let from = MAX_LINE.saturating_sub(OPEN.len() + crate::names::MAX_NAME_LEN + 1);
    let to = line.len().min(MAX_LINE + OPEN.len() - 1);
    let straddling = memchr::memmem::rfind(&line[from..to], OPEN)
        .map(|at| from + at)
        .filter(|&start| start > 0 && start < MAX_LINE)
        .filter(|&start| {
            memchr::memchr(b']', &line[start..]).is_none_or(|end| start + end >= MAX_LINE)
        });
    straddling.unwrap_or(MAX_LINE)
}

/// `line` as text with control characters escaped, so a guest cannot
/// forge log lines or send terminal escapes.
fn printable(line: &[u8]) -> String {
    escape_for_log(&String::from_utf8_lossy(line))
}

/// `text` with control characters (newlines, escapes) shown as escapes:
/// for every string a guest can influence that the node logs — its output,
/// and errors that quote its names (a trap's backtrace names functions as
/// the component's name section says). One log record stays one line.
pub(crate) fn escape_for_log(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        // Control characters, and the Unicode line separators and bidi
        // overrides that reorder or break what a reader sees.
        let hidden = matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        );
        if (c.is_control() && c != '\t') || hidden {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        GuestOutput::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(MAX_OUTPUT_BYTES)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef-secret";

    /// Feeds `chunks` through [`Lines`] and returns the logged text.
    fn logged(chunks: &[&[u8]]) -> String {
        let redactor = Redactor::new([("KEY", SECRET)]);
        let mut lines = Lines::default();
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend(lines.push(&redactor, chunk));
        }
        out.extend(lines.finish(&redactor));
        out.iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect::<Vec<_>>()
            .join("|")
    }

    #[test]
    fn a_value_split_across_writes_at_any_point_is_redacted() {
        // A first line long enough that redaction runs while the value is
        // still arriving, so holding back is what keeps it whole.
        let first = "f".repeat(120);
        let text = [
            first.as_bytes(),
            b"\nkey=",
            &hex::encode(SECRET).into_bytes(),
            b" and raw ",
            SECRET,
            b" done\nlast",
        ]
        .concat();
        let expected = format!("{first}|key=[REDACTED:KEY] and raw [REDACTED:KEY] done|last");
        for cut in 0..text.len() {
            let (a, b) = text.split_at(cut);
            assert_eq!(logged(&[a, b]), expected, "split at {cut}");
        }
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(logged(&bytes), expected, "one byte per write");
    }

    #[test]
    fn a_value_running_past_the_cut_is_redacted_whole() {
        let redactor = Redactor::new([("KEY", SECRET)]);
        let hexed = hex::encode(SECRET).into_bytes();
        for value in [SECRET, &hexed[..]] {
            for at in 1..value.len() {
                let mut lines = Lines::default();
                let mut text = b"before ".to_vec();
                text.extend_from_slice(&value[..at]);
                let mut out = lines.push(&redactor, &text);
                out.extend(lines.finish_before(&redactor, &value[at..]));
                let logged = String::from_utf8_lossy(&out.concat()).into_owned();
                assert_eq!(logged, "before [REDACTED:KEY]", "cut after {at} bytes");
            }
        }
        // What follows the cut and completes nothing changes nothing.
        let mut lines = Lines::default();
        let mut out = lines.push(&redactor, &SECRET[..4]);
        out.extend(lines.finish_before(&redactor, b"unrelated"));
        assert_eq!(out.concat(), &SECRET[..4]);
    }

    #[test]
    fn long_output_without_newlines_is_emitted_in_bounded_lines() {
        let long = vec![b'z'; 3 * MAX_LINE + 10];
        let out = logged(&[&long]);
        let parts: Vec<&str> = out.split('|').collect();
        assert_eq!(parts.len(), 4);
        assert!(parts.iter().all(|p| p.len() <= MAX_LINE));
    }

    #[test]
    fn long_lines_are_not_split_inside_a_redaction_label() {
        for offset in 0..20 {
            let mut text = vec![b'z'; MAX_LINE - offset];
            text.extend_from_slice(SECRET);
            text.extend_from_slice(&[b'y'; MAX_LINE]);
            let out = logged(&[&text]);
            assert!(out.contains("[REDACTED:KEY]"), "offset {offset}");
        }
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable(b"plain\ttext"), "plain\ttext");
        assert_eq!(printable(b"\x1b[31mred"), "\\u{1b}[31mred");
        assert_eq!(printable(b"a\rb\x00"), "a\\rb\\u{0}");
        assert_eq!(printable(b"\xff"), "\u{fffd}");
        assert_eq!(
            escape_for_log("a\u{2028}b\u{202e}c"),
            "a\\u{2028}b\\u{202e}c"
        );
    }
}
