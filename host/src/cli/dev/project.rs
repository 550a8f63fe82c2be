//! What kind of function folder `keyhole dev` runs in, and how to build it:
//! `package.json` means JavaScript (`npm run build`), `Cargo.toml` means
//! Rust (`cargo build --release`, for wasm32-wasip2 as the folder's cargo
//! config says).

use anyhow::bail;
use std::path::Path;
use std::process::Command;

/// A function folder's language, by the build files it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Project {
    /// `npm run build` (the JS guest SDK's `keyhole-build-js`).
    JavaScript,
    /// `cargo build --release`.
    Rust,
}

impl Project {
    /// The kind of the function folder `dir`.
    pub fn detect(dir: &Path) -> anyhow::Result<Self> {
        if dir.join("package.json").is_file() {
            Ok(Self::JavaScript)
        } else if dir.join("Cargo.toml").is_file() {
            Ok(Self::Rust)
        } else {
            bail!(
                "{} has neither package.json (JavaScript) nor Cargo.toml (Rust): keyhole dev does not know how to build it",
                dir.display()
            )
        }
    }

    /// The command that builds the component in `dir`.
    pub fn build_command(self, dir: &Path) -> Command {
        let mut command = match self {
            Self::JavaScript => {
                let mut npm = Command::new("npm");
                npm.args(["run", "--silent", "build"]);
                npm
            }
            Self::Rust => {
                let mut cargo = Command::new("cargo");
                cargo.args(["build", "--release", "--quiet"]);
                cargo
            }
        };
        command.current_dir(dir);
        command
    }

    /// What to run before a first build can work, when it is missing: for
    /// JavaScript, the SDK's `keyhole-build-js` installed here or in an
    /// enclosing folder (an npm workspace installs at its root).
    pub fn missing_setup(self, dir: &Path) -> Option<&'static str> {
        let installed = |d: &Path| d.join("node_modules/.bin/keyhole-build-js").exists();
        match self {
            Self::JavaScript if !dir.ancestors().any(installed) => {
                Some("npm install (the SDK's build tools come from the npm registry)")
            }
            _ => None,
        }
    }

    /// The folders a change in which is no source change (build output,
    /// installed packages, the dev store itself).
    pub fn ignored(self) -> &'static [&'static str] {
        match self {
            Self::JavaScript => &[
                "node_modules",
                "dist",
                ".keyhole",
                ".git",
                "package-lock.json",
            ],
            Self::Rust => &["target", ".keyhole", ".git", "Cargo.lock"],
        }
    }
}
