//! The console's files, compiled into the binary. Each is listed here by
//! hand (a test checks the list against the `assets` folder), so what the
//! node serves is exactly what was reviewed, under a fixed content type.

/// One embedded file.
pub(super) struct Asset {
    /// Its path below `/ui/`.
    pub name: &'static str,
    /// What it is.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

macro_rules! assets {
    ($($name:literal => $content_type:expr),* $(,)?) => {
        &[$(Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("assets/", $name)),
        }),*]
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the console serves.
static ASSETS: &[Asset] = assets! {
    "index.html" => "text/html; charset=utf-8",
    "console.css" => "text/css; charset=utf-8",
    "favicon.svg" => "image/svg+xml",
    "js/api.js" => JS,
    "js/app.js" => JS,
    "js/dom.js" => JS,
    "js/format.js" => JS,
    "js/views/audit.js" => JS,
    "js/views/functions.js" => JS,
    "js/views/node.js" => JS,
    "js/views/secret.js" => JS,
    "js/views/secrets.js" => JS,
    "js/views/tokens.js" => JS,
};

/// The asset named `name`, if there is one (an exact match: no path is
/// ever resolved against a directory).
pub(super) fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn files_under(dir: &Path, prefix: &str, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if entry.file_type().unwrap().is_dir() {
                files_under(&entry.path(), &format!("{name}/"), out);
            } else {
                out.push(name);
            }
        }
    }

    #[test]
    fn every_file_in_the_assets_folder_is_served_and_nothing_else() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/admin/console/assets");
        let mut on_disk = Vec::new();
        files_under(&dir, "", &mut on_disk);
        on_disk.sort();
        let mut listed: Vec<String> = ASSETS.iter().map(|a| a.name.to_owned()).collect();
        listed.sort();
        assert_eq!(on_disk, listed);
        for asset in ASSETS {
            if asset.name.ends_with(".js") {
                assert_eq!(asset.content_type, JS, "{}", asset.name);
            }
        }
    }

    #[test]
    fn no_script_writes_html() {
        // The DOM is built from text nodes; these sinks would parse HTML (the
        // CSP's Trusted Types would also make them throw).
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(asset.body).unwrap();
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
                "setAttribute('on",
                "localStorage",
                "sessionStorage",
                "document.cookie",
            ] {
                assert!(!text.contains(sink), "{} uses {sink}", asset.name);
            }
        }
        let page = std::str::from_utf8(find("index.html").unwrap().body).unwrap();
        assert!(!page.contains("<script>"), "an inline script");
        // No event-handler attribute (` onload=`, ` onclick=`...).
        for (at, _) in page.match_indices(" on") {
            let name: String = page[at + 3..]
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            assert!(
                !page[at + 3 + name.len()..].starts_with('='),
                "index.html has an on{name}= attribute"
            );
        }
    }
}
