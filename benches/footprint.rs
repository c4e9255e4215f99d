//! Memory footprint report (a plain `main`, not criterion): resident memory
//! per idle agent (1,000 idle agents, beside 1,000 bare threads parked on a
//! bounded crossbeam channel each) and per queued task (1,000,000 tasks
//! queued behind a busy agent, beside the same tasks in a bare crossbeam
//! channel).
//!
//! Each figure is measured in a child process of its own (this binary run
//! again with `AGENTRY_FOOTPRINT_PROBE` set), so memory one measurement frees
//! and the allocator keeps cannot hide the next one's growth.
//!
//! Run: `cargo bench --bench footprint`. The figures also go to
//! `target/agentry-bench/footprint.json` for the targets report.

use std::collections::HashMap;
use std::env;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use agentry::{AgentContext, Event, Orchestrator, Output, Role, Task, TaskError};
use crossbeam_channel::{bounded, unbounded};

#[path = "common/report.rs"]
mod report;

const PROBE_VAR: &str = "AGENTRY_FOOTPRINT_PROBE";
const AGENTS: usize = 1_000;
const TASKS: usize = 1_000_000;
const CHUNK: usize = 10_000;
const MAILBOX: usize = 1_000;
/// Time for new threads to finish starting and park.
const SETTLE: Duration = Duration::from_millis(200);
const WAIT: Duration = Duration::from_secs(60);
const KIND: &str = "noop";

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/self/status");
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("VmRSS in kB");
    kib * 1024
}

/// A probe's findings, printed by the child as `key=value` lines.
type Findings = Vec<(&'static str, String)>;

fn wait_for_spawns(orchestrator: &Orchestrator, n: usize) {
    let mut spawned = 0;
    while spawned < n {
        match orchestrator.events().recv_timeout(WAIT) {
            Ok(Event::AgentSpawned { .. }) => spawned += 1,
            Ok(_) => {}
            Err(e) => panic!("{spawned} of {n} agents reported running: {e}"),
        }
    }
}

fn noop(_: &Task, _: &AgentContext) -> Result<Output, TaskError> {
    Ok(Output::empty())
}

/// 1,000 idle agents (min and max pinned so auto-scaling leaves them be).
fn agents_agentry() -> Findings {
    let before = rss();
    let started = Instant::now();
    let orchestrator = Orchestrator::builder()
        .agents(Role::Extractor, AGENTS, || noop)
        .min_agents(AGENTS)
        .max_agents(AGENTS)
        .build()
        .unwrap();
    wait_for_spawns(&orchestrator, AGENTS);
    let spawned = started.elapsed();
    thread::sleep(SETTLE);
    let after = rss();
    let live = orchestrator.status().agents().len();
    let cpu = cpu_time();
    thread::sleep(Duration::from_secs(1));
    let idle_cpu = cpu_time() - cpu;
    let started = Instant::now();
    orchestrator.shutdown().unwrap();
    vec![
        ("per_unit", per(after.saturating_sub(before), AGENTS)),
        ("rss_before", before.to_string()),
        ("rss_after", after.to_string()),
        ("live_agents", live.to_string()),
        ("spawn_ms", ms(spawned)),
        ("idle_cpu_ms_per_s", ms(idle_cpu)),
        ("shutdown_ms", ms(started.elapsed())),
    ]
}

/// 1,000 bare threads, each parked on `recv` of its own bounded channel.
fn agents_bare() -> Findings {
    let before = rss();
    let (running_tx, running) = bounded::<()>(AGENTS);
    let mut senders = Vec::with_capacity(AGENTS);
    let threads: Vec<_> = (0..AGENTS)
        .map(|_| {
            let (sender, mailbox) = bounded::<usize>(MAILBOX);
            senders.push(sender);
            let running_tx = running_tx.clone();
            thread::spawn(move || {
                running_tx.send(()).unwrap();
                while mailbox.recv().is_ok() {}
            })
        })
        .collect();
    for _ in 0..AGENTS {
        running.recv_timeout(WAIT).unwrap();
    }
    thread::sleep(SETTLE);
    let after = rss();
    let cpu = cpu_time();
    thread::sleep(Duration::from_secs(1));
    let idle_cpu = cpu_time() - cpu;
    drop(senders);
    for thread in threads {
        thread.join().unwrap();
    }
    vec![
        ("per_unit", per(after.saturating_sub(before), AGENTS)),
        ("rss_before", before.to_string()),
        ("rss_after", after.to_string()),
        ("idle_cpu_ms_per_s", ms(idle_cpu)),
    ]
}

/// 1,000,000 no-op tasks queued behind one agent held busy on a gate task.
fn tasks_agentry() -> Findings {
    let (gate_tx, gate) = bounded::<()>(1);
    let (held_tx, held) = bounded::<()>(1);
    let orchestrator = Orchestrator::builder()
        .agents(Role::Extractor, 1, move || {
            let (gate, held_tx) = (gate.clone(), held_tx.clone());
            move |task: &Task, _: &AgentContext| -> Result<Output, TaskError> {
                if task.kind() == "gate" {
                    let _ = held_tx.send(());
                    let _ = gate.recv();
                }
                Ok(Output::empty())
            }
        })
        .min_agents(1)
        .max_agents(1)
        .shutdown_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    wait_for_spawns(&orchestrator, 1);
    orchestrator.submit(Task::new("gate")).unwrap();
    held.recv_timeout(WAIT).unwrap();

    let before = rss();
    let started = Instant::now();
    for _ in 0..TASKS / CHUNK {
        orchestrator
            .submit_batch((0..CHUNK).map(|_| Task::new(KIND)))
            .unwrap();
    }
    let submitted = started.elapsed();
    let after = rss();
    let queued = orchestrator.status().queued();

    gate_tx.send(()).unwrap();
    let started = Instant::now();
    orchestrator.shutdown().unwrap();
    vec![
        ("per_unit", per(after.saturating_sub(before), TASKS)),
        ("rss_before", before.to_string()),
        ("rss_after", after.to_string()),
        ("queued", queued.to_string()),
        ("submit_ms", ms(submitted)),
        ("shutdown_ms", ms(started.elapsed())),
    ]
}

/// The same 1,000,000 tasks, as the user built them, in a bare crossbeam
/// channel.
fn tasks_bare() -> Findings {
    let (sender, receiver) = unbounded::<Task>();
    let before = rss();
    for _ in 0..TASKS {
        sender.send(Task::new(KIND)).unwrap();
    }
    let after = rss();
    assert_eq!(receiver.len(), TASKS);
    vec![
        ("per_unit", per(after.saturating_sub(before), TASKS)),
        ("rss_before", before.to_string()),
        ("rss_after", after.to_string()),
    ]
}

/// CPU time this process has used (user and system, all threads).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The command name may hold spaces: count fields from the `)` closing it.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split(' ')
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // Linux reports them in USER_HZ, 100 per second on every architecture.
    Duration::from_millis(ticks * 10)
}

fn per(bytes: u64, units: usize) -> String {
    format!("{:.1}", bytes as f64 / units as f64)
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

/// Runs one probe in a child process and returns its findings.
fn child(probe: &str) -> HashMap<String, String> {
    let output = Command::new(env::current_exe().expect("own path"))
        .env(PROBE_VAR, probe)
        .output()
        .expect("run probe");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "probe {probe} failed ({}): {stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn main() {
    if let Ok(probe) = env::var(PROBE_VAR) {
        let findings = match probe.as_str() {
            "agents-agentry" => agents_agentry(),
            "agents-bare" => agents_bare(),
            "tasks-agentry" => tasks_agentry(),
            "tasks-bare" => tasks_bare(),
            other => panic!("unknown probe {other}"),
        };
        for (key, value) in findings {
            println!("{key}={value}");
        }
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // to select, and a run there only needs to start.
    if !env::args().any(|a| a == "--bench") {
        println!("footprint: run with `cargo bench --bench footprint`");
        return;
    }

    let agents = child("agents-agentry");
    let agents_bare = child("agents-bare");
    let tasks = child("tasks-agentry");
    let tasks_bare = child("tasks-bare");
    let num = |m: &HashMap<String, String>| -> f64 { m["per_unit"].parse().unwrap() };
    report::write(
        "footprint",
        &[
            ("idle_agent_bytes", num(&agents)),
            ("bare_thread_bytes", num(&agents_bare)),
            ("queued_task_bytes", num(&tasks)),
            ("bare_queued_task_bytes", num(&tasks_bare)),
            ("task_payload_bytes", KIND.len() as f64),
        ],
    );

    println!();
    println!(
        "{:<44} {:>22} {:>14} {:>14} {:>7}",
        "figure", "target", "agentry", "baseline", "ratio"
    );
    println!("{}", "-".repeat(105));
    println!(
        "{:<44} {:>22} {:>12.0} B {:>12.0} B {:>6.2}x",
        "resident memory per idle agent",
        "<= 32 KiB (32768 B)",
        num(&agents),
        num(&agents_bare),
        num(&agents) / num(&agents_bare)
    );
    println!(
        "{:<44} {:>22} {:>12.1} B {:>12.1} B {:>6.2}x",
        "resident memory per queued task",
        "",
        num(&tasks),
        num(&tasks_bare),
        num(&tasks) / num(&tasks_bare)
    );
    let payload = KIND.len() as f64;
    println!(
        "{:<44} {:>22} {:>12.1} B {:>14}",
        "  overhead over the user's payload",
        "< 256 B",
        num(&tasks) - payload,
        "",
    );
    println!(
        "{:<44} {:>22} {:>12.1} B {:>14}",
        "  overhead over the bare queued Task",
        "",
        num(&tasks) - num(&tasks_bare),
        "",
    );
    println!();
    println!(
        "user's payload per task: the kind {KIND:?}, {} bytes (a Task value is {} bytes inline)",
        KIND.len(),
        std::mem::size_of::<Task>()
    );
    println!(
        "baselines: {AGENTS} std threads parked on a crossbeam bounded::<usize>({MAILBOX}) each; \
         {TASKS} Task::new({KIND:?}) in a crossbeam unbounded channel"
    );
    println!(
        "agentry, {AGENTS} agents: spawned in {} ms, {} live in status(), shut down in {} ms",
        agents["spawn_ms"], agents["live_agents"], agents["shutdown_ms"]
    );
    println!(
        "CPU used while idle, per second: {AGENTS} agents {} ms, {AGENTS} bare threads {} ms",
        agents["idle_cpu_ms_per_s"], agents_bare["idle_cpu_ms_per_s"]
    );
    println!(
        "agentry, {TASKS} tasks: submitted in {} ms ({} queued in status()), \
         shut down (cancelling them) in {} ms",
        tasks["submit_ms"], tasks["queued"], tasks["shutdown_ms"]
    );
    println!(
        "raw RSS (bytes): agents {} -> {}, bare threads {} -> {}, tasks {} -> {}, bare tasks {} -> {}",
        agents["rss_before"],
        agents["rss_after"],
        agents_bare["rss_before"],
        agents_bare["rss_after"],
        tasks["rss_before"],
        tasks["rss_after"],
        tasks_bare["rss_before"],
        tasks_bare["rss_after"],
    );
}
