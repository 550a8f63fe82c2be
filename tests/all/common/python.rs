//! Cross-checks with libraries Keyhole did not write: Python's PyJWT and
//! `cryptography`, in the virtual environment `scripts/test` provides.

use std::io::Write;
use std::process::{Command, Stdio};

/// The Python interpreter with PyJWT and `cryptography`, the peer libraries
/// the tests check Keyhole's signatures and ciphertexts against.
/// `scripts/test` provides one in a virtual environment and names it in
/// `KEYHOLE_TEST_PYTHON`.
pub fn python(script: &str, args: &[&str]) -> String {
    let interpreter = std::env::var("KEYHOLE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&interpreter)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {interpreter}: {e}"));
    assert!(
        out.status.success(),
        "python failed (run the suite with ./scripts/test, which installs PyJWT and cryptography, \
         or set KEYHOLE_TEST_PYTHON): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a Python `script` with `input` on its stdin; returns its stdout.
pub fn python_stdin(script: &str, input: &[u8]) -> String {
    let interpreter = std::env::var("KEYHOLE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = Command::new(&interpreter)
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {interpreter}: {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python failed (run the suite with ./scripts/test, which installs its packages, \
         or set KEYHOLE_TEST_PYTHON): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
