//! The sites to visit: a folder per organisation, its `.html` files the
//! pages (`--sites DIR`; `.html` files directly in DIR form one site named
//! after DIR).

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One organisation's site.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Site {
    /// Its name: the folder's.
    pub org: String,
    /// Where its pages are under the server's root: `org/`, or empty.
    pub prefix: String,
    /// Its pages, relative to the site's folder, `/`-separated, sorted.
    pub pages: Vec<String>,
}

/// The sites under `dir`, sorted by name.
///
/// # Errors
/// A message naming the folder when it cannot be read or holds no page.
pub fn discover(dir: &Path) -> Result<Vec<Site>, String> {
    let mut sites = Vec::new();
    let mut loose = Vec::new();
    for (path, name) in entries(dir)? {
        if path.is_dir() {
            let mut pages = Vec::new();
            pages_under(&path, "", &mut pages)?;
            if !pages.is_empty() {
                pages.sort();
                sites.push(Site {
                    prefix: format!("{name}/"),
                    org: name,
                    pages,
                });
            }
        } else if is_page(&path) {
            loose.push(name);
        }
    }
    if !loose.is_empty() {
        loose.sort();
        let org = dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "site".into());
        sites.push(Site {
            org,
            prefix: String::new(),
            pages: loose,
        });
    }
    if sites.is_empty() {
        return Err(format!("no .html pages in {}", dir.display()));
    }
    sites.sort_by(|a, b| a.org.cmp(&b.org));
    Ok(sites)
}

fn is_page(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm"))
}

/// The entries of `dir`, each with its file name.
fn entries(dir: &Path) -> Result<Vec<(PathBuf, String)>, String> {
    let unreadable = |e: std::io::Error| format!("cannot read {}: {e}", dir.display());
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        entries.push((path, name));
    }
    Ok(entries)
}

fn pages_under(dir: &Path, prefix: &str, pages: &mut Vec<String>) -> Result<(), String> {
    for (path, name) in entries(dir)? {
        if path.is_dir() {
            pages_under(&path, &format!("{prefix}{name}/"), pages)?;
        } else if is_page(&path) {
            pages.push(format!("{prefix}{name}"));
        }
    }
    Ok(())
}
