//! The rooms' walls, checked: what each folder of `host/src` must never
//! import, as its `mod.rs` says. A test reads the sources (comments
//! aside), so a change that crosses a wall fails here rather than in a
//! review.

use std::path::{Path, PathBuf};

/// Each folder and what its code must never name.
const WALLS: &[(&str, &[&str])] = &[
    (
        "crypto",
        &[
            "crate::store",
            "crate::node",
            "crate::engine",
            "crate::secrets",
            "crate::outbound",
            "crate::redact",
            "crate::admin",
            "crate::audit",
            "crate::deploy",
            "wasmtime",
            "hyper",
            "rusqlite",
        ],
    ),
    (
        "store",
        &[
            "wasmtime",
            "hyper",
            "crate::node",
            "crate::engine",
            "crate::secrets",
            "crate::redact",
            "crate::deploy",
        ],
    ),
    (
        "secrets",
        &[
            "rusqlite",
            "SqliteStore",
            "hyper",
            "crate::admin",
            "crate::deploy",
        ],
    ),
    (
        "outbound",
        &["rusqlite", "crate::store", "crate::admin", "crate::deploy"],
    ),
    (
        "redact",
        &["rusqlite", "crate::store", "crate::audit", "crate::admin"],
    ),
    ("engine", &["rusqlite", "SqliteStore", "crate::admin"]),
    ("node", &["rusqlite", "SqliteStore"]),
    ("deploy", &["rusqlite", "SqliteStore", "crate::node"]),
    ("admin", &["rusqlite", "SqliteStore"]),
    ("audit", &["rusqlite", "SqliteStore", "wasmtime", "hyper"]),
    (
        "config",
        &[
            "rusqlite",
            "SqliteStore",
            "hyper",
            "crate::store",
            "crate::secrets",
            "crate::admin",
            "crate::deploy",
        ],
    ),
];

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    found
}

#[test]
fn no_folder_names_what_its_mod_rs_says_it_never_touches() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut crossings = Vec::new();
    for (folder, never) in WALLS {
        for file in sources(&src.join(folder)) {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                for name in *never {
                    if code.contains(name) {
                        crossings.push(format!("{}:{}: {name}", file.display(), n + 1));
                    }
                }
            }
        }
    }
    assert!(
        crossings.is_empty(),
        "walls crossed:\n{}",
        crossings.join("\n")
    );
}

#[test]
fn nothing_outside_the_store_and_the_cli_names_the_sqlite_backend() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let named: Vec<String> = sources(&src)
        .into_iter()
        .filter(|f| !f.starts_with(src.join("store")) && !f.starts_with(src.join("cli")))
        .filter(|f| !f.ends_with("layout.rs"))
        .filter(|f| {
            std::fs::read_to_string(f).unwrap().lines().any(|l| {
                l.split("//")
                    .next()
                    .unwrap_or_default()
                    .contains("SqliteStore")
            })
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(named.is_empty(), "{named:?}");
}
