//! A real Keyhole node: the `keyhole` binary on a fresh data directory,
//! serving on a loopback port, driven over HTTP, its log captured.

use base64::Engine as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::artifacts;

/// The `keyhole` binary under test.
pub const KEYHOLE: &str = env!("CARGO_BIN_EXE_keyhole");

/// `keyhole serve` on a free loopback port, as the harness starts a node.
const SERVE: [&str; 3] = ["serve", "--listen", "127.0.0.1:0"];

/// Rounds of each host call one probe request makes for
/// [`Node::probe_host_call_round_trips`]: few enough that the request's
/// audit records (four per round, about 8 000) fit in half of a worker's
/// queue.
pub const ROUNDS_PER_REQUEST: u32 = 2_000;

/// `"get+drop 418 ns"`, a line of the probe's timings, as
/// `("get+drop", 418)`.
fn parse_timing(line: &str) -> (String, u64) {
    let mut words = line.split_whitespace();
    let label = words.next().expect("a label").to_owned();
    let ns = words
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the probe printed `{line}`"));
    (label, ns)
}

/// A data directory with its own master key, and optionally a running node.
pub struct Node {
    pub data: tempfile::TempDir,
    /// The key passed in `KEYHOLE_MASTER_KEY`; `None` leaves the node to
    /// its key file.
    master_key: Option<String>,
    server: Option<Child>,
    logs: Arc<Mutex<String>>,
    pub base: String,
    /// The admin API's base URL, when started with [`Node::start_admin`].
    pub admin: String,
    /// The fleet's NATS URLs (`KEYHOLE_CLUSTER`) when this data directory
    /// is a fleet's replica.
    pub cluster: Option<String>,
    /// The key passed in `KEYHOLE_NEW_MASTER_KEY` (a master-key rotation's
    /// new key), if any.
    pub new_master_key: Option<String>,
    /// The JetStream domain of the fleet's streams
    /// (`KEYHOLE_CLUSTER_DOMAIN`), for a node talking to a leaf server.
    pub cluster_domain: Option<String>,
}

/// An HTTP answer: status and body.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.text();
        write!(f, "{} {}", self.status, &text[..text.len().min(300)])
    }
}

/// The number after `name=` in a log line (as tracing prints a field).
pub fn log_field(line: &str, name: &str) -> usize {
    let start = line
        .find(&format!("{name}="))
        .unwrap_or_else(|| panic!("no {name}= in {line}"))
        + name.len()
        + 1;
    line[start..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

impl Node {
    /// A fresh data directory; no server yet.
    pub fn new() -> Self {
        let key: [u8; 32] = rand::random();
        Self {
            data: tempfile::tempdir().unwrap(),
            master_key: Some(base64::engine::general_purpose::STANDARD.encode(key)),
            server: None,
            logs: Arc::default(),
            base: String::new(),
            admin: String::new(),
            cluster: None,
            new_master_key: None,
            cluster_domain: None,
        }
    }

    /// A fresh data directory that is a replica of the fleet at `urls`, with
    /// a master key of its own (only right for a fleet's first replica).
    pub fn in_fleet(urls: &str) -> Self {
        let mut node = Self::new();
        node.cluster = Some(urls.to_owned());
        node
    }

    /// Another replica of `other`'s fleet, with the fleet's master key.
    pub fn in_same_fleet(other: &Node) -> Self {
        let mut node = Self::new_sharing_key(other);
        node.cluster = other.cluster.clone();
        node
    }

    /// A fresh data directory using `other`'s master key (from the
    /// environment), e.g. for a copy of its store.
    pub fn new_sharing_key(other: &Node) -> Self {
        let mut node = Self::new();
        node.master_key = other.master_key.clone();
        node
    }

    /// A fresh data directory whose master key lives in its key file
    /// (created by the first command), not in the environment.
    pub fn with_key_file() -> Self {
        let mut node = Self::new();
        node.master_key = None;
        node
    }

    /// Makes `key` (base64) the key passed in `KEYHOLE_MASTER_KEY` from now on.
    pub fn set_master_key(&mut self, key: &str) {
        self.master_key = Some(key.to_owned());
    }

    /// The master key in `KEYHOLE_MASTER_KEY`, if this node uses one.
    pub fn env_key(&self) -> Option<&str> {
        self.master_key.as_deref()
    }

    /// `keyhole` with this node's data directory and key, and no stdin.
    pub fn command(&self) -> Command {
        self.with_environment(Command::new(KEYHOLE))
    }

    /// `keyhole ARGS…` as [`Node::command`] runs it, but in a process whose
    /// address space is limited to `gib` GiB (`ulimit -v`).
    pub fn command_with_address_limit(&self, gib: u64, args: &[&str]) -> Command {
        let mut command = Command::new("sh");
        command
            .args(["-c", r#"ulimit -v "$1" && shift && exec "$@""#, "sh"])
            .arg((gib * 1024 * 1024).to_string())
            .arg(KEYHOLE)
            .args(args);
        self.with_environment(command)
    }

    fn with_environment(&self, mut command: Command) -> Command {
        command
            .env("KEYHOLE_DATA", self.data.path())
            .env_remove("KEYHOLE_MASTER_KEY")
            .env_remove("KEYHOLE_NEW_MASTER_KEY")
            .env_remove("KEYHOLE_NODE")
            .env_remove("KEYHOLE_CLUSTER")
            .env_remove("KEYHOLE_CLUSTER_DOMAIN")
            .stdin(Stdio::null());
        if let Some(domain) = &self.cluster_domain {
            command.env("KEYHOLE_CLUSTER_DOMAIN", domain);
        }
        if let Some(urls) = &self.cluster {
            command.env("KEYHOLE_CLUSTER", urls);
        }
        if let Some(key) = &self.master_key {
            command.env("KEYHOLE_MASTER_KEY", key);
        }
        if let Some(key) = &self.new_master_key {
            command.env("KEYHOLE_NEW_MASTER_KEY", key);
        }
        command
    }

    /// Runs `keyhole ARGS…` against this data directory.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    /// Runs `keyhole ARGS…` with `input` on stdin.
    pub fn cli_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "keyhole {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Stores `value` as secret `name` through a file, byte for byte.
    pub fn put_secret(&self, name: &str, value: &[u8]) {
        let file = self.data.path().join(format!("{name}.value"));
        std::fs::write(&file, value).unwrap();
        self.ok(&["secret", "put", name, "--from-file", file.to_str().unwrap()]);
        std::fs::remove_file(file).unwrap();
    }

    /// The `[outbound]` manifest section asking for `hosts`.
    pub fn outbound_section(hosts: &[&str]) -> String {
        let quoted: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
        format!("[outbound]\nallow = [{}]\n", quoted.join(", "))
    }

    /// Writes a manifest for `component` into the data directory and deploys it.
    pub fn deploy_probe(&self, name: &str, route: &str, extra: &str) {
        let manifest = self.write_manifest(name, artifacts::PROBE, route, extra);
        self.ok(&["deploy", manifest.to_str().unwrap()]);
    }

    /// Deploys the probe as `function` at `route`, its manifest requesting
    /// binding `KEY` for `ops` (e.g. `hmac,reveal`) plus `extra` manifest
    /// text, and grants `KEY` secret `secret` for the same `ops`.
    pub fn granted_probe(&self, function: &str, route: &str, secret: &str, ops: &str, extra: &str) {
        let quoted: Vec<String> = ops.split(',').map(|op| format!("{op:?}")).collect();
        let request = format!("[bindings.KEY]\nallow = [{}]\n{extra}", quoted.join(", "));
        self.deploy_probe(function, route, &request);
        self.ok(&["grant", function, "KEY", "--secret", secret, "--allow", ops]);
    }

    /// The probe's own timings of `n` host-call round trips on binding
    /// `KEY`, one line per kind of call, from inside the guest (the probe
    /// must be deployed at `/probe`).
    pub fn probe_host_call_timings(&self, n: u32) -> Vec<String> {
        let reply = self.get(&format!("/probe/bench?binding=KEY&n={n}"));
        assert_eq!(reply.status, 200, "{reply:?}");
        reply.text().lines().map(str::to_owned).collect()
    }

    /// The median of each host-call round trip the probe times, over
    /// `requests` requests of [`ROUNDS_PER_REQUEST`] rounds each, as
    /// `(label, ns)`: requests small enough that the audit writer's pace
    /// never enters the figures (the probe must be deployed at `/probe`).
    pub fn probe_host_call_round_trips(&self, requests: u32) -> Vec<(String, u64)> {
        let mut figures: Vec<Vec<(String, u64)>> = Vec::new();
        for _ in 0..requests.max(1) {
            for (i, line) in self
                .probe_host_call_timings(ROUNDS_PER_REQUEST)
                .iter()
                .enumerate()
            {
                if figures.len() <= i {
                    figures.push(Vec::new());
                }
                figures[i].push(parse_timing(line));
            }
        }
        figures
            .into_iter()
            .map(|mut runs| {
                runs.sort_by_key(|(_, ns)| *ns);
                runs.swap_remove(runs.len() / 2)
            })
            .collect()
    }

    /// Deploys the example at `manifest` (function `function`) and grants
    /// its `binding` secret `secret` for `ops`.
    pub fn deploy_granted(
        &self,
        manifest: &str,
        function: &str,
        binding: &str,
        secret: &str,
        ops: &str,
    ) {
        self.ok(&["deploy", manifest]);
        self.ok(&[
            "grant", function, binding, "--secret", secret, "--allow", ops,
        ]);
    }

    /// Runs `keyhole ARGS…` with `KEYHOLE_MASTER_KEY` set to `key`, or
    /// unset when `None`, instead of this node's key.
    pub fn cli_with_key(&self, args: &[&str], key: Option<&str>) -> Output {
        let mut command = self.command();
        match key {
            Some(key) => command.env("KEYHOLE_MASTER_KEY", key),
            None => command.env_remove("KEYHOLE_MASTER_KEY"),
        };
        command.args(args).output().unwrap()
    }

    /// Writes a manifest file and returns its path.
    pub fn write_manifest(&self, name: &str, component: &str, route: &str, extra: &str) -> PathBuf {
        let path = self.data.path().join(format!("{name}.toml"));
        let text = format!(
            "name = \"{name}\"\ncomponent = {component:?}\nroutes = [\"{route}\"]\n{extra}"
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Starts `keyhole serve` on a free loopback port and waits until it listens.
    pub fn start(&mut self) {
        self.start_with_backtrace(true);
    }

    /// Starts the node with the admin API on another free loopback port.
    pub fn start_admin(&mut self) {
        self.spawn(true, &["--admin", "127.0.0.1:0"]);
    }

    /// Starts the node with the admin API (on a free loopback port) and
    /// `keyhole serve` options `extra`.
    pub fn spawn_admin_with(&mut self, extra: &[&str]) {
        let mut args = vec!["--admin", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        self.spawn(true, &args);
    }

    /// Starts the node with the admin API and the environment variables
    /// `env` as well.
    pub fn start_admin_with_env(&mut self, env: &[(&str, &str)]) {
        let mut command = self.command();
        command.args(SERVE).args(["--admin", "127.0.0.1:0"]);
        for (name, value) in env {
            command.env(name, value);
        }
        self.spawn_command(command, true);
    }

    /// Starts the node with `keyhole serve` options `extra` as well.
    pub fn start_with_args(&mut self, extra: &[&str]) {
        self.spawn(true, extra);
    }

    /// Starts the node letting functions' outgoing requests reach loopback
    /// (where the tests' upstreams listen), as an operator must say
    /// explicitly: `--outbound-allow-ip 127.0.0.1`.
    pub fn start_with_loopback_outbound(&mut self) {
        self.spawn(true, &["--outbound-allow-ip", "127.0.0.1"]);
    }

    /// Starts the node with `RUST_BACKTRACE=1` or with it unset.
    pub fn start_with_backtrace(&mut self, backtrace: bool) {
        self.spawn(backtrace, &[]);
    }

    /// Starts the node with `keyhole serve` options `extra`, in a process
    /// whose address space is limited to `gib` GiB (`ulimit -v`).
    pub fn start_with_address_limit(&mut self, gib: u64, extra: &[&str]) {
        let args: Vec<&str> = SERVE.iter().chain(extra).copied().collect();
        let command = self.command_with_address_limit(gib, &args);
        self.spawn_command(command, true);
    }

    /// Starts the node through `wrapper`, a program and its options such as
    /// valgrind's (`WRAPPER… keyhole serve … EXTRA…`).
    pub fn start_under(&mut self, wrapper: &[&str], extra: &[&str]) {
        let (program, options) = wrapper.split_first().expect("a wrapper program");
        if let Err(e) = Command::new(program).arg("--version").output() {
            panic!("`{program}` cannot run ({e}): install it (Debian: apt-get install {program})");
        }
        let mut command = self.with_environment(Command::new(program));
        command.args(options).arg(KEYHOLE).args(SERVE).args(extra);
        self.spawn_command(command, true);
    }

    fn spawn(&mut self, backtrace: bool, extra: &[&str]) {
        let mut command = self.command();
        command.args(SERVE).args(extra);
        self.spawn_command(command, backtrace);
    }

    fn spawn_command(&mut self, mut command: Command, backtrace: bool) {
        let starts_before = self.start_lines();
        if backtrace {
            command.env("RUST_BACKTRACE", "1");
        } else {
            command.env_remove("RUST_BACKTRACE");
        }
        let mut child = command
            .env("KEYHOLE_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::clone(&self.logs);
        std::thread::spawn(move || {
            let mut stderr = stderr;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                logs.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        if let Some(admin) = line.trim().strip_prefix("keyhole admin API on ") {
            self.admin = admin.to_owned();
            line.clear();
            stdout.read_line(&mut line).unwrap();
        }
        let addr = line
            .trim()
            .strip_prefix("keyhole listening on ")
            .unwrap_or_else(|| {
                panic!("node did not start: {line:?} {}", self.logs.lock().unwrap())
            });
        self.base = addr.to_owned();
        self.server = Some(child);
        self.wait_for_start_log(starts_before);
    }

    /// The number of `serving` lines (one per start) in the node's log.
    fn start_lines(&self) -> usize {
        self.logs
            .lock()
            .unwrap()
            .matches("keyhole::cli::serve: serving ")
            .count()
    }

    /// Waits (bounded) until this start's `serving` line reached the log.
    ///
    /// The node writes its address on stdout and its log on stderr, which a
    /// thread copies: without this, a test reading the log right after a
    /// start could find an earlier start's lines (say, its catalog load)
    /// and take them for this one's. Everything the node logs while
    /// starting comes before `serving`.
    fn wait_for_start_log(&self, starts_before: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.start_lines() <= starts_before {
            assert!(
                Instant::now() < deadline,
                "the node's start was not logged:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// `keyhole` sent to this node's admin API with `token`, from a
    /// directory that holds no store (so nothing can act locally).
    pub fn remote_command(&self, token: &str) -> Command {
        assert!(!self.admin.is_empty(), "start the node with start_admin");
        let mut command = Command::new(KEYHOLE);
        command
            .env("KEYHOLE_DATA", "/nonexistent/keyhole-remote-test")
            .env("KEYHOLE_NODE", &self.admin)
            .env("KEYHOLE_TOKEN", token)
            .env_remove("KEYHOLE_MASTER_KEY")
            .stdin(Stdio::null());
        command
    }

    /// Creates a token on the data directory and returns it.
    pub fn token(&self, args: &[&str]) -> String {
        let mut all = vec!["token", "create"];
        all.extend_from_slice(args);
        self.ok(&all).trim().to_owned()
    }

    /// `method` `path` on the admin API with `token` (if any) and `body`.
    pub fn admin_request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> Reply {
        let url = format!("{}{path}", self.admin);
        let agent = Self::agent();
        let auth = token.map(|t| format!("Bearer {t}"));
        let response = match method {
            "GET" | "DELETE" => {
                let mut request = if method == "GET" {
                    agent.get(&url)
                } else {
                    agent.delete(&url)
                };
                if let Some(auth) = &auth {
                    request = request.header("Authorization", auth);
                }
                request.call()
            }
            _ => {
                let mut request = match method {
                    "PUT" => agent.put(&url),
                    "POST" => agent.post(&url),
                    "PATCH" => agent.patch(&url),
                    other => panic!("method {other}"),
                };
                if let Some(auth) = &auth {
                    request = request.header("Authorization", auth);
                }
                request.send(body)
            }
        };
        Self::reply(response.unwrap())
    }

    /// GET `path` and return the reply with its `keyhole-request-id`.
    pub fn get_with_id(&self, path: &str) -> (Reply, u64) {
        let response = Self::agent()
            .get(format!("{}{path}", self.base))
            .call()
            .unwrap();
        let id = response
            .headers()
            .get("keyhole-request-id")
            .expect("every response names its request id")
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        (Self::reply(response), id)
    }

    /// The running node's resident set size in KiB, from `/proc`.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// The most memory the node has held resident since it started, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        let pid = self.server.as_ref().expect("the node is running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
    }

    /// Kills the node with SIGKILL (no chance to clean up) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.server.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Whether the node process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.server.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The store's database file, opened directly (to inspect or tamper
    /// with it behind the node's back).
    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.data.path().join("keyhole.db")).unwrap()
    }

    /// What the node has logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// An HTTP client that returns error statuses as answers.
    pub fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into()
    }

    /// GET `path` from the node.
    pub fn get(&self, path: &str) -> Reply {
        let response = Self::agent()
            .get(format!("{}{path}", self.base))
            .call()
            .unwrap();
        Self::reply(response)
    }

    /// POST `body` to `path` with `headers`.
    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let mut request = Self::agent().post(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Self::reply(request.send(body).unwrap())
    }

    fn reply(mut response: ureq::http::Response<ureq::Body>) -> Reply {
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(512 << 20)
            .read_to_vec()
            .unwrap();
        Reply { status, body }
    }

    /// Polls `path` until `check` accepts the reply (changes take effect
    /// within a second); panics with the last reply after 5 s.
    ///
    /// A request running at the moment a change comes into force may be
    /// refused for the rest of its run (a 503 naming a binding that
    /// "changed after this request began":
    /// `secrets::what_an_operator_withdraws_reaches_requests_already_running`
    /// tests that). That reply belongs to neither side of the change, so it
    /// is never the one returned: a CI run's rotation test took it for the
    /// answer after the rotation.
    pub fn wait_for(&self, path: &str, check: impl Fn(&Reply) -> bool) -> Reply {
        let start = Instant::now();
        loop {
            let reply = self.get(path);
            let withdrawn_mid_request =
                reply.status == 503 && reply.text().contains("changed after this request began");
            if !withdrawn_mid_request && check(&reply) {
                return reply;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "still {reply:?} after 5 s for {path}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every file in the data directory, concatenated.
    pub fn data_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push((path.clone(), std::fs::read(&path).unwrap()));
                }
            }
        }
        let mut out = Vec::new();
        walk(self.data.path(), &mut out);
        out
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
