//! Where the benchmarks that are not criterion's leave their figures, so the
//! targets report (`cargo run --release --example targets`) can read them.

use std::fs;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// Writes `figures` to `<target dir>/agentry-bench/<bench>.json` as
/// `{"bench": .., "unix_time": .., "figures": {name: number}}`, and says where.
/// A bench that cannot write its file still printed its figures: it warns.
pub fn write(bench: &str, figures: &[(&str, f64)]) {
    // Set by cargo for benchmark builds: `<target dir>/tmp`.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
        .join("agentry-bench");
    let unix_time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let figures: serde_json::Map<String, serde_json::Value> = figures
        .iter()
        .map(|&(name, value)| (name.to_owned(), serde_json::json!(value)))
        .collect();
    let report = serde_json::json!({ "bench": bench, "unix_time": unix_time, "figures": figures });
    let path = dir.join(format!("{bench}.json"));
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
