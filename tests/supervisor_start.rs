//! The supervisor thread starts the first time it has something to do: an
//! orchestrator that is never given work runs its agents' threads only and
//! still shuts down cleanly; the first task, or the first message an agent
//! handles, starts the supervisor, which then watches for hangs.
//!
//! The tests read this process's thread names, so they take turns.
#![cfg(target_os = "linux")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use agentry::{
    AgentContext, Event, HealthConfig, Message, Orchestrator, Output, Role, Task, TaskError,
};
use parking_lot::Mutex;

const PATIENCE: Duration = Duration::from_secs(30);
/// Linux keeps the first 15 bytes of a thread's name.
const SUPERVISOR: &str = "agentry-supervi";
const AGENT: &str = "agentry-extract";

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .collect()
}

fn count(prefix: &str) -> usize {
    thread_names()
        .iter()
        .filter(|n| n.starts_with(prefix))
        .count()
}

/// Waits until `n` threads named `prefix` run (a joined thread can linger
/// in /proc a moment after `join` returns).
fn await_threads(prefix: &str, n: usize) {
    let deadline = Instant::now() + PATIENCE;
    while count(prefix) != n {
        assert!(
            Instant::now() < deadline,
            "expected {n} threads named {prefix}*, found {:?}",
            thread_names()
        );
        thread::sleep(Duration::from_millis(1));
    }
}

fn await_spawned(orchestrator: &Orchestrator, n: usize) {
    let mut spawned = 0;
    while spawned < n {
        match orchestrator.events().recv_timeout(PATIENCE) {
            Ok(Event::AgentSpawned { .. }) => spawned += 1,
            Ok(_) => {}
            Err(e) => panic!("{spawned} of {n} agents reported running: {e}"),
        }
    }
}

struct Listener {
    heard: crossbeam_channel::Sender<()>,
}

impl agentry::Agent for Listener {
    fn execute(&mut self, _: &Task, _: &AgentContext) -> Result<Output, TaskError> {
        Ok(Output::empty())
    }

    fn on_message(&mut self, _: Message, _: &AgentContext) {
        let _ = self.heard.send(());
    }
}

/// An orchestrator of `agents` listeners, all running; the receiver hears
/// each message one of them handles.
fn listeners(agents: usize) -> (Orchestrator, crossbeam_channel::Receiver<()>) {
    let (heard_tx, heard) = crossbeam_channel::unbounded();
    let orchestrator = Orchestrator::builder()
        .agents(Role::Extractor, agents, move || Listener {
            heard: heard_tx.clone(),
        })
        .min_agents(agents)
        .build()
        .unwrap();
    await_spawned(&orchestrator, agents);
    (orchestrator, heard)
}

#[test]
fn an_orchestrator_never_given_work_runs_only_its_agents_and_shuts_down() {
    let _turn = ONE_AT_A_TIME.lock();
    let (orchestrator, _) = listeners(4);
    assert_eq!(count(AGENT), 4, "{:?}", thread_names());
    assert_eq!(count(SUPERVISOR), 0, "{:?}", thread_names());

    orchestrator.shutdown().unwrap();
    await_threads(AGENT, 0);
    assert_eq!(count(SUPERVISOR), 0, "{:?}", thread_names());
}

#[test]
fn the_first_message_an_agent_handles_starts_the_supervisor() {
    let _turn = ONE_AT_A_TIME.lock();
    let (orchestrator, heard) = listeners(2);
    assert_eq!(count(SUPERVISOR), 0, "{:?}", thread_names());
    // A handler that never returned would strand the tasks handed to its
    // agent: from the first message on, the health check watches.
    let agent = orchestrator.status().agents[0].id;
    orchestrator
        .broker()
        .send(agentry::ORCHESTRATOR_ID, agent, "hello")
        .unwrap();
    heard.recv_timeout(PATIENCE).unwrap();
    await_threads(SUPERVISOR, 1);

    orchestrator.shutdown().unwrap();
    await_threads(AGENT, 0);
    await_threads(SUPERVISOR, 0);
}

#[test]
fn the_first_task_starts_the_supervisor_which_then_detects_a_hang() {
    let _turn = ONE_AT_A_TIME.lock();
    let release = Arc::new(AtomicBool::new(false));
    let agent_release = Arc::clone(&release);
    let orchestrator = Orchestrator::builder()
        .agents(Role::Extractor, 1, move || {
            let release = Arc::clone(&agent_release);
            move |_: &Task, _: &AgentContext| {
                while !release.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(1));
                }
                Ok(Output::empty())
            }
        })
        .health(
            HealthConfig::default()
                .check_interval(Duration::from_millis(10))
                .hang_timeout(Duration::from_millis(100)),
        )
        .build()
        .unwrap();
    await_spawned(&orchestrator, 1);
    assert_eq!(count(SUPERVISOR), 0, "{:?}", thread_names());

    let task = orchestrator
        .submit(Task::new("hangs").with_role(Role::Extractor))
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        match orchestrator.events().recv_deadline(deadline) {
            Ok(Event::AgentHung { task: hung, .. }) => {
                assert_eq!(hung, Some(task));
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("no AgentHung event: {e}"),
        }
    }
    // A replacement agent is being spawned by the supervisor: until it names
    // itself, it carries its parent's name.
    await_threads(SUPERVISOR, 1);

    release.store(true, Ordering::Relaxed);
    orchestrator.shutdown().unwrap();
    await_threads(SUPERVISOR, 0);
    await_threads(AGENT, 0);
}
