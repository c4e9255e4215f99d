//! Leader takeover after kill -9, beside its bare baseline.
//!
//! A leader and a follower run as child processes (this bench binary run
//! again). The parent notes the wall-clock time, sends SIGKILL to the
//! leader, and the follower prints the wall-clock time at which it saw
//! `ElectionEvent::Elected`: the lock taken, the new epoch fsynced, the
//! heartbeat record written. The baseline is the same with bare `fslock`:
//! one child holds the lock, the other blocks in `lock()` and prints the
//! time it got it, which is the floor any flock-based election can reach.
//! Processes do not share `Instant`, so both sides use `SystemTime` (the same
//! kernel clock on one host).
//!
//! A second agentry report times the first step alone, the moment the
//! follower's locker thread holds `leader.lock` (seen through the
//! `leader_lock_acquired` tracing event it emits): the "lock held" target.
//!
//! A further report does the same with whole orchestrators over one state
//! directory: the leader has accepted 1,000 tasks its agents have not
//! finished; the follower prints the time at which `is_leader()` turned
//! true, that is once it has reloaded the shared memory and the task store
//! and re-queued every unfinished task: the new orchestrator serving.
//!
//! A report (p50, p99, max over the rounds) rather than criterion: every
//! sample costs two process spawns and a kill.
//!
//! Run with `cargo bench --bench election`. The figures also go to
//! `target/agentry-bench/election.json` for the targets report.

use std::env;
use std::io::{BufRead, BufReader, Lines};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agentry::{
    AgentContext, AutoscalePolicy, ElectionConfig, ElectionEvent, LeaderElection, Orchestrator,
    Output, Role, Task, TaskError,
};

#[path = "common/report.rs"]
mod report;

/// Set in a child: `role` and directory, separated by a newline.
const CHILD: &str = "AGENTRY_ELECTION_BENCH_CHILD";
const ROUNDS: usize = 20;

fn main() {
    if let Ok(spec) = env::var(CHILD) {
        let (role, dir) = spec.split_once('\n').expect("role and directory");
        child(role, Path::new(dir));
        return;
    }
    // Criterion-style filters and `--bench` are passed by cargo; nothing to
    // select here.
    let base = env::var_os("CARGO_TARGET_TMPDIR").map_or_else(env::temp_dir, Into::into);
    let (bare_p50, bare_p99) = rounds("bare fslock handover", &base, "bare-holder", "bare-waiter");
    let (locked_p50, locked_p99) = rounds(
        "agentry takeover (lock held)",
        &base,
        "leader",
        "lock-follower",
    );
    let (elected_p50, elected_p99) =
        rounds("agentry takeover (Elected)", &base, "leader", "follower");
    let (serving_p50, serving_p99) = rounds(
        "agentry orchestrator serving after takeover (1,000 tasks re-queued)",
        &base,
        "orchestrator-leader",
        "orchestrator-follower",
    );
    let ns = |d: Duration| d.as_nanos() as f64;
    report::write(
        "election",
        &[
            ("bare_fslock_p50_ns", ns(bare_p50)),
            ("bare_fslock_p99_ns", ns(bare_p99)),
            ("lock_held_p50_ns", ns(locked_p50)),
            ("lock_held_p99_ns", ns(locked_p99)),
            ("elected_p50_ns", ns(elected_p50)),
            ("elected_p99_ns", ns(elected_p99)),
            ("serving_p50_ns", ns(serving_p50)),
            ("serving_p99_ns", ns(serving_p99)),
        ],
    );
}

/// Runs `ROUNDS` takeovers, prints their spread and returns p50 and p99.
fn rounds(name: &str, base: &Path, holder: &str, waiter: &str) -> (Duration, Duration) {
    let mut samples: Vec<Duration> = (0..ROUNDS).map(|_| round(base, holder, waiter)).collect();
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "election/{name}: kill -9 to new holder over {ROUNDS} rounds: p50 {:?}, p99 {:?}, max {:?}",
        at(0.5),
        at(0.99),
        samples[samples.len() - 1]
    );
    (at(0.5), at(0.99))
}

fn round(base: &Path, holder: &str, waiter: &str) -> Duration {
    let dir = tempfile::tempdir_in(base).expect("temp dir");
    let (mut leader, mut leader_lines) = spawn(holder, dir.path());
    expect_line(&mut leader_lines, "ready");
    let (mut follower, mut follower_lines) = spawn(waiter, dir.path());
    expect_line(&mut follower_lines, "ready");
    // Let the follower settle in its blocking wait on the lock.
    thread::sleep(Duration::from_millis(50));
    let killed = SystemTime::now();
    leader.kill().expect("kill the leader");
    let line = expect_line(&mut follower_lines, "took");
    let nanos: u64 = line
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a time");
    let took = UNIX_EPOCH + Duration::from_nanos(nanos);
    let _ = follower.kill();
    let _ = leader.wait();
    let _ = follower.wait();
    took.duration_since(killed).unwrap_or_default()
}

fn spawn(role: &str, dir: &Path) -> (Child, Lines<BufReader<ChildStdout>>) {
    let mut child = Command::new(env::current_exe().expect("own path"))
        .env(CHILD, format!("{role}\n{}", dir.display()))
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn a child");
    let lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    (child, lines)
}

fn expect_line(lines: &mut Lines<BufReader<ChildStdout>>, prefix: &str) -> String {
    for line in lines {
        let line = line.expect("child output");
        if line.starts_with(prefix) {
            return line;
        }
    }
    panic!("a child ended before saying {prefix:?}");
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn config() -> ElectionConfig {
    ElectionConfig::new(format!("bench-{}", std::process::id()))
        .heartbeat_interval(Duration::from_millis(100))
        .lease_timeout(Duration::from_secs(1))
        .retry_interval(Duration::from_millis(10))
}

/// A child's life; it ends when its parent kills it (or after a minute).
fn child(role: &str, dir: &Path) {
    let lifetime = Duration::from_secs(60);
    match role {
        "bare-holder" | "bare-waiter" => {
            let mut lock = fslock::LockFile::open(&dir.join("bare.lock")).expect("lock file");
            if role == "bare-holder" {
                lock.lock().expect("lock");
                println!("ready");
            } else {
                println!("ready");
                lock.lock().expect("lock");
                println!("took {}", now_nanos());
            }
            thread::sleep(lifetime);
        }
        "leader" | "follower" | "lock-follower" => {
            if role == "lock-follower" {
                tracing::subscriber::set_global_default(LockProbe).expect("one subscriber");
            }
            let handle = LeaderElection::new(dir, config())
                .and_then(LeaderElection::start)
                .expect("start the election");
            if role == "leader" {
                assert!(handle.wait_until_leader(lifetime));
                println!("ready");
                thread::sleep(lifetime);
            } else if role == "lock-follower" {
                println!("ready");
                thread::sleep(lifetime);
            } else {
                println!("ready");
                for event in handle.events().iter() {
                    if let ElectionEvent::Elected { .. } = event {
                        println!("took {}", now_nanos());
                        break;
                    }
                }
                thread::sleep(lifetime);
            }
        }
        "orchestrator-leader" | "orchestrator-follower" => {
            let orchestrator = Orchestrator::builder()
                .agents(Role::Extractor, 2, move || {
                    move |_: &Task, _: &AgentContext| -> Result<Output, TaskError> {
                        thread::sleep(lifetime);
                        Ok(Output::empty())
                    }
                })
                .autoscale(AutoscalePolicy::disabled())
                .state_dir(dir)
                .election(config())
                .build()
                .expect("build the orchestrator");
            if role == "orchestrator-leader" {
                while !orchestrator.is_leader() {
                    thread::sleep(Duration::from_millis(1));
                }
                orchestrator
                    .submit_batch((0..1_000).map(|_| Task::new("long")))
                    .expect("the leader accepts");
                println!("ready");
            } else {
                println!("ready");
                while !orchestrator.is_leader() {
                    std::hint::spin_loop();
                }
                println!("took {}", now_nanos());
            }
            thread::sleep(lifetime);
            std::process::exit(0);
        }
        other => panic!("unknown role {other}"),
    }
}

/// Prints the time at which the election's locker thread reports holding
/// `leader.lock`, and ignores everything else.
struct LockProbe;

impl tracing::Subscriber for LockProbe {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.target().starts_with("agentry::election")
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        if event.fields().any(|f| f.name() == "leader_lock_acquired") {
            println!("took {}", now_nanos());
        }
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}
