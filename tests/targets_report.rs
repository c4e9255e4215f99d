//! The targets report (`examples/targets.rs`) run on a fake target
//! directory: criterion results and bench reports written by hand, so every
//! verdict and exit status is known in advance.
//!
//! `cargo test` builds the examples before it runs any test; this test runs
//! the binary it built.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::json;

/// The example binary beside this test's own: `<profile>/examples/targets`.
fn report_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary in <profile>/deps");
    let binary = profile_dir
        .join("examples")
        .join(format!("targets{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "{} not built: run `cargo test` (it builds the examples) or `cargo build --example targets`",
        binary.display()
    );
    binary
}

/// One criterion benchmark as criterion 0.5 leaves it: `new/benchmark.json`
/// and `new/estimates.json`, mean and median in ns.
fn criterion_result(root: &Path, id: &str, mean: f64, median: f64, elements: Option<u64>) {
    let dir = root.join(id.replace('/', "_")).join("new");
    fs::create_dir_all(&dir).unwrap();
    let throughput = elements.map(|n| json!({ "Elements": n }));
    let benchmark = json!({
        "group_id": id.rsplit_once('/').map_or(id, |(g, _)| g),
        "function_id": null,
        "value_str": null,
        "throughput": throughput,
        "full_id": id,
        "directory_name": id,
        "title": id,
    });
    let point = |x: f64| {
        json!({
            "confidence_interval": {"confidence_level": 0.95, "lower_bound": x, "upper_bound": x},
            "point_estimate": x,
            "standard_error": 0.0,
        })
    };
    let estimates = json!({
        "mean": point(mean),
        "median": point(median),
        "median_abs_dev": point(0.0),
        "slope": null,
        "std_dev": point(0.0),
    });
    fs::write(dir.join("benchmark.json"), benchmark.to_string()).unwrap();
    fs::write(dir.join("estimates.json"), estimates.to_string()).unwrap();
}

fn bench_report(target: &Path, bench: &str, figures: serde_json::Value) {
    let dir = target.join("agentry-bench");
    fs::create_dir_all(&dir).unwrap();
    let report = json!({ "bench": bench, "unix_time": 0, "figures": figures });
    fs::write(dir.join(format!("{bench}.json")), report.to_string()).unwrap();
}

/// A target directory where every figure meets its target; `spawn_ns` is
/// agentry's spawn time against a bare 100 µs.
fn fake_target(spawn_ns: f64) -> tempfile::TempDir {
    let target = tempfile::tempdir().unwrap();
    let c = target.path().join("criterion");
    criterion_result(
        &c,
        "orchestrator/spawn/agentry/10",
        spawn_ns,
        spawn_ns,
        None,
    );
    criterion_result(
        &c,
        "orchestrator/spawn/bare_thread_spawn/10",
        1e5,
        1e5,
        None,
    );
    criterion_result(&c, "broker/round_trip/agentry", 1300.0, 1200.0, None);
    criterion_result(&c, "broker/round_trip/bare_crossbeam", 1500.0, 1400.0, None);
    // 10,000 tasks in 4 ms: 2.5 M/s.
    let noop = "orchestrator/noop_throughput_4_agents";
    criterion_result(&c, &format!("{noop}/agentry"), 4e6, 4e6, Some(10_000));
    criterion_result(
        &c,
        &format!("{noop}/bare_crossbeam_pool"),
        1e6,
        1e6,
        Some(10_000),
    );
    let latency = "orchestrator/assignment_latency_agents";
    criterion_result(&c, &format!("{latency}/agentry/10"), 25e3, 25e3, None);
    criterion_result(&c, &format!("{latency}/agentry/1000"), 30e3, 30e3, None);
    criterion_result(
        &c,
        &format!("{latency}/bare_round_robin/10"),
        9e3,
        9e3,
        None,
    );
    criterion_result(
        &c,
        &format!("{latency}/bare_round_robin/1000"),
        30e3,
        30e3,
        None,
    );
    let autoscale = "coordination/autoscale_response";
    criterion_result(&c, &format!("{autoscale}/agentry"), 300e3, 300e3, None);
    criterion_result(
        &c,
        &format!("{autoscale}/bare_thread_spawn"),
        270e3,
        270e3,
        None,
    );
    criterion_result(&c, "get/agentry/1", 83.0, 80.0, None);
    criterion_result(&c, "get/bare-rwlock-hashmap/1", 54.0, 50.0, None);
    criterion_result(&c, "snapshot-100k/persist-fsync", 24e6, 20e6, Some(100_000));
    criterion_result(
        &c,
        "snapshot-100k/bare-write-fsync",
        10e6,
        10e6,
        Some(100_000),
    );
    criterion_result(&c, "snapshot-100k/reload", 28e6, 28e6, Some(100_000));
    criterion_result(&c, "snapshot-100k/bare-read-hashmap", 34e6, 34e6, None);
    bench_report(
        target.path(),
        "orchestrator",
        json!({
            "assignment_bare_p50_ns": 4860.0,
            "assignment_bare_p99_ns": 6880.0,
            "assignment_agentry_p50_ns": 1600.0,
            "assignment_agentry_p99_ns": 3180.0,
            "bare_5_agents_per_s": 4400.0,
            "agentry_5_agents_per_s": 4378.0,
            "bare_10_agents_per_s": 8800.0,
            "agentry_10_agents_per_s": 8756.0,
            "bare_20_agents_per_s": 17400.0,
            "agentry_20_agents_per_s": 17313.0,
        }),
    );
    bench_report(
        target.path(),
        "footprint",
        json!({
            "idle_agent_bytes": 29229.0,
            "bare_thread_bytes": 27062.0,
            "queued_task_bytes": 144.0,
            "bare_queued_task_bytes": 128.5,
            "task_payload_bytes": 4.0,
        }),
    );
    bench_report(
        target.path(),
        "election",
        json!({
            "bare_fslock_p50_ns": 450e3,
            "bare_fslock_p99_ns": 900e3,
            "lock_held_p50_ns": 600e3,
            "lock_held_p99_ns": 1.5e6,
            "elected_p50_ns": 800e3,
            "elected_p99_ns": 2e6,
            "serving_p50_ns": 40e6,
            "serving_p99_ns": 60e6,
        }),
    );
    target
}

fn run(target: &Path, extra: &[&str]) -> Output {
    Command::new(report_binary())
        .arg("--target-dir")
        .arg(target)
        .args(extra)
        .env_remove("CRITERION_HOME")
        .output()
        .expect("run the targets report")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The line of the table whose figure starts with `figure`.
fn row<'a>(table: &'a str, figure: &str) -> &'a str {
    table
        .lines()
        .find(|line| line.starts_with(figure))
        .unwrap_or_else(|| panic!("no row {figure:?} in\n{table}"))
}

#[test]
fn every_target_met_exits_zero_with_computed_figures() {
    let target = fake_target(1.2e5);
    let output = run(target.path(), &[]);
    let table = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{table}{}", stderr(&output));
    assert!(table.contains("every target met (16 of 16)"), "{table}");
    assert!(!table.contains("MISSED"), "{table}");
    // Throughput is elements over the mean: 10,000 tasks in 4 ms, and 10 %
    // of 4 ms's bare figure being 1 ms.
    let noop = row(&table, "throughput, no-op tasks, 4 agents");
    assert!(noop.contains("2.50 M/s") && noop.contains("10.00 M/s") && noop.contains("25.0%"));
    // One way is half the round trip's median.
    let latency = row(&table, "message latency");
    assert!(
        latency.contains("600 ns") && latency.contains("700 ns"),
        "{latency}"
    );
    let spawn = row(&table, "agent spawn");
    assert!(spawn.contains("1.20x") && spawn.ends_with("met"), "{spawn}");
    let overhead = row(&table, "1,000,000 queued tasks");
    assert!(overhead.contains("140 B"), "{overhead}");
}

#[test]
fn a_missed_target_exits_one_and_names_it() {
    let target = fake_target(1.3e5);
    let output = run(target.path(), &[]);
    let table = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{table}{}", stderr(&output));
    let spawn = row(&table, "agent spawn");
    assert!(
        spawn.contains("1.30x") && spawn.ends_with("MISSED"),
        "{spawn}"
    );
    assert_eq!(table.matches("MISSED").count(), 1, "{table}");
    assert!(stderr(&output).contains("1 of 16 targets missed"));
}

#[test]
fn missing_figures_exit_two_and_say_which_bench_to_run() {
    let target = fake_target(1.2e5);
    fs::remove_file(target.path().join("agentry-bench/footprint.json")).unwrap();
    fs::remove_dir_all(target.path().join("criterion/broker_round_trip_agentry")).unwrap();
    let output = run(target.path(), &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stdout(&output));
    let message = stderr(&output);
    assert!(
        message.contains("cargo bench --bench footprint"),
        "{message}"
    );
    assert!(message.contains("cargo bench --bench broker"), "{message}");
    assert!(!message.contains("--bench memory"), "{message}");
    let table = stdout(&output);
    assert!(row(&table, "memory per idle agent").contains("no figure"));
    assert!(row(&table, "agent spawn").ends_with("met"));
}

#[test]
fn an_empty_target_dir_lists_every_bench() {
    let target = tempfile::tempdir().unwrap();
    let output = run(target.path(), &[]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    for bench in [
        "broker",
        "coordination",
        "election",
        "footprint",
        "memory",
        "orchestrator",
    ] {
        assert!(
            message.contains(&format!("cargo bench --bench {bench}")),
            "{message}"
        );
    }
}

#[test]
fn a_corrupt_result_file_is_an_error_naming_it() {
    let target = fake_target(1.2e5);
    let broken = target.path().join("agentry-bench/election.json");
    fs::write(&broken, "{ not json").unwrap();
    let output = run(target.path(), &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("election.json"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn markdown_and_bad_arguments() {
    let target = fake_target(1.2e5);
    let output = run(target.path(), &["--markdown"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(stdout(&output).starts_with("| figure | seed | target |"));

    let output = run(target.path(), &["--frobnicate"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("unknown argument \"--frobnicate\""));
    let output = run(target.path(), &["--criterion-dir"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--criterion-dir needs a directory"));
}
