//! Builds every guest component the tests use — the examples and the test
//! programs — for wasm32-wasip2, from source, and writes their paths into
//! `$OUT_DIR/artifacts.rs`. Each workspace keeps its own target folder, so
//! this never contends with the outer build's lock.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

/// (workspace folder relative to the repository root, crates in it)
const WORKSPACES: &[(&str, &[&str])] = &[
    (
        "examples",
        &[
            "hello-secret",
            "webhook-verify",
            "reveal-demo",
            "api-proxy",
            "jwt-sign",
            "session-seal",
        ],
    ),
    (
        "tests/programs",
        &[
            "probe",
            "legacy",
            "leaky",
            "hostile",
            "plain-hello",
            "wasmcloud-guest",
        ],
    ),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir
        .parent()
        .and_then(Path::parent)
        .expect("tests/artifacts sits two levels below the root");
    for watched in ["wit", "guest-sdk/src", "guest-sdk/Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    check_target_installed();

    let mut generated = String::new();
    for (workspace, crates) in WORKSPACES {
        let dir = root.join(workspace);
        for file in ["Cargo.toml", "Cargo.lock", ".cargo/config.toml"] {
            println!("cargo:rerun-if-changed={}", dir.join(file).display());
        }
        for krate in *crates {
            println!(
                "cargo:rerun-if-changed={}",
                dir.join(krate).join("src").display()
            );
            println!(
                "cargo:rerun-if-changed={}",
                dir.join(krate).join("Cargo.toml").display()
            );
        }
        build_workspace(&dir);
        for krate in *crates {
            let wasm = dir
                .join("target")
                .join(TARGET)
                .join("release")
                .join(format!("{}.wasm", krate.replace('-', "_")));
            assert!(
                wasm.exists(),
                "building {workspace} did not produce {}",
                wasm.display()
            );
            let ident = krate.replace('-', "_").to_uppercase();
            generated += &format!(
                "/// The built `{krate}` component.\npub const {ident}: &str = {:?};\n",
                wasm.display().to_string()
            );
            let manifest = dir.join(krate).join("keyhole.toml");
            if manifest.exists() {
                generated += &format!(
                    "/// The `{krate}` example's manifest.\npub const {ident}_MANIFEST: &str = {:?};\n",
                    manifest.display().to_string()
                );
            }
        }
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("artifacts.rs");
    std::fs::write(out, generated).expect("writing artifacts.rs");
}

fn check_target_installed() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let output = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .expect("running rustc");
    let libdir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() || !Path::new(&libdir).exists() {
        panic!(
            "the {TARGET} target is not installed: run `rustup target add {TARGET}` (the README's commands do)"
        );
    }
}

fn build_workspace(dir: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(dir)
        .args(["build", "--release", "--target", TARGET]);
    // Settings meant for the outer (host) build must not leak into the guests'.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        command.env_remove(var);
    }
    let status = command
        .status()
        .expect("running cargo for the guest components");
    assert!(
        status.success(),
        "building the guest components in {} failed",
        dir.display()
    );
}
