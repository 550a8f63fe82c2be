//! A request held open on the probe's `hold` route, so a test can act
//! while it runs.

use super::Node;

/// A request to the probe's `hold` route, kept open: each [`Held::run`]
/// sends one more line of its body and reads the line the guest streams
/// back, so the test can act between two operations of one request.
pub struct Held {
    stream: std::net::TcpStream,
    /// Response bytes read and not yet consumed (chunk framing included).
    seen: Vec<u8>,
    /// Decoded body lines not yet returned.
    lines: std::collections::VecDeque<String>,
}

impl Held {
    /// Opens `path` (a `hold` route) and returns the request with the
    /// guest's first line: how its `get` went.
    pub fn open(node: &Node, path: &str) -> (Self, String) {
        use std::io::Write;
        let addr = node.base.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        .unwrap();
        let mut held = Self {
            stream,
            seen: Vec::new(),
            lines: Default::default(),
        };
        let head_end = loop {
            if let Some(at) = held.seen.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            held.read_more();
        };
        let head = String::from_utf8_lossy(&held.seen[..head_end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        held.seen.drain(..head_end);
        let first = held.line();
        (held, first)
    }

    fn read_more(&mut self) {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        let n = self
            .stream
            .read(&mut buf)
            .expect("the guest answers within 10 s");
        assert!(n > 0, "the node closed the held request");
        self.seen.extend_from_slice(&buf[..n]);
    }

    /// The guest's next line.
    pub fn line(&mut self) -> String {
        loop {
            if let Some(line) = self.lines.pop_front() {
                return line;
            }
            // One chunk: `<hex size>\r\n<data>\r\n`.
            let Some(size_end) = self.seen.windows(2).position(|w| w == b"\r\n") else {
                self.read_more();
                continue;
            };
            let size = usize::from_str_radix(
                std::str::from_utf8(&self.seen[..size_end]).unwrap().trim(),
                16,
            )
            .unwrap();
            if self.seen.len() < size_end + 2 + size + 2 {
                self.read_more();
                continue;
            }
            let data = self.seen[size_end + 2..size_end + 2 + size].to_vec();
            self.seen.drain(..size_end + 2 + size + 2);
            let text = String::from_utf8(data).unwrap();
            self.lines.extend(text.lines().map(str::to_owned));
        }
    }

    /// Has the guest run `op` on its held handle; returns its line.
    pub fn run(&mut self, op: &str) -> String {
        use std::io::Write;
        let line = format!("{op}\n");
        write!(self.stream, "{:x}\r\n{line}\r\n", line.len()).unwrap();
        let answer = self.line();
        assert!(answer.starts_with(op), "asked for {op}, got {answer}");
        answer
    }
}
