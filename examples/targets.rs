//! The targets report: every performance target of the specification
//! against the figures of the last benchmark run, in one table.
//!
//! Run: `cargo bench`, then `cargo run --release --example targets`.
//!
//! It reads criterion's results (`<target dir>/criterion/**/new/`, or
//! `$CRITERION_HOME`) and the reports that the `footprint`, `election` and
//! `orchestrator` benches write to `<target dir>/agentry-bench/`. Every row
//! sets agentry beside the bare baseline measured in the same run. Throughput
//! comes from a group's mean time and its element count (tasks/s = n / mean).
//!
//! Exit status: 0 when every target is met, 1 when one is missed, 2 when a
//! figure is missing (it says which `cargo bench --bench X` to run) or the
//! arguments are wrong.

use std::collections::{BTreeMap, HashMap};
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use serde_json::Value;

const USAGE: &str = "\
usage: targets [--target-dir DIR] [--criterion-dir DIR] [--reports-dir DIR] [--markdown]

Prints every performance target of the specification against the figures of
the last `cargo bench` run.

  --target-dir DIR     cargo's target directory (default: $CARGO_TARGET_DIR,
                       else the one this binary was built in)
  --criterion-dir DIR  criterion's results (default: $CRITERION_HOME, else
                       <target dir>/criterion)
  --reports-dir DIR    the footprint, election and orchestrator reports
                       (default: <target dir>/agentry-bench)
  --markdown           print the table as Markdown
  --help               this text

Exit status: 0 every target met, 1 a target missed, 2 figures missing or bad
arguments.";

/// One criterion benchmark's result: estimates in nanoseconds per iteration.
struct Estimate {
    mean: f64,
    median: f64,
    /// Elements per iteration, when the group declared a throughput.
    elements: Option<f64>,
    modified: Option<SystemTime>,
}

/// Everything the benches left behind.
#[derive(Default)]
struct Figures {
    /// By criterion's full id, e.g. `orchestrator/spawn/agentry/10`.
    criterion: HashMap<String, Estimate>,
    /// By bench name, its report's figures by name.
    reports: HashMap<String, (HashMap<String, f64>, Option<SystemTime>)>,
}

/// A figure the report needs and did not find: which bench produces it.
#[derive(Debug)]
struct Missing {
    bench: &'static str,
    what: String,
}

impl Figures {
    fn load(criterion_dir: &Path, reports_dir: &Path) -> Result<Figures, String> {
        let mut figures = Figures::default();
        if criterion_dir.is_dir() {
            figures.walk_criterion(criterion_dir)?;
        }
        for bench in ["footprint", "election", "orchestrator"] {
            let path = reports_dir.join(format!("{bench}.json"));
            if !path.is_file() {
                continue;
            }
            let json = read_json(&path)?;
            let numbers = json
                .get("figures")
                .and_then(Value::as_object)
                .ok_or_else(|| format!("{}: no \"figures\" object", path.display()))?
                .iter()
                .filter_map(|(name, value)| Some((name.clone(), value.as_f64()?)))
                .collect();
            figures
                .reports
                .insert(bench.to_owned(), (numbers, modified(&path)));
        }
        Ok(figures)
    }

    /// Collects every `new/` directory under `dir` (criterion's latest run
    /// of one benchmark).
    fn walk_criterion(&mut self, dir: &Path) -> Result<(), String> {
        let entries = fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
            if !path.is_dir() {
                continue;
            }
            if path.file_name().is_some_and(|name| name == "new") {
                if let Some((id, estimate)) = read_criterion(&path)? {
                    self.criterion.insert(id, estimate);
                }
            } else {
                self.walk_criterion(&path)?;
            }
        }
        Ok(())
    }

    fn estimate(&self, bench: &'static str, id: &str) -> Result<&Estimate, Missing> {
        self.criterion.get(id).ok_or_else(|| Missing {
            bench,
            what: id.to_owned(),
        })
    }

    /// Mean time of one iteration, in nanoseconds.
    fn mean(&self, bench: &'static str, id: &str) -> Result<f64, Missing> {
        Ok(self.estimate(bench, id)?.mean)
    }

    /// Median over criterion's samples of the time of one iteration.
    fn median(&self, bench: &'static str, id: &str) -> Result<f64, Missing> {
        Ok(self.estimate(bench, id)?.median)
    }

    /// Elements per second: the group's elements per iteration over its mean.
    fn rate(&self, bench: &'static str, id: &str) -> Result<f64, Missing> {
        let estimate = self.estimate(bench, id)?;
        let elements = estimate.elements.ok_or_else(|| Missing {
            bench,
            what: format!("{id} (its throughput)"),
        })?;
        Ok(elements / (estimate.mean * 1e-9))
    }

    /// A number from a bench's own report.
    fn report(&self, bench: &'static str, name: &str) -> Result<f64, Missing> {
        self.reports
            .get(bench)
            .and_then(|(numbers, _)| numbers.get(name).copied())
            .ok_or_else(|| Missing {
                bench,
                what: format!("{name} in {bench}.json"),
            })
    }

    /// When each bench's figures were last written (the newest file).
    fn ages(&self) -> BTreeMap<String, SystemTime> {
        let mut ages = BTreeMap::new();
        let mut note = |bench: &str, at: Option<SystemTime>| {
            if let Some(at) = at {
                let newest = ages.entry(bench.to_owned()).or_insert(at);
                *newest = (*newest).max(at);
            }
        };
        for (id, estimate) in &self.criterion {
            note(bench_of(id), estimate.modified);
        }
        for (bench, (_, at)) in &self.reports {
            note(bench, *at);
        }
        ages
    }
}

/// The bench a criterion id belongs to (the memory bench's groups carry no
/// prefix).
fn bench_of(id: &str) -> &str {
    match id.split('/').next().unwrap_or(id) {
        group @ ("broker" | "orchestrator" | "coordination" | "parallel") => group,
        _ => "memory",
    }
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn modified(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// One benchmark's `new/` directory: its id and estimates. A directory
/// without both files (an interrupted run) is skipped.
fn read_criterion(dir: &Path) -> Result<Option<(String, Estimate)>, String> {
    let (benchmark, estimates) = (dir.join("benchmark.json"), dir.join("estimates.json"));
    if !benchmark.is_file() || !estimates.is_file() {
        return Ok(None);
    }
    let benchmark_json = read_json(&benchmark)?;
    let estimates_json = read_json(&estimates)?;
    let id = benchmark_json
        .get("full_id")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{}: no \"full_id\"", benchmark.display()))?;
    let point = |name: &str| {
        estimates_json
            .get(name)
            .and_then(|e| e.get("point_estimate"))
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("{}: no {name} point estimate", estimates.display()))
    };
    let elements = benchmark_json
        .get("throughput")
        .and_then(|t| t.get("Elements").or_else(|| t.get("Bytes")))
        .and_then(Value::as_f64);
    let estimate = Estimate {
        mean: point("mean")?,
        median: point("median")?,
        elements,
        modified: modified(&estimates),
    };
    Ok(Some((id.to_owned(), estimate)))
}

/// What one row measured.
struct Outcome {
    measured: String,
    baseline: String,
    ratio: String,
    met: bool,
}

/// One target of the specification's performance table.
struct Target {
    figure: &'static str,
    seed: &'static str,
    target: &'static str,
    evaluate: fn(&Figures) -> Result<Outcome, Missing>,
}

/// The specification's performance table, row by row (SPEC.md,
/// "Performance"); a row with several figures is split.
const TARGETS: &[Target] = &[
    Target {
        figure: "agent spawn, 10 agents until running (mean)",
        seed: "~50 ms",
        target: "<= 1.25x bare thread::spawn",
        evaluate: |f| {
            let agentry = f.mean("orchestrator", "orchestrator/spawn/agentry/10")?;
            let bare = f.mean("orchestrator", "orchestrator/spawn/bare_thread_spawn/10")?;
            Ok(versus(time(agentry), time(bare), agentry / bare, 1.25))
        },
    },
    Target {
        figure: "message latency, one way (median of round trips / 2)",
        seed: "<10 ms",
        target: "p50 <= 1.5x bare channel",
        evaluate: |f| {
            let agentry = f.median("broker", "broker/round_trip/agentry")? / 2.0;
            let bare = f.median("broker", "broker/round_trip/bare_crossbeam")? / 2.0;
            Ok(versus(time(agentry), time(bare), agentry / bare, 1.5))
        },
    },
    Target {
        figure: "task assignment, submit to start, idle agent",
        seed: "~20 ms",
        target: "p50 <= 5 us, p99 <= 15 us",
        evaluate: |f| {
            let p50 = f.report("orchestrator", "assignment_agentry_p50_ns")?;
            let p99 = f.report("orchestrator", "assignment_agentry_p99_ns")?;
            let bare50 = f.report("orchestrator", "assignment_bare_p50_ns")?;
            let bare99 = f.report("orchestrator", "assignment_bare_p99_ns")?;
            Ok(Outcome {
                measured: format!("p50 {}, p99 {}", time(p50), time(p99)),
                baseline: format!("p50 {}, p99 {}", time(bare50), time(bare99)),
                ratio: format!("{:.2}x", p50 / bare50),
                met: p50 <= 5_000.0 && p99 <= 15_000.0,
            })
        },
    },
    Target {
        figure: "throughput, no-op tasks, 4 agents",
        seed: "-",
        target: ">= 2,000,000/s and >= 10% of bare pool",
        evaluate: |f| {
            let group = "orchestrator/noop_throughput_4_agents";
            let agentry = f.rate("orchestrator", &format!("{group}/agentry"))?;
            let bare = f.rate("orchestrator", &format!("{group}/bare_crossbeam_pool"))?;
            Ok(Outcome {
                measured: rate(agentry),
                baseline: rate(bare),
                ratio: percent(agentry / bare),
                met: agentry >= 2_000_000.0 && agentry / bare >= 0.10,
            })
        },
    },
    Target {
        figure: "throughput, 1 ms tasks, 5 agents",
        seed: "50/s (100 ms tasks)",
        target: ">= 99% of bare pool",
        evaluate: |f| sleep_throughput(f, 5),
    },
    Target {
        figure: "throughput, 1 ms tasks, 10 agents",
        seed: "90/s (100 ms tasks)",
        target: ">= 99% of bare pool",
        evaluate: |f| sleep_throughput(f, 10),
    },
    Target {
        figure: "throughput, 1 ms tasks, 20 agents",
        seed: "-",
        target: ">= 99% of bare pool",
        evaluate: |f| sleep_throughput(f, 20),
    },
    Target {
        figure: "auto-scale response, condition to agent running (mean)",
        seed: "<2 s",
        target: "< 1 ms",
        evaluate: |f| {
            let group = "coordination/autoscale_response";
            let agentry = f.mean("coordination", &format!("{group}/agentry"))?;
            let bare = f.mean("coordination", &format!("{group}/bare_thread_spawn"))?;
            Ok(Outcome {
                measured: time(agentry),
                baseline: time(bare),
                ratio: format!("{:.2}x", agentry / bare),
                met: agentry < 1_000_000.0,
            })
        },
    },
    Target {
        figure: "memory per idle agent, mailbox included",
        seed: "~5 MB",
        target: "<= 32 KiB",
        evaluate: |f| {
            let agentry = f.report("footprint", "idle_agent_bytes")?;
            let bare = f.report("footprint", "bare_thread_bytes")?;
            Ok(Outcome {
                measured: bytes(agentry),
                baseline: bytes(bare),
                ratio: format!("{:.2}x", agentry / bare),
                met: agentry <= 32.0 * 1024.0,
            })
        },
    },
    Target {
        figure: "assignment cost, 1,000 agents vs 10 (mean)",
        seed: "20 agents tested",
        target: "<= 2x of 10 agents",
        evaluate: |f| {
            let group = "orchestrator/assignment_latency_agents";
            let many = f.mean("orchestrator", &format!("{group}/agentry/1000"))?;
            let few = f.mean("orchestrator", &format!("{group}/agentry/10"))?;
            // Bare threads given work in turn wake as cold a thread each time.
            let bare_many = f.mean("orchestrator", &format!("{group}/bare_round_robin/1000"))?;
            let bare_few = f.mean("orchestrator", &format!("{group}/bare_round_robin/10"))?;
            Ok(versus(
                time(many),
                format!(
                    "10 agents: {}; bare round robin {:.2}x",
                    time(few),
                    bare_many / bare_few
                ),
                many / few,
                2.0,
            ))
        },
    },
    Target {
        figure: "1,000,000 queued tasks, overhead each",
        seed: "100+ concurrent",
        target: "< 256 B",
        evaluate: |f| {
            let agentry = f.report("footprint", "queued_task_bytes")?;
            let bare = f.report("footprint", "bare_queued_task_bytes")?;
            let overhead = agentry - f.report("footprint", "task_payload_bytes")?;
            Ok(Outcome {
                measured: bytes(overhead),
                baseline: format!("bare Task: {}", bytes(bare)),
                ratio: format!("{:.2}x", agentry / bare),
                met: overhead < 256.0,
            })
        },
    },
    Target {
        figure: "shared memory get, uncontended (mean)",
        seed: "-",
        target: "< 200 ns",
        evaluate: |f| {
            let agentry = f.mean("memory", "get/agentry/1")?;
            let bare = f.mean("memory", "get/bare-rwlock-hashmap/1")?;
            Ok(Outcome {
                measured: time(agentry),
                baseline: time(bare),
                ratio: format!("{:.2}x", agentry / bare),
                met: agentry < 200.0,
            })
        },
    },
    Target {
        figure: "snapshot of 100,000 keys persisted, fsync'd (median)",
        seed: "-",
        target: "p50 < 25 ms",
        evaluate: |f| {
            let agentry = f.median("memory", "snapshot-100k/persist-fsync")?;
            let bare = f.median("memory", "snapshot-100k/bare-write-fsync")?;
            Ok(Outcome {
                measured: time(agentry),
                baseline: time(bare),
                ratio: format!("{:.2}x", agentry / bare),
                met: agentry < 25_000_000.0,
            })
        },
    },
    Target {
        figure: "snapshot of 100,000 keys reloaded (mean)",
        seed: "-",
        target: "< 40 ms",
        evaluate: |f| {
            let agentry = f.mean("memory", "snapshot-100k/reload")?;
            let bare = f.mean("memory", "snapshot-100k/bare-read-hashmap")?;
            Ok(Outcome {
                measured: time(agentry),
                baseline: time(bare),
                ratio: format!("{:.2}x", agentry / bare),
                met: agentry < 40_000_000.0,
            })
        },
    },
    Target {
        figure: "takeover after kill -9: leader.lock held by the follower",
        seed: "-",
        target: "lock held <= 1 ms",
        evaluate: |f| {
            let p50 = f.report("election", "lock_held_p50_ns")?;
            let p99 = f.report("election", "lock_held_p99_ns")?;
            let bare = f.report("election", "bare_fslock_p50_ns")?;
            Ok(Outcome {
                measured: format!("p50 {}, p99 {}", time(p50), time(p99)),
                baseline: format!("bare flock p50 {}", time(bare)),
                ratio: format!("{:.2}x", p50 / bare),
                met: p50 <= 1_000_000.0,
            })
        },
    },
    Target {
        figure: "takeover after kill -9: new orchestrator serving",
        seed: "-",
        target: "<= 50 ms",
        evaluate: |f| {
            let p50 = f.report("election", "serving_p50_ns")?;
            let p99 = f.report("election", "serving_p99_ns")?;
            let bare = f.report("election", "bare_fslock_p50_ns")?;
            Ok(Outcome {
                measured: format!("p50 {}, p99 {}", time(p50), time(p99)),
                baseline: format!("bare flock p50 {}", time(bare)),
                ratio: format!("{:.1}x", p50 / bare),
                met: p50 <= 50_000_000.0,
            })
        },
    },
];

/// From the rounds the orchestrator bench times in alternation (see its
/// `sleep_throughput`), which a change in the machine's load touches alike.
fn sleep_throughput(f: &Figures, agents: usize) -> Result<Outcome, Missing> {
    let agentry = f.report("orchestrator", &format!("agentry_{agents}_agents_per_s"))?;
    let bare = f.report("orchestrator", &format!("bare_{agents}_agents_per_s"))?;
    Ok(Outcome {
        measured: rate(agentry),
        baseline: rate(bare),
        ratio: percent(agentry / bare),
        met: agentry / bare >= 0.99,
    })
}

/// A row whose target is a ratio to its baseline.
fn versus(measured: String, baseline: String, ratio: f64, at_most: f64) -> Outcome {
    Outcome {
        measured,
        baseline,
        ratio: format!("{ratio:.2}x"),
        met: ratio <= at_most,
    }
}

fn time(ns: f64) -> String {
    match ns {
        ns if ns < 1e3 => format!("{ns:.0} ns"),
        ns if ns < 1e6 => format!("{:.2} us", ns / 1e3),
        ns if ns < 1e9 => format!("{:.2} ms", ns / 1e6),
        ns => format!("{:.2} s", ns / 1e9),
    }
}

fn rate(per_second: f64) -> String {
    match per_second {
        r if r >= 1e6 => format!("{:.2} M/s", r / 1e6),
        r if r >= 1e3 => format!("{:.2} K/s", r / 1e3),
        r => format!("{r:.0}/s"),
    }
}

fn percent(fraction: f64) -> String {
    format!("{:.1}%", fraction * 100.0)
}

fn bytes(b: f64) -> String {
    format!("{b:.0} B")
}

/// The finished table and what it found.
struct Report {
    text: String,
    missed: usize,
    missing: Vec<Missing>,
}

fn evaluate(figures: &Figures, markdown: bool) -> Report {
    let header = [
        "figure", "seed", "target", "measured", "baseline", "ratio", "verdict",
    ];
    let mut rows = Vec::new();
    let (mut missed, mut missing) = (0, Vec::new());
    for target in TARGETS {
        let (measured, baseline, ratio, verdict) = match (target.evaluate)(figures) {
            Ok(outcome) => {
                if !outcome.met {
                    missed += 1;
                }
                let verdict = if outcome.met { "met" } else { "MISSED" };
                (
                    outcome.measured,
                    outcome.baseline,
                    outcome.ratio,
                    verdict.to_owned(),
                )
            }
            Err(absent) => {
                let verdict = format!("no figure: cargo bench --bench {}", absent.bench);
                missing.push(absent);
                ("-".to_owned(), "-".to_owned(), "-".to_owned(), verdict)
            }
        };
        rows.push([
            target.figure.to_owned(),
            target.seed.to_owned(),
            target.target.to_owned(),
            measured,
            baseline,
            ratio,
            verdict,
        ]);
    }
    let text = if markdown {
        markdown_table(&header, &rows)
    } else {
        text_table(&header, &rows)
    };
    Report {
        text,
        missed,
        missing,
    }
}

fn text_table(header: &[&str; 7], rows: &[[String; 7]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(&header.map(str::to_owned));
    line(&widths.map(|w| "-".repeat(w)));
    for row in rows {
        line(row);
    }
    out
}

fn markdown_table(header: &[&str; 7], rows: &[[String; 7]]) -> String {
    let mut out = format!("| {} |\n", header.join(" | "));
    let _ = writeln!(out, "|{}", " --- |".repeat(header.len()));
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out
}

/// Where cargo puts its output: `$CARGO_TARGET_DIR`, else the directory
/// this binary was built in (cargo marks it with `CACHEDIR.TAG`).
fn target_dir() -> PathBuf {
    if let Some(dir) = env::var_os("CARGO_TARGET_DIR") {
        return dir.into();
    }
    env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|dir| dir.join("CACHEDIR.TAG").is_file())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

struct Options {
    criterion_dir: PathBuf,
    reports_dir: PathBuf,
    markdown: bool,
}

/// `Ok(None)` for `--help`.
fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Options>, String> {
    let (mut target, mut criterion, mut reports, mut markdown) = (None, None, None, false);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |slot: &mut Option<PathBuf>| match args.next() {
            Some(dir) => {
                *slot = Some(PathBuf::from(dir));
                Ok(())
            }
            None => Err(format!("{arg} needs a directory")),
        };
        match arg.as_str() {
            "--target-dir" => value(&mut target)?,
            "--criterion-dir" => value(&mut criterion)?,
            "--reports-dir" => value(&mut reports)?,
            "--markdown" => markdown = true,
            "--help" | "-h" => return Ok(None),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let target = target.unwrap_or_else(target_dir);
    let criterion_dir = criterion.unwrap_or_else(|| match env::var_os("CRITERION_HOME") {
        Some(home) => home.into(),
        None => target.join("criterion"),
    });
    Ok(Some(Options {
        criterion_dir,
        reports_dir: reports.unwrap_or_else(|| target.join("agentry-bench")),
        markdown,
    }))
}

fn main() -> ExitCode {
    let options = match parse(env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("targets: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let figures = match Figures::load(&options.criterion_dir, &options.reports_dir) {
        Ok(figures) => figures,
        Err(e) => {
            eprintln!("targets: cannot read the benchmark figures: {e}");
            return ExitCode::from(2);
        }
    };
    let report = evaluate(&figures, options.markdown);
    print!("{}", report.text);
    println!();
    println!(
        "criterion results: {}; bench reports: {}",
        options.criterion_dir.display(),
        options.reports_dir.display()
    );
    let now = SystemTime::now();
    let ages: Vec<String> = figures
        .ages()
        .into_iter()
        .map(|(bench, at)| {
            let minutes = now.duration_since(at).unwrap_or_default().as_secs() / 60;
            format!("{bench} {minutes} min ago")
        })
        .collect();
    if !ages.is_empty() {
        println!("figures written: {}", ages.join(", "));
    }
    if !report.missing.is_empty() {
        let mut benches: Vec<&str> = report.missing.iter().map(|m| m.bench).collect();
        benches.sort_unstable();
        benches.dedup();
        eprintln!("\ntargets: {} figures missing:", report.missing.len());
        for absent in &report.missing {
            eprintln!(
                "  {} (from `cargo bench --bench {}`)",
                absent.what, absent.bench
            );
        }
        eprintln!("run, then try again:");
        for bench in benches {
            eprintln!("  cargo bench --bench {bench}");
        }
        return ExitCode::from(2);
    }
    if report.missed > 0 {
        eprintln!(
            "\ntargets: {} of {} targets missed",
            report.missed,
            TARGETS.len()
        );
        return ExitCode::FAILURE;
    }
    println!("every target met ({} of {})", TARGETS.len(), TARGETS.len());
    ExitCode::SUCCESS
}
