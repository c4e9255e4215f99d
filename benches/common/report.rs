//! Where the benchmarks that are not criterion's leave their figures, so the
//! targets report (`cargo run --release --example targets`) can read them.

use std::fs;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// Writes `figures` to `<target dir>/agentry-bench/<bench>.json` as
/// `{"bench": .., "unix_time": .., "figures": {name: number}}`, and says where.
/// Figures of the same bench written earlier and not named here stay (a run
/// filtered to one group updates that group's figures only). A bench that
/// cannot write its file still printed its figures: it warns.
pub fn write(bench: &str, figures: &[(&str, f64)]) {
    // Set by cargo for benchmark builds: `<target dir>/tmp`.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
        .join("agentry-bench");
    let path = dir.join(format!("{bench}.json"));
    let unix_time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut kept = fs::read(&path)
        .ok()
        .and_then(|text| serde_json::from_slice::<serde_json::Value>(&text).ok())
        .and_then(|mut report| match report.get_mut("figures")?.take() {
            serde_json::Value::Object(figures) => Some(figures),
            _ => None,
        })
        .unwrap_or_default();
    for &(name, value) in figures {
        kept.insert(name.to_owned(), serde_json::json!(value));
    }
    let figures = kept;
    let report = serde_json::json!({ "bench": bench, "unix_time": unix_time, "figures": figures });
    let written = fs::create_dir_all(&dir).and_then(|()| {
        fs::write(
            &path,
            serde_json::to_vec_pretty(&report).unwrap_or_default(),
        )
    });
    match written {
        Ok(()) => println!("figures written to {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}
