//! `keyhole dev`: a new JavaScript function served from its folder with a
//! local value for its binding, held to production's rules (deny what the
//! manifest does not ask for, the deploy gate), rebuilt and redeployed on
//! every change, a broken build reported while the last good version
//! serves on, nothing written in clear, and no node left behind.

use crate::common;

use common::{KEYHOLE, encodings, hmac_sha256_hex, repo_root};
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `keyhole dev`, its output collected as it comes.
struct Dev {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Dev {
    fn start(project: &Path, config: &Path, listen: &str) -> Self {
        let mut child = Command::new(KEYHOLE)
            .args(["dev", "--listen", listen])
            .current_dir(project)
            .env("KEYHOLE_CONFIG_DIR", config)
            .env_remove("KEYHOLE_MASTER_KEY")
            .env_remove("KEYHOLE_DATA")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let collect = |stream: Box<dyn std::io::Read + Send>| {
            let text = Arc::new(Mutex::new(String::new()));
            let sink = Arc::clone(&text);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    sink.lock().unwrap().push_str(&line);
                    line.clear();
                }
            });
            text
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        Self {
            child,
            stdout,
            stderr,
        }
    }

    fn output(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }

    /// Waits (bounded) until `text` is in its stdout or stderr.
    fn wait_for(&mut self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.output().contains(text) {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the readers take the last lines.
                std::thread::sleep(Duration::from_millis(200));
                assert!(
                    self.output().contains(text),
                    "dev ended ({status}) without {text:?}:\n{}",
                    self.output()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no {text:?} after 120 s:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// How many times `text` is in its output.
    fn count(&self, text: &str) -> usize {
        self.output().matches(text).count()
    }

    /// Waits for it to end; its exit status's success and its output.
    fn finish(mut self) -> (bool, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(200));
                return (status.success(), self.output());
            }
            assert!(
                Instant::now() < deadline,
                "dev did not end:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get(url: &str) -> Option<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut response = agent.get(url).call().ok()?;
    let status = response.status().as_u16();
    Some((
        status,
        response.body_mut().read_to_string().unwrap_or_default(),
    ))
}

/// Polls `url` until `check` holds (bounded).
fn poll(url: &str, check: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some((status, body)) = get(url)
            && check(status, &body)
        {
            return (status, body);
        }
        assert!(Instant::now() < deadline, "{url}: still {:?}", get(url));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every file under `dir` but installed packages and build output, with
/// its bytes.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    common::project_files(dir)
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap_or_default();
            (path, bytes)
        })
        .collect()
}

#[test]
fn keyhole_dev_serves_a_new_js_function_and_redeploys_it_on_every_change() {
    assert!(
        repo_root().join("node_modules").exists(),
        "npm ci at the repository root first"
    );
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("config");
    let project = common::new_js_project(work.path(), "demo-dev");
    let value = format!("dev-value-{}", common::random_token());
    std::fs::create_dir_all(project.join(".keyhole")).unwrap();
    std::fs::write(
        project.join(".keyhole/dev-secrets.toml"),
        format!("SIGNING_KEY = \"{value}\"\n"),
    )
    .unwrap();

    let mut dev = Dev::start(&project, &config, "127.0.0.1:0");
    dev.wait_for("keyhole dev: serving `demo-dev` at http://");
    let out = dev.output();
    let url = out
        .split("at ")
        .find_map(|s| s.strip_prefix("http://"))
        .and_then(|s| s.split_whitespace().next())
        .map(|addr| format!("http://{addr}"))
        .unwrap_or_else(|| panic!("no URL:\n{out}"));
    assert!(out.contains("deployed with SIGNING_KEY [hmac]"), "{out}");
    let (_, body) = poll(&format!("{url}/demo-dev"), |status, _| status == 200);
    assert_eq!(
        body,
        format!(
            "hello from demo-dev: hmac-sha256(/demo-dev) = {}\n",
            hmac_sha256_hex(value.as_bytes(), b"/demo-dev")
        )
    );

    // A change: new text, a line of guest output, and an operation the
    // manifest does not ask for — denied, as on any node.
    let source = project.join("src/index.js");
    let original = std::fs::read_to_string(&source).unwrap();
    let changed = original.replace("hello from", "changed:").replace(
        "function handle(request) {\n",
        "function handle(request) {\n  console.log('guest line from demo-dev');\n  if (request.url.endsWith('?reveal')) {\n    try { secrets.get('SIGNING_KEY').reveal(); return text(200, 'revealed\\n'); }\n    catch (error) { return text(403, `${error.kind}\\n`); }\n  }\n",
    );
    assert_ne!(changed, original);
    std::fs::write(&source, &changed).unwrap();
    poll(&format!("{url}/demo-dev"), |_, body| {
        body.starts_with("changed: ")
    });
    assert_eq!(
        get(&format!("{url}/demo-dev?reveal")),
        Some((403, "denied\n".to_owned()))
    );
    dev.wait_for("guest line from demo-dev");
    assert!(
        dev.output().contains("keyhole::guest"),
        "guest output goes through the node's log"
    );

    // A build that fails: said, and the last good version serves on.
    let rebuilds = dev.count("change seen, rebuilding");
    std::fs::write(&source, format!("{changed}\nfunction broken( {{\n")).unwrap();
    dev.wait_for("the build failed");
    assert!(dev.count("change seen, rebuilding") > rebuilds);
    assert!(dev.output().contains("still serving the last good version"));
    let (status, body) = get(&format!("{url}/demo-dev")).unwrap();
    assert_eq!(status, 200);
    assert!(body.starts_with("changed: "), "{body}");

    // The value hard-coded into the code: the deploy gate refuses it, as
    // it would on any node.
    let leaking = changed.replace(
        "function handle(request) {\n",
        &format!("const PASTED = '{value}';\nfunction handle(request) {{\n  console.log(PASTED.length);\n"),
    );
    std::fs::write(&source, &leaking).unwrap();
    dev.wait_for("hard-coded credentials");
    let (_, body) = get(&format!("{url}/demo-dev")).unwrap();
    assert!(body.starts_with("changed: "), "{body}");

    // Fixed: served again, without a restart of the node.
    std::fs::write(&source, changed.replace("changed:", "fixed:")).unwrap();
    poll(&format!("{url}/demo-dev"), |_, body| {
        body.starts_with("fixed: ")
    });
    assert_eq!(dev.count("keyhole dev: serving"), 1, "one node all along");

    // Another local value, from a file, byte for byte (its last byte a
    // newline): in force without a rebuild.
    let other = format!("{}\n", common::random_token());
    std::fs::write(
        project.join(".keyhole/dev-secrets.toml"),
        "SIGNING_KEY = { file = \"local/signing.value\" }\n",
    )
    .unwrap();
    std::fs::create_dir_all(project.join("local")).unwrap();
    std::fs::write(project.join("local/signing.value"), &other).unwrap();
    let expected = format!("= {}\n", hmac_sha256_hex(other.as_bytes(), b"/demo-dev"));
    let rebuilds = dev.count("change seen, rebuilding");
    poll(&format!("{url}/demo-dev"), |_, body| {
        body.ends_with(&expected)
    });
    assert_eq!(
        dev.count("change seen, rebuilding"),
        rebuilds,
        "a new value needs no rebuild"
    );

    // Nothing in clear: the project (but the developer's own values file)
    // and the dev store hold no encoding of the value, and the dev store's
    // key is not in the project.
    let output = dev.output();
    for (form, needle) in encodings(value.as_bytes()) {
        assert!(
            !output
                .as_bytes()
                .windows(needle.len())
                .any(|w| w == needle.as_slice()),
            "{form} of the value in keyhole dev's output"
        );
    }
    for (path, bytes) in files_under(&project) {
        if path.ends_with(".keyhole/dev-secrets.toml") || path.ends_with("local/signing.value") {
            continue;
        }
        for (form, needle) in encodings(value.as_bytes()) {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "{form} of the value in {}",
                path.display()
            );
        }
    }
    assert!(config.join("dev-master.key").exists());
    assert!(
        files_under(&project)
            .iter()
            .all(|(p, _)| !p.ends_with("dev-master.key"))
    );

    // Ended however it ends, it leaves no node behind.
    dev.child.kill().unwrap();
    dev.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&format!("{url}/demo-dev")).is_some() {
        assert!(
            Instant::now() < deadline,
            "the dev node outlived keyhole dev"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn keyhole_dev_says_clearly_what_it_cannot_run() {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("config");

    // No manifest.
    let (ok, out) = Dev::start(work.path(), &config, "127.0.0.1:0").finish();
    assert!(!ok);
    assert!(
        out.contains("no keyhole.toml in") && out.contains("keyhole new"),
        "{out}"
    );

    // A binding with no value, and no terminal to ask on.
    let made = Command::new(KEYHOLE)
        .args(["new", "rusty"])
        .current_dir(work.path())
        .output()
        .unwrap();
    assert!(made.status.success());
    let project = work.path().join("rusty");
    let (ok, out) = Dev::start(&project, &config, "127.0.0.1:0").finish();
    assert!(!ok);
    assert!(
        out.contains("binding SIGNING_KEY needs a local value")
            && out.contains(".keyhole/dev-secrets.toml"),
        "{out}"
    );

    // A values file that does not parse: its line, never its text.
    std::fs::create_dir_all(project.join(".keyhole")).unwrap();
    std::fs::write(
        project.join(".keyhole/dev-secrets.toml"),
        "SIGNING_KEY = \"unterminated-secret-text\n",
    )
    .unwrap();
    let (ok, out) = Dev::start(&project, &config, "127.0.0.1:0").finish();
    assert!(!ok);
    assert!(out.contains("dev-secrets.toml at line 1"), "{out}");
    assert!(!out.contains("unterminated-secret-text"), "{out}");

    // A port in use.
    std::fs::write(
        project.join(".keyhole/dev-secrets.toml"),
        "SIGNING_KEY = \"v\"\n",
    )
    .unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let (ok, out) = Dev::start(&project, &config, &port).finish();
    assert!(!ok);
    assert!(out.contains("the dev node did not start on"), "{out}");
    assert!(
        out.to_lowercase().contains("address") && out.contains("in use"),
        "{out}"
    );
}
