//! An orchestrator over a state directory: configuration checks, followers
//! refusing work, results restored after a clean restart, a clean handover,
//! and takeover after kill -9 of the leader process with every accepted task
//! finished at least once. Multi-process tests re-execute this binary as
//! orchestrator instances.

use std::collections::BTreeSet;
use std::env;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use agentry::{
    AgentContext, Durability, ElectionConfig, Error, Orchestrator, Output, Role, SharedMemory,
    Task, TaskError, TaskId, TaskStatus,
};

/// Set in a child: the state directory it runs over.
const CHILD: &str = "AGENTRY_CLUSTER_CHILD";
/// Set in a child: how many tasks the cluster accepts in all.
const CHILD_TASKS: &str = "AGENTRY_CLUSTER_TASKS";
/// Starts every line a child reports.
const MARK: &str = "@cluster ";
/// A child stops by itself after this long, should its parent be gone.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);
/// Generous bound for anything that should take well under a second.
const PATIENCE: Duration = Duration::from_secs(30);
/// Tasks the cluster test submits, in batches.
const TASKS: u64 = if cfg!(miri) { 50 } else { 1_000 };
const BATCH: u64 = 50;

/// A fast election, with a lease long enough that a leader busy on a loaded
/// two-core machine is not deposed by its own slowness.
fn election(name: &str) -> ElectionConfig {
    ElectionConfig::new(name)
        .heartbeat_interval(Duration::from_millis(50))
        .lease_timeout(Duration::from_millis(500))
        .retry_interval(Duration::from_millis(10))
}

/// Counts its runs in the shared memory, keyed by task id.
fn counting(task: &Task, ctx: &AgentContext) -> Result<Output, TaskError> {
    ctx.memory()
        .increment(&format!("ran/{}", task.id().get()), 1)?;
    thread::sleep(Duration::from_millis(2));
    Ok(Output::encode(&task.id().get())?)
}

fn instance(dir: &Path, name: &str) -> Orchestrator {
    Orchestrator::builder()
        .agents(Role::Researcher, 4, || counting)
        .state_dir(dir)
        .election(election(name))
        .build()
        .unwrap()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

fn tasks(n: u64) -> Vec<Task> {
    (0..n)
        .map(|_| Task::new("count").with_role(Role::Researcher))
        .collect()
}

// ---------------------------------------------------------------- in process

#[test]
fn memory_with_a_state_dir_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let built = Orchestrator::builder()
        .agents(Role::Researcher, 1, || counting)
        .memory(SharedMemory::in_memory())
        .state_dir(dir.path())
        .build();
    assert!(matches!(built, Err(Error::InvalidConfig(_))), "{built:?}");
}

#[test]
fn an_election_without_a_state_dir_is_invalid() {
    let built = Orchestrator::builder()
        .agents(Role::Researcher, 1, || counting)
        .election(election("a"))
        .build();
    assert!(matches!(built, Err(Error::InvalidConfig(_))), "{built:?}");
}

#[test]
fn a_follower_refuses_submits_with_not_leader() {
    let dir = tempfile::tempdir().unwrap();
    let leader = instance(dir.path(), "leader");
    wait_for("the first instance to lead", || leader.is_leader());
    let follower = instance(dir.path(), "follower");
    assert!(!follower.is_leader());
    // The follower names the leader once its election has read the
    // leader's heartbeat record (every retry interval).
    wait_for("the follower to name the leader", || {
        match follower.submit(Task::new("count").with_role(Role::Researcher)) {
            Err(Error::NotLeader {
                epoch: None,
                leader,
                ..
            }) => leader.is_some_and(|l| l.instance_id == "leader"),
            other => panic!("a follower's submit gave {other:?}"),
        }
    });
    assert!(matches!(
        follower.submit_batch(tasks(3)),
        Err(Error::NotLeader { .. })
    ));
    let id = leader
        .submit(Task::new("count").with_role(Role::Researcher))
        .unwrap();
    assert!(leader.wait(id, PATIENCE).unwrap().is_success());
    follower.shutdown().unwrap();
    leader.shutdown().unwrap();
}

#[test]
fn a_long_running_leader_keeps_its_task_journal_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let leader = Orchestrator::builder()
        .agents(Role::Researcher, 2, || {
            |_: &Task, _: &AgentContext| Ok(Output::empty())
        })
        .state_dir(dir.path())
        .election(election("long-running"))
        .build()
        .unwrap();
    wait_for("the instance to lead", || leader.is_leader());
    // 60,000 tasks write 180,000 records (accepted, result, deletion): past
    // the compaction threshold, unlike a journal that only grows.
    let mut last = None;
    for _ in 0..12 {
        let ids = leader.submit_batch(tasks(5_000)).unwrap();
        last = ids.last().copied();
    }
    assert!(leader.wait(last.unwrap(), PATIENCE).unwrap().is_success());
    let journal_bytes = || -> u64 {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|entry| entry.ok())
            .filter(|entry| {
                entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with("tasks.snapshot.journal.")
            })
            .map(|entry| entry.metadata().map_or(0, |m| m.len()))
            .sum()
    };
    wait_for("the task journal to be compacted", || {
        journal_bytes() < 2 * 1024 * 1024
    });
    leader.shutdown().unwrap();
}

#[test]
fn results_of_finished_tasks_survive_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = instance(dir.path(), "first");
    wait_for("the instance to lead", || first.is_leader());
    let ids = first.submit_batch(tasks(20)).unwrap();
    for &id in &ids {
        assert!(first.wait(id, PATIENCE).unwrap().is_success());
    }
    first.shutdown().unwrap();

    let again = instance(dir.path(), "again");
    wait_for("the reopened instance to lead", || again.is_leader());
    for &id in &ids {
        let result = again.result(id).expect("a finished result is restored");
        assert_eq!(result.status(), TaskStatus::Succeeded);
        assert_eq!(result.output::<u64>().unwrap(), id.get());
        let ran = again.memory().get::<i64>(&format!("ran/{}", id.get()));
        assert_eq!(ran.unwrap().map(|v| v.value), Some(1), "{id}");
    }
    let next = again
        .submit(Task::new("count").with_role(Role::Researcher))
        .unwrap();
    assert!(
        ids.iter().all(|&id| id < next),
        "new ids start above every id seen"
    );
    again.shutdown().unwrap();
}

#[test]
fn results_beyond_the_retention_are_forgotten_on_disk_at_takeover() {
    let dir = tempfile::tempdir().unwrap();
    let with_retention = |name: &str, results: usize| {
        Orchestrator::builder()
            .agents(Role::Researcher, 2, || counting)
            .state_dir(dir.path())
            .election(election(name))
            .result_retention(results)
            .build()
            .unwrap()
    };
    let first = with_retention("first", 100);
    wait_for("the instance to lead", || first.is_leader());
    let ids = first.submit_batch(tasks(30)).unwrap();
    for &id in &ids {
        assert!(first.wait(id, PATIENCE).unwrap().is_success());
    }
    first.shutdown().unwrap();

    let again = with_retention("again", 10);
    wait_for("the reopened instance to lead", || again.is_leader());
    let (oldest, newest) = ids.split_at(20);
    assert!(oldest.iter().all(|&id| again.result(id).is_none()));
    assert!(newest.iter().all(|&id| again.result(id).is_some()));
    again.shutdown().unwrap();

    let tasks =
        SharedMemory::open_with(dir.path().join("tasks.snapshot"), Durability::OnPersist).unwrap();
    let on_disk: Vec<u64> = tasks
        .keys()
        .iter()
        .filter_map(|k| k.strip_prefix("r/"))
        .map(|id| id.parse().unwrap())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let kept: Vec<u64> = newest.iter().map(|id| id.get()).collect();
    assert_eq!(on_disk, kept, "only the retained results stay on disk");
}

#[test]
fn a_clean_shutdown_hands_unstarted_tasks_to_the_next_leader() {
    let dir = tempfile::tempdir().unwrap();
    let slow = |task: &Task, ctx: &AgentContext| -> Result<Output, TaskError> {
        ctx.memory()
            .increment(&format!("ran/{}", task.id().get()), 1)?;
        thread::sleep(Duration::from_millis(20));
        Ok(Output::empty())
    };
    let first = Orchestrator::builder()
        .agents(Role::Researcher, 1, move || slow)
        .state_dir(dir.path())
        .election(election("first"))
        .build()
        .unwrap();
    wait_for("the first instance to lead", || first.is_leader());
    let second = instance(dir.path(), "second");
    let ids = first.submit_batch(tasks(30)).unwrap();
    first.shutdown().unwrap();
    wait_for("the second instance to lead", || second.is_leader());
    let mut handed_over = 0;
    for &id in &ids {
        let result = second.wait(id, PATIENCE).unwrap();
        assert!(result.is_success(), "{id}: {result:?}");
        let ran = second.memory().get::<i64>(&format!("ran/{}", id.get()));
        assert_eq!(ran.unwrap().map(|v| v.value), Some(1), "{id} ran once");
        // A re-queued task's run counts the takeover as an attempt.
        handed_over += usize::from(result.attempts() == 2);
    }
    assert!(handed_over > 0, "some unstarted tasks were handed over");
    second.shutdown().unwrap();
}

// ---------------------------------------------------------------- processes

/// Runs only as a child: one orchestrator instance of the cluster. While it
/// leads it submits the remaining tasks (up to its own total) in batches,
/// reporting each accepted batch; once all are submitted and none is left
/// unfinished, it reports `done` and shuts down. It reports each time it
/// becomes leader, and each time it stops being leader.
#[test]
fn child_instance() {
    let Some(dir) = env::var_os(CHILD) else {
        return;
    };
    let total = env::var(CHILD_TASKS).map_or(TASKS, |n| n.parse().unwrap());
    let pid = std::process::id();
    let orchestrator = instance(Path::new(&dir), &format!("pid-{pid}"));
    let started = Instant::now();
    let mut reported_leading = false;
    while started.elapsed() < CHILD_LIFETIME {
        if !orchestrator.is_leader() {
            if reported_leading {
                println!("{MARK}demoted {pid}");
                reported_leading = false;
            }
            thread::sleep(Duration::from_millis(5));
            continue;
        }
        if !reported_leading {
            println!("{MARK}leader {pid}");
            reported_leading = true;
        }
        let memory = orchestrator.memory();
        let submitted = memory
            .get::<u64>("submitted")
            .ok()
            .flatten()
            .map_or(0, |v| v.value);
        if submitted < total {
            if let Ok(ids) = orchestrator.submit_batch(tasks(BATCH)) {
                let (first, last) = (ids[0].get(), ids[ids.len() - 1].get());
                println!("{MARK}accepted {first} {last}");
                let _ = memory.put("submitted", &(submitted + BATCH));
            }
            thread::sleep(Duration::from_millis(10));
            continue;
        }
        let totals = orchestrator.status().totals;
        if totals.submitted == totals.finished() + totals.handed_over {
            println!("{MARK}done {pid}");
            orchestrator.shutdown().unwrap();
            return;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

fn spawn_child(dir: &Path, lines: mpsc::Sender<String>) -> Child {
    spawn_child_submitting(dir, TASKS, lines)
}

/// A child that, while it leads, submits until `total` tasks are accepted.
fn spawn_child_submitting(dir: &Path, total: u64, lines: mpsc::Sender<String>) -> Child {
    let mut child = Command::new(env::current_exe().unwrap())
        .args([
            "--exact",
            "child_instance",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, dir)
        .env(CHILD_TASKS, total.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Some(at) = line.find(MARK) {
                if lines.send(line[at + MARK.len()..].to_owned()).is_err() {
                    return;
                }
            }
        }
    });
    child
}

#[test]
fn killing_the_leader_midway_loses_no_accepted_task() {
    if cfg!(miri) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a_tx, a_lines) = mpsc::channel();
    let mut a = spawn_child(dir.path(), a_tx);
    assert!(
        next(&a_lines).starts_with("leader"),
        "the first child leads"
    );
    let (b_tx, b_lines) = mpsc::channel();
    let mut b = spawn_child(dir.path(), b_tx);

    // Let the leader accept about half of the tasks, then kill -9 it.
    let mut accepted = BTreeSet::new();
    while (accepted.len() as u64) < TASKS / 2 {
        let line = next(&a_lines);
        assert!(line.starts_with("accepted"), "{line}");
        record(&mut accepted, &line);
    }
    a.kill().unwrap();
    a.wait().unwrap();
    // Reports written before the kill still count.
    for line in a_lines.try_iter() {
        if line.starts_with("accepted") {
            record(&mut accepted, &line);
        }
    }
    let crashes = 1;

    // The standby takes over and finishes everything.
    assert!(next(&b_lines).starts_with("leader"));
    record_until(&b_lines, "done", &mut accepted);
    assert!(
        b.wait().unwrap().success(),
        "the new leader shut down cleanly"
    );
    assert!(
        accepted.len() as u64 >= TASKS,
        "{} accepted",
        accepted.len()
    );

    assert_every_accepted_task_finished(dir.path(), &accepted, crashes);
}

/// The next line a child reports.
fn next(lines: &mpsc::Receiver<String>) -> String {
    lines
        .recv_timeout(PATIENCE)
        .expect("a child report in time")
}

/// Reads a child's reports up to the first that starts with `until`,
/// adding the ids of the `accepted` ones on the way.
fn record_until(lines: &mpsc::Receiver<String>, until: &str, accepted: &mut BTreeSet<u64>) {
    loop {
        let line = next(lines);
        if line.starts_with(until) {
            return;
        }
        assert!(line.starts_with("accepted"), "{line}");
        record(accepted, &line);
    }
}

/// Adds the ids of an `accepted <first> <last>` report.
fn record(accepted: &mut BTreeSet<u64>, line: &str) {
    let mut words = line.split(' ').skip(1).map(|w| w.parse::<u64>().unwrap());
    if let (Some(first), Some(last)) = (words.next(), words.next()) {
        accepted.extend(first..=last);
    }
}

fn signal(name: &str, child: &Child) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name}");
}

#[test]
fn a_frozen_leader_steps_down_then_leads_and_records_again() {
    if cfg!(miri) {
        return;
    }
    const FIRST_TERM: u64 = 150;
    const SECOND_LEADER: u64 = 400;
    const THIRD_TERM: u64 = 600;
    let dir = tempfile::tempdir().unwrap();
    let (a_tx, a_lines) = mpsc::channel();
    let mut a = spawn_child_submitting(dir.path(), THIRD_TERM, a_tx);
    assert!(
        next(&a_lines).starts_with("leader"),
        "the first child leads"
    );
    let (b_tx, b_lines) = mpsc::channel();
    let mut b = spawn_child_submitting(dir.path(), SECOND_LEADER, b_tx);

    let mut accepted = BTreeSet::new();
    while (accepted.len() as u64) < FIRST_TERM {
        let line = next(&a_lines);
        assert!(line.starts_with("accepted"), "{line}");
        record(&mut accepted, &line);
    }
    // Frozen: it keeps its lock, and its heartbeat goes stale.
    signal("STOP", &a);
    assert!(
        next(&b_lines).starts_with("leader"),
        "the standby takes over"
    );
    // Running again while the other leads: it finds itself deposed.
    signal("CONT", &a);
    // Accepted just before the freeze, reported after it.
    record_until(&a_lines, "demoted", &mut accepted);
    record_until(&b_lines, "done", &mut accepted);
    assert!(b.wait().unwrap().success(), "the second leader shut down");

    // The standby is gone: the deposed instance leads again, under a third
    // epoch, and its results are recorded like any leader's.
    assert!(next(&a_lines).starts_with("leader"), "leads again");
    record_until(&a_lines, "done", &mut accepted);
    assert!(
        a.wait().unwrap().success(),
        "the re-elected leader shut down"
    );
    assert!(
        accepted.len() as u64 >= THIRD_TERM,
        "{} accepted",
        accepted.len()
    );
    // The freeze ends like a crash for the tasks running at that moment.
    assert_every_accepted_task_finished(dir.path(), &accepted, 1);
}

/// Every accepted task has a recorded result and no task is left
/// unfinished; each ran at least once and at most once more per crash.
fn assert_every_accepted_task_finished(dir: &Path, accepted: &BTreeSet<u64>, crashes: i64) {
    let tasks = SharedMemory::open_with(dir.join("tasks.snapshot"), Durability::OnPersist).unwrap();
    let keys = tasks.keys();
    let unfinished: Vec<_> = keys.iter().filter(|k| k.starts_with("t/")).collect();
    assert!(
        unfinished.is_empty(),
        "{} unfinished, first {:?}",
        unfinished.len(),
        &unfinished[..unfinished.len().min(5)]
    );
    let finished: BTreeSet<u64> = keys
        .iter()
        .filter_map(|k| k.strip_prefix("r/"))
        .map(|id| id.parse().unwrap())
        .collect();
    let memory =
        SharedMemory::open_with(dir.join("memory.snapshot"), Durability::OnPersist).unwrap();
    for &id in accepted {
        assert!(finished.contains(&id), "{} has no result", TaskId::from(id));
        let ran = memory
            .get::<i64>(&format!("ran/{id}"))
            .unwrap()
            .map_or(0, |v| v.value);
        assert!(
            (1..=1 + crashes).contains(&ran),
            "task {id} ran {ran} times"
        );
    }
}
