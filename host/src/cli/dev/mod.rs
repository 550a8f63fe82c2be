//! `keyhole dev`: the local loop in a function's folder. It builds the
//! function, runs a node on a dev store of the folder's own, gives each
//! binding the manifest names a local value, grants exactly what the
//! manifest asks for, serves, and rebuilds and redeploys on every source
//! change while the node keeps running.
//!
//! Invariant: the dev loop is production's rules with the operator's part
//! done for you, nothing more. The node is a real `keyhole serve` (a child
//! process), the grants are real grants of the manifest's own operations
//! (an operation the manifest does not ask for is denied as on any node),
//! guest output reaches the terminal through the node's redacting log, and
//! local values are sealed in the dev store ([`values`]).
//!
//! A build that fails, a manifest that does not parse or a deploy the gate
//! refuses is reported and the loop goes on serving the last good version;
//! what cannot be fixed by editing (no manifest, no way to build, a port in
//! use, a value nobody can give) ends it with an error.

mod project;
mod values;
mod watch;

use anyhow::{Context as _, bail};
use clap::Args;
use keyhole_host::deploy::manifest::{self, Manifest};
use project::Project;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// How often the folder is looked at for changes.
const POLL: Duration = Duration::from_millis(250);

/// `keyhole dev`'s options.
#[derive(Args)]
pub struct DevArgs {
    /// Address to serve the function on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
}

/// The dev loop's fixed parts: where it works and with what key.
struct Dev {
    /// This `keyhole` binary: every store action is one of its commands.
    exe: PathBuf,
    /// The function's folder.
    project: PathBuf,
    /// The dev store: `.keyhole/dev` in the project.
    data: PathBuf,
    /// The dev store's master key (base64), handed to child commands.
    key: Zeroizing<String>,
    kind: Project,
}

/// Runs `keyhole dev` in the current folder until interrupted.
pub fn run(args: DevArgs) -> anyhow::Result<()> {
    let project = std::env::current_dir().context("reading the current folder")?;
    let manifest_path = project.join("keyhole.toml");
    if !manifest_path.is_file() {
        bail!(
            "no keyhole.toml in {}: run keyhole dev in a function's folder (`keyhole new NAME` makes one)",
            project.display()
        );
    }
    let kind = Project::detect(&project)?;
    let mut manifest = manifest::load(&manifest_path)?;
    if let Some(setup) = kind.missing_setup(&project) {
        bail!("run `{setup}` in {} first", project.display());
    }
    let dot = project.join(".keyhole");
    owner_only(&dot)?;
    let data = dot.join("dev");
    keyhole_host::store::private_dir(&data)?;
    let dev = Dev {
        exe: std::env::current_exe().context("finding the keyhole binary")?,
        project,
        data,
        key: values::dev_master_key()?,
        kind,
    };
    dev.provide_values(&manifest)?;
    let (mut node, url) = dev.start_node(args.listen)?;
    let mut sources = dev.sources(&manifest);
    let mut local_values = dev.values_file_state();
    dev.build_and_deploy(&manifest);
    println!(
        "keyhole dev: serving `{}` at {url} (routes {}); rebuilt and redeployed on every change, Ctrl-C stops",
        manifest.name,
        manifest.routes.join(", ")
    );
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(POLL);
        if let Some(status) = node.child.try_wait()? {
            bail!("the dev node stopped ({status}); its log above says why");
        }
        let values_now = dev.values_file_state();
        if values_now != local_values {
            local_values = values_now;
            match dev.provide_values(&manifest) {
                Ok(()) => println!("keyhole dev: {} read again", values::VALUES_FILE),
                Err(e) => eprintln!("keyhole dev: {e:#}"),
            }
        }
        let now = dev.sources(&manifest);
        if now == sources {
            continue;
        }
        // Let a burst of saves settle before building.
        let mut settled = now;
        loop {
            std::thread::sleep(POLL);
            let again = dev.sources(&manifest);
            if again == settled {
                break;
            }
            settled = again;
        }
        sources = settled;
        match manifest::load(&manifest_path) {
            Ok(changed) => manifest = changed,
            Err(e) => {
                eprintln!("keyhole dev: {e:#}; still serving the last good version");
                continue;
            }
        }
        if let Err(e) = dev.provide_values(&manifest) {
            eprintln!("keyhole dev: {e:#}; still serving the last good version");
            continue;
        }
        println!("keyhole dev: change seen, rebuilding");
        dev.build_and_deploy(&manifest);
        let _ = std::io::stdout().flush();
    }
}

/// Makes `dir` (the project's `.keyhole`) if it is missing, and keeps it
/// the owner's alone: it holds the developer's local values file.
fn owner_only(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("making {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} the owner's alone", dir.display()))?;
    }
    Ok(())
}

/// The node `keyhole dev` started; it stops when this is dropped or the
/// dev process ends in any way (its standard input closes).
struct DevNode {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Drop for DevNode {
    /// Closes the node's input, which stops it cleanly (its audit trail
    /// written out); kills it if it has not stopped within five seconds.
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dev {
    /// `keyhole --data <dev store> ARGS` with the dev store's key.
    fn keyhole(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.exe);
        command
            .arg("--data")
            .arg(&self.data)
            .args(args)
            .current_dir(&self.project)
            .env(keyhole_host::crypto::master_key::MASTER_KEY_ENV, &*self.key)
            .env_remove("KEYHOLE_NODE")
            .env_remove("KEYHOLE_CLUSTER");
        command
    }

    /// Runs a store command; its output, or an error with what it said.
    fn store_command(&self, args: &[&str], input: Option<&[u8]>) -> anyhow::Result<String> {
        let mut child = self
            .keyhole(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running keyhole {}", args[0]))?;
        if let Some(input) = input {
            let mut stdin = child.stdin.take().expect("piped");
            stdin.write_all(input)?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "keyhole {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The dev store's name for the secret behind `binding`: `dev.` and
    /// the binding's own name (two bindings, two secrets), or a digest of a
    /// name too long for that.
    fn secret_name(binding: &str) -> String {
        let name = format!("dev.{binding}");
        if keyhole_host::names::validate("secret", &name).is_ok() {
            name
        } else {
            use sha2::Digest as _;
            format!(
                "dev.{}",
                &hex::encode(sha2::Sha256::digest(binding.as_bytes()))[..32]
            )
        }
    }

    /// Makes sure every binding the manifest names has a value in the dev
    /// store: from `.keyhole/dev-secrets.toml` (stored again when the file
    /// gives another value than last time), else the one stored before,
    /// else asked for.
    fn provide_values(&self, manifest: &Manifest) -> anyhow::Result<()> {
        if manifest.bindings.is_empty() {
            return Ok(());
        }
        let from_file = values::values_from_file(&self.project)?;
        let stored = self.stored_secrets()?;
        let mut digests = self.value_digests();
        for requested in &manifest.bindings {
            let binding = &requested.binding;
            let name = Self::secret_name(binding);
            match from_file.get(binding) {
                Some(value) => {
                    let digest = self.value_digest(binding, value)?;
                    if stored.contains(&name) && digests.get(binding) == Some(&digest) {
                        continue;
                    }
                    self.put_value(&name, value)
                        .with_context(|| format!("storing the value for {binding}"))?;
                    digests.insert(binding.clone(), digest);
                }
                None if stored.contains(&name) => {}
                None => match values::prompt(binding, &requested.operations.to_string())? {
                    Some(value) => {
                        self.put_value(&name, &values::Value::Bytes(value))
                            .with_context(|| format!("storing the value for {binding}"))?;
                        digests.remove(binding);
                    }
                    None => bail!(
                        "binding {binding} needs a local value: put `{binding} = \"…\"` (or `{binding} = {{ file = \"path\" }}`) in {}, or run keyhole dev in a terminal to be asked",
                        values::VALUES_FILE
                    ),
                },
            }
        }
        self.save_value_digests(&digests)
    }

    /// Stores `value` as a new version of the dev secret `name`, byte for
    /// byte (a file by its path, bytes through standard input — never on a
    /// command line).
    fn put_value(&self, name: &str, value: &values::Value) -> anyhow::Result<()> {
        match value {
            values::Value::File(path) => {
                if !path.is_file() {
                    bail!("the value file {} does not exist", path.display());
                }
                let path = path.to_string_lossy();
                self.store_command(&["secret", "put", name, "--from-file", &path], None)?;
            }
            values::Value::Bytes(bytes) => {
                // `secret put` drops one line ending from its input: give it
                // one to drop, so the value's own last bytes stay.
                let mut input = Zeroizing::new(Vec::with_capacity(bytes.len() + 2));
                input.extend_from_slice(bytes);
                input.extend_from_slice(b"\r\n");
                self.store_command(&["secret", "put", name], Some(&input))?;
            }
        }
        Ok(())
    }

    /// Where the digests of the values last stored from the values file
    /// are kept, to store a value again only when it changed.
    fn digests_file(&self) -> PathBuf {
        self.data.join("local-values.json")
    }

    fn value_digests(&self) -> std::collections::BTreeMap<String, String> {
        std::fs::read(self.digests_file())
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    fn save_value_digests(
        &self,
        digests: &std::collections::BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        let path = self.digests_file();
        std::fs::write(&path, serde_json::to_vec(digests)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// HMAC-SHA256 of `binding`'s value under the dev key: it tells a
    /// changed value from the same one, and tells nothing about the value
    /// to whoever reads the project folder without that key.
    fn value_digest(&self, binding: &str, value: &values::Value) -> anyhow::Result<String> {
        use hmac::Mac as _;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(self.key.as_bytes())
            .expect("any key length");
        mac.update(binding.as_bytes());
        mac.update(&[0]);
        match value {
            values::Value::Bytes(bytes) => mac.update(bytes),
            values::Value::File(path) => mac.update(&Zeroizing::new(
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
            )),
        }
        Ok(hex::encode(mac.finalize().into_bytes()))
    }

    /// The names of the secrets in the dev store.
    fn stored_secrets(&self) -> anyhow::Result<Vec<String>> {
        if !self.data.join(keyhole_host::store::DATABASE_FILE).exists() {
            return Ok(Vec::new());
        }
        let listed = self.store_command(&["secret", "list", "--json"], None)?;
        let secrets: Vec<serde_json::Value> =
            serde_json::from_str(&listed).context("reading `keyhole secret list --json`")?;
        Ok(secrets
            .iter()
            .filter_map(|s| s["name"].as_str().map(str::to_owned))
            .collect())
    }

    /// The state of the project's sources: every file but build output,
    /// installed packages, lockfiles the build writes, the component the
    /// manifest names (wherever it lies), and the files local values come
    /// from (a change there is a new value, not new code).
    fn sources(&self, manifest: &Manifest) -> watch::Fingerprint {
        let component = self.project.join(&manifest.component);
        let partial = component.with_extension("wasm.partial");
        let value_files = self.value_files();
        let mut state = watch::fingerprint(&self.project, self.kind.ignored());
        state.retain(|path, _| {
            *path != component && *path != partial && !value_files.contains(path)
        });
        state
    }

    /// The files `.keyhole/dev-secrets.toml` takes values from.
    fn value_files(&self) -> Vec<PathBuf> {
        values::values_from_file(&self.project)
            .map(|values| {
                values
                    .into_values()
                    .filter_map(|value| match value {
                        values::Value::File(path) => Some(path),
                        values::Value::Bytes(_) => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The state of `.keyhole/dev-secrets.toml` and of the files it takes
    /// values from (which sources leave out).
    fn values_file_state(&self) -> watch::Fingerprint {
        let mut state = watch::Fingerprint::new();
        for path in
            std::iter::once(self.project.join(values::VALUES_FILE)).chain(self.value_files())
        {
            if let Ok(meta) = std::fs::metadata(&path) {
                state.insert(path, watch::stamp(&meta));
            }
        }
        state
    }

    /// Starts `keyhole serve` on the dev store; the node and its URL.
    fn start_node(&self, listen: SocketAddr) -> anyhow::Result<(DevNode, String)> {
        let listen = listen.to_string();
        let mut command = self.keyhole(&["serve", "--listen", &listen, "--stop-when-stdin-closes"]);
        if std::env::var_os("KEYHOLE_LOG").is_none() {
            command.env("KEYHOLE_LOG", "info");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the dev node")?;
        let stdin = child.stdin.take().expect("piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let node = DevNode {
            child,
            stdin: Some(stdin),
        };
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let Some(url) = line.trim().strip_prefix("keyhole listening on ") else {
            bail!("the dev node did not start on {listen} (its log above says why)");
        };
        let url = url.to_owned();
        // Whatever else the node prints goes to the terminal.
        std::thread::spawn(move || {
            let mut rest = String::new();
            while stdout.read_line(&mut rest).is_ok_and(|n| n > 0) {
                print!("{rest}");
                rest.clear();
            }
        });
        Ok((node, url))
    }

    /// Builds the function and, if that worked, deploys it and grants its
    /// bindings what the manifest asks for. Failures are reported; the
    /// node goes on serving what it served.
    fn build_and_deploy(&self, manifest: &Manifest) {
        let began = Instant::now();
        match self.build() {
            Ok(()) => {}
            Err(e) => {
                eprintln!(
                    "keyhole dev: {e:#}\nkeyhole dev: fix it and save: still serving the last good version"
                );
                return;
            }
        }
        let built = began.elapsed();
        match self.deploy(manifest) {
            Ok(summary) => println!(
                "keyhole dev: built in {:.1} s, deployed {summary}",
                built.as_secs_f64()
            ),
            Err(e) => {
                eprintln!("keyhole dev: {e:#}\nkeyhole dev: still serving the last good version")
            }
        }
    }

    fn build(&self) -> anyhow::Result<()> {
        let out = self
            .kind
            .build_command(&self.project)
            .stdin(Stdio::null())
            .output()
            .context("running the build")?;
        if !out.status.success() {
            bail!(
                "the build failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Deploys the manifest, grants each binding its requested operations
    /// (and, for `inject`, the manifest's outbound hosts), and approves
    /// the new component; a one-line summary.
    fn deploy(&self, manifest: &Manifest) -> anyhow::Result<String> {
        self.store_command(&["deploy", "keyhole.toml"], None)
            .map_err(|e| {
                anyhow::anyhow!("{e:#}\nkeyhole dev: still serving the last good version")
            })?;
        // From here on the new component is the one deployed: a failure
        // must say so, not that the last version still serves.
        let granted = self.grant(manifest).map_err(|e| {
            anyhow::anyhow!(
                "{e:#}\nkeyhole dev: the new version is deployed without all of its grants; it runs without them until the next change"
            )
        })?;
        Ok(if granted.is_empty() {
            "(no bindings)".to_owned()
        } else {
            format!("with {}", granted.join(", "))
        })
    }

    /// Grants each binding what the manifest asks for and approves the
    /// deployed component; what was granted, one entry per binding.
    fn grant(&self, manifest: &Manifest) -> anyhow::Result<Vec<String>> {
        use keyhole_host::operations::Operation;
        let egress = manifest.outbound.to_string();
        let mut granted = Vec::new();
        for requested in &manifest.bindings {
            let mut operations = requested.operations;
            let inject = operations.contains(Operation::Inject);
            if inject && manifest.outbound.is_empty() {
                eprintln!(
                    "keyhole dev: {} asks for `inject`, but the manifest's [outbound] names no host to send it to: not granted",
                    requested.binding
                );
                operations = operations
                    .iter()
                    .filter(|op| *op != Operation::Inject)
                    .collect();
                if operations.is_empty() {
                    continue;
                }
            }
            let operations = operations.to_string();
            let secret = Self::secret_name(&requested.binding);
            let mut args = vec![
                "grant",
                manifest.name.as_str(),
                requested.binding.as_str(),
                "--secret",
                secret.as_str(),
                "--allow",
                operations.as_str(),
            ];
            if inject && !manifest.outbound.is_empty() {
                args.extend(["--egress", egress.as_str()]);
            }
            self.store_command(&args, None)?;
            granted.push(format!("{} [{operations}]", requested.binding));
        }
        self.store_command(&["approve", &manifest.name], None)?;
        Ok(granted)
    }
}
