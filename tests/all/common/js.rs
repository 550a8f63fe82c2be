//! JavaScript functions built from source for the tests: the packages of
//! the repository's npm workspace (the JS guest SDK, its examples, the JS
//! test guests), each built with its own `npm run build`, as a developer
//! would.
//!
//! The workspace's packages come from `npm ci` at the repository root
//! (`scripts/test` runs it). A build is skipped when the package's output
//! was built from exactly the inputs there are now (their SHA-256 is kept
//! beside it), so a second test run does not pay ComponentizeJS again; builds
//! run one at a time, since each takes both cores for a while.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ sits in the repository root")
        .to_owned()
}

static BUILDS: Mutex<()> = Mutex::new(());

/// Builds the workspace package in `package` (relative to the repository
/// root) with `npm run build` unless its `output` (relative to the
/// package) is already built from the current inputs; returns the
/// output's path.
pub fn build_js(package: &str, output: &str) -> PathBuf {
    let _one_at_a_time = BUILDS.lock().unwrap_or_else(|p| p.into_inner());
    let root = repo_root();
    let dir = root.join(package);
    let out = dir.join(output);
    let stamp = out.with_extension("inputs-sha256");
    let inputs = inputs_digest(&root, &dir);
    if out.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(inputs.as_str()) {
        return out;
    }
    assert!(
        root.join("node_modules/@bytecodealliance/componentize-js")
            .exists(),
        "the npm workspace is not installed: run `npm ci` in {} (scripts/test does)",
        root.display()
    );
    npm(&dir, &["run", "--silent", "build"]);
    assert!(out.exists(), "npm run build in {package} wrote no {output}");
    std::fs::write(&stamp, inputs).unwrap();
    out
}

/// SHA-256 over everything a JS build reads: the package's sources and
/// manifests, the SDK (its code, build script and WIT) and the lockfile.
fn inputs_digest(root: &Path, package: &Path) -> String {
    let mut files = project_files(&package.join("src"));
    files.extend(project_files(&root.join("guest-sdk/js")));
    for file in [
        package.join("package.json"),
        package.join("keyhole.toml"),
        root.join("package-lock.json"),
    ] {
        if file.exists() {
            files.push(file);
        }
    }
    files.sort();
    let mut hash = Sha256::new();
    for file in files {
        hash.update(file.to_string_lossy().as_bytes());
        hash.update([0]);
        hash.update(std::fs::read(&file).unwrap());
        hash.update([0]);
    }
    hex::encode(hash.finalize())
}

/// Runs `npm ARGS` in `dir`, which must succeed (its output in the panic
/// if not). Packages come from npm's cache where it has them: the
/// repository's own `npm ci` filled it with the same pinned tools.
pub fn npm(dir: &Path, args: &[&str]) {
    let out = Command::new("npm")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running npm (is Node.js installed?)");
    assert!(
        out.status.success(),
        "npm {args:?} in {} failed:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `keyhole new NAME --lang js` in `dir`, with its packages installed (by
/// `npm install`, as its README says); the project's folder.
pub fn new_js_project(dir: &Path, name: &str) -> PathBuf {
    let made = Command::new(super::KEYHOLE)
        .args(["new", name, "--lang", "js"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let project = dir.join(name);
    npm(
        &project,
        &["install", "--prefer-offline", "--no-audit", "--no-fund"],
    );
    project
}

/// Every file under `dir` but installed packages and build output.
pub fn project_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(folder) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name == "node_modules" || name == "dist" {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}
