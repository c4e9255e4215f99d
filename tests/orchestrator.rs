//! The task flow end to end: priorities, routing, retries, panics,
//! timeouts, cancellation, dependencies, many tasks, shutdown and status.
//! The part of it a cluster node on Redis supports (retries, panics,
//! timeouts, subtasks, spreading, retention) runs on both backends.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use agentry::{
    AgentContext, AgentSpec, AgentState, AutoscalePolicy, Error, Event, Message, Orchestrator,
    OrchestratorBuilder, Output, Priority, Role, Task, TaskError, TaskStatus,
};

#[cfg(feature = "redis")]
mod common;
use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use parking_lot::Mutex;

const PATIENCE: Duration = Duration::from_secs(30);

type Outcome = Result<Output, TaskError>;

fn ok(_: &Task, _: &AgentContext) -> Outcome {
    Ok(Output::empty())
}

/// An agent that records the order tasks start in, and blocks on each task
/// of kind "gate" until the test releases it.
struct Recorder {
    started: Arc<Mutex<Vec<String>>>,
    gate: Receiver<()>,
    entered: Sender<()>,
}

impl agentry::Agent for Recorder {
    fn execute(&mut self, task: &Task, _: &AgentContext) -> Outcome {
        if task.kind() == "gate" {
            self.entered.send(()).unwrap();
            self.gate.recv_timeout(PATIENCE).unwrap();
        } else {
            self.started.lock().push(task.kind().to_owned());
        }
        Ok(Output::empty())
    }
}

/// One recording agent (held busy on a gate task while the test queues
/// more, once given one).
struct HeldAgent {
    orchestrator: Orchestrator,
    started: Arc<Mutex<Vec<String>>>,
    release: Sender<()>,
}

/// One idle recording agent, and the receiver told when it enters a gate.
fn recording_agent() -> (HeldAgent, Receiver<()>) {
    let started = Arc::new(Mutex::new(Vec::new()));
    let (release, gate) = bounded(1);
    let (entered_tx, entered) = bounded(1);
    let agent_started = started.clone();
    let orchestrator = Orchestrator::builder()
        .agents(Role::Researcher, 1, move || Recorder {
            started: agent_started.clone(),
            gate: gate.clone(),
            entered: entered_tx.clone(),
        })
        // One agent exactly: auto-scaling would add agents while it is held.
        .autoscale(AutoscalePolicy::disabled())
        .build()
        .unwrap();
    let agent = HeldAgent {
        orchestrator,
        started,
        release,
    };
    (agent, entered)
}

fn held_agent() -> HeldAgent {
    let (held, entered) = recording_agent();
    held.orchestrator.submit(Task::new("gate")).unwrap();
    entered.recv_timeout(PATIENCE).unwrap();
    held
}

fn wait_all(orchestrator: &Orchestrator, ids: &[agentry::TaskId]) {
    for &id in ids {
        orchestrator.wait(id, PATIENCE).unwrap();
    }
}

#[test]
fn critical_task_starts_before_a_thousand_queued_low_tasks() {
    let held = held_agent();
    let low: Vec<Task> = (0..1_000)
        .map(|i| Task::new(format!("low-{i}")).with_priority(Priority::Low))
        .collect();
    let mut ids = held.orchestrator.submit_batch(low).unwrap();
    ids.push(
        held.orchestrator
            .submit(Task::new("critical").with_priority(Priority::Critical))
            .unwrap(),
    );
    held.release.send(()).unwrap();
    wait_all(&held.orchestrator, &ids);
    let started = held.started.lock();
    assert_eq!(started[0], "critical");
    assert_eq!(started.len(), 1_001);
}

#[test]
fn priorities_are_served_highest_first_and_fifo_within_a_level() {
    let held = held_agent();
    let mut ids = Vec::new();
    for (i, priority) in [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Critical,
    ]
    .iter()
    .cycle()
    .take(40)
    .enumerate()
    {
        let task = Task::new(format!("{priority}-{i:02}")).with_priority(*priority);
        ids.push(held.orchestrator.submit(task).unwrap());
    }
    held.release.send(()).unwrap();
    wait_all(&held.orchestrator, &ids);
    let started = held.started.lock().clone();
    let mut expected = started.clone();
    // Highest priority first; within one level, in submission order (the
    // zero-padded index sorts as submission order).
    let rank = |name: &str| match name.split('-').next().unwrap() {
        "critical" => 0,
        "high" => 1,
        "normal" => 2,
        _ => 3,
    };
    expected.sort_by_key(|name| (rank(name), name.clone()));
    assert_eq!(started, expected);
}

#[test]
fn a_large_batch_for_an_idle_agent_runs_highest_first_and_in_order_within_a_level() {
    // The agent is idle: a large batch hands it its first task before the
    // rest is queued, unless a later task of the batch outranks that one.
    for with_critical in [false, true] {
        let (agent, _entered) = recording_agent();
        let mut tasks: Vec<Task> = (0..200)
            .map(|i| Task::new(format!("normal-{i:03}")))
            .collect();
        if with_critical {
            tasks.push(Task::new("critical").with_priority(Priority::Critical));
        }
        let ids = agent.orchestrator.submit_batch(tasks).unwrap();
        wait_all(&agent.orchestrator, &ids);
        let started = agent.started.lock().clone();
        let mut expected: Vec<String> = (0..200).map(|i| format!("normal-{i:03}")).collect();
        if with_critical {
            expected.insert(0, "critical".into());
        }
        assert_eq!(started, expected, "with a critical task: {with_critical}");
    }
}

/// One agent running 1 ms tasks while a producer submits five normal tasks
/// a millisecond, after one low task: returns whether the low task finished
/// before `within` ran out, and stops the producer either way.
fn low_task_under_a_stream_of_normal_work(aging: Option<Duration>, within: Duration) -> bool {
    let mut builder = Orchestrator::builder()
        .agents(Role::Researcher, 1, || {
            |_: &Task, _: &AgentContext| -> Outcome {
                thread::sleep(Duration::from_millis(1));
                Ok(Output::empty())
            }
        })
        .autoscale(AutoscalePolicy::disabled());
    if let Some(interval) = aging {
        builder = builder.priority_aging(interval);
    }
    let orchestrator = builder.build().unwrap();
    let normal = || Task::new("normal").with_role(Role::Researcher);
    orchestrator
        .submit_batch((0..50).map(|_| normal()))
        .unwrap();
    let low = orchestrator
        .submit(
            Task::new("low")
                .with_role(Role::Researcher)
                .with_priority(Priority::Low),
        )
        .unwrap();
    let deadline = Instant::now() + within;
    let finished = loop {
        if orchestrator.result(low).is_some() {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        orchestrator.submit_batch((0..5).map(|_| normal())).unwrap();
        thread::sleep(Duration::from_millis(1));
    };
    orchestrator.shutdown().unwrap();
    finished
}

#[test]
fn with_priority_aging_a_low_task_is_not_starved_by_a_stream_of_normal_work() {
    assert!(
        low_task_under_a_stream_of_normal_work(Some(Duration::from_millis(20)), PATIENCE),
        "the low task aged to critical and ran while normal work kept coming"
    );
}

#[test]
fn without_aging_a_stream_of_normal_work_keeps_a_low_task_waiting() {
    assert!(
        !low_task_under_a_stream_of_normal_work(None, Duration::from_millis(300)),
        "strict priority: no low task runs while normal tasks are queued"
    );
}

#[test]
fn a_zero_aging_interval_is_invalid() {
    let built = Orchestrator::builder()
        .agents(Role::Researcher, 1, || ok)
        .priority_aging(Duration::ZERO)
        .build();
    assert!(matches!(built, Err(Error::InvalidConfig(_))), "{built:?}");
}

#[test]
fn tasks_are_routed_by_role_and_capability() {
    let orchestrator = Orchestrator::builder()
        .agents(Role::Researcher, 2, || {
            |_: &Task, c: &AgentContext| {
                Output::encode(&("researcher", c.role().to_string())).map_err(TaskError::from)
            }
        })
        .agents_with(
            AgentSpec::new(Role::Extractor).count(1).capability("pdf"),
            || {
                |_: &Task, _: &AgentContext| {
                    Output::encode(&("pdf", String::new())).map_err(TaskError::from)
                }
            },
        )
        .agents_with(
            AgentSpec::new(Role::Extractor).count(1).capability("html"),
            || {
                |_: &Task, _: &AgentContext| {
                    Output::encode(&("html", String::new())).map_err(TaskError::from)
                }
            },
        )
        .build()
        .unwrap();
    for _ in 0..20 {
        let r = orchestrator
            .wait(
                orchestrator
                    .submit(Task::new("t").with_role(Role::Researcher))
                    .unwrap(),
                PATIENCE,
            )
            .unwrap();
        assert_eq!(r.output::<(String, String)>().unwrap().0, "researcher");
        let r = orchestrator
            .wait(
                orchestrator
                    .submit(Task::new("t").with_role(Role::Extractor).requires("pdf"))
                    .unwrap(),
                PATIENCE,
            )
            .unwrap();
        assert_eq!(r.output::<(String, String)>().unwrap().0, "pdf");
        let r = orchestrator
            .wait(
                orchestrator
                    .submit(Task::new("t").requires("html"))
                    .unwrap(),
                PATIENCE,
            )
            .unwrap();
        assert_eq!(r.output::<(String, String)>().unwrap().0, "html");
    }
}

#[test]
fn a_task_nobody_can_serve_is_refused_at_submit() {
    let orchestrator = Orchestrator::builder()
        .agents(Role::Researcher, 1, || ok)
        .build()
        .unwrap();
    let refused = orchestrator.submit(Task::new("x").with_role(Role::Validator));
    assert!(
        matches!(
            refused,
            Err(Error::NoAgentForTask {
                role: Some(Role::Validator),
                ..
            })
        ),
        "{refused:?}"
    );
    let refused = orchestrator.submit(Task::new("x").with_role(Role::Researcher).requires("gpu"));
    assert!(
        matches!(refused, Err(Error::NoAgentForTask { .. })),
        "{refused:?}"
    );
    // A batch with one unservable task is refused whole.
    let refused = orchestrator.submit_batch(vec![
        Task::new("fine"),
        Task::new("x").with_role(Role::Custom("pilot".into())),
    ]);
    assert!(refused.is_err());
    assert_eq!(orchestrator.status().totals.submitted, 0);
}

#[test]
fn wait_times_out_while_the_task_runs() {
    let held = held_agent();
    let id = held.orchestrator.submit(Task::new("queued")).unwrap();
    let started = Instant::now();
    let waited = held.orchestrator.wait(id, Duration::from_millis(50));
    assert!(matches!(waited, Err(Error::Timeout)), "{waited:?}");
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert!(held.orchestrator.result(id).is_none());
    held.release.send(()).unwrap();
    assert!(held.orchestrator.wait(id, PATIENCE).unwrap().is_success());
    assert!(matches!(
        held.orchestrator.wait(agentry::TaskId::from(999), PATIENCE),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn cancelling_a_queued_task_and_a_finished_one() {
    let held = held_agent();
    let keep = held.orchestrator.submit(Task::new("keep")).unwrap();
    let drop_me = held.orchestrator.submit(Task::new("cancel-me")).unwrap();
    let dependent = held
        .orchestrator
        .submit(Task::new("after-cancelled").after(drop_me))
        .unwrap();
    assert!(held.orchestrator.cancel(drop_me).unwrap());
    assert!(!held.orchestrator.cancel(drop_me).unwrap());
    held.release.send(()).unwrap();
    assert!(held.orchestrator.wait(keep, PATIENCE).unwrap().is_success());
    assert!(!held.orchestrator.cancel(keep).unwrap());
    let cancelled = held.orchestrator.wait(drop_me, PATIENCE).unwrap();
    assert_eq!(cancelled.status(), TaskStatus::Cancelled);
    let failed = held.orchestrator.wait(dependent, PATIENCE).unwrap();
    assert_eq!(failed.status(), TaskStatus::Failed);
    assert!(
        failed.error().unwrap().contains(&drop_me.to_string()),
        "{failed:?}"
    );
    assert_eq!(*held.started.lock(), vec!["keep".to_string()]);
    assert!(matches!(
        held.orchestrator.cancel(agentry::TaskId::from(12345)),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn a_hundred_thousand_tasks_on_eight_agents_each_run_exactly_once() {
    const TASKS: u64 = 100_000;
    let runs = Arc::new((0..TASKS).map(|_| AtomicUsize::new(0)).collect::<Vec<_>>());
    let agent_runs = runs.clone();
    let orchestrator = Orchestrator::builder()
        .agents(Role::Extractor, 8, move || {
            let runs = agent_runs.clone();
            move |task: &Task, _: &AgentContext| {
                let n: u64 = task.input()?;
                runs[n as usize].fetch_add(1, Ordering::Relaxed);
                Ok(Output::encode(&(n * 2))?)
            }
        })
        .autoscale(AutoscalePolicy::disabled())
        .build()
        .unwrap();
    let submitters: Vec<_> = (0..2u64)
        .map(|half| {
            let tasks: Vec<Task> = (half * TASKS / 2..(half + 1) * TASKS / 2)
                .map(|n| Task::new("double").with_input(&n).unwrap())
                .collect();
            tasks
        })
        .collect();
    let mut ids = Vec::new();
    thread::scope(|scope| {
        let handles: Vec<_> = submitters
            .into_iter()
            .map(|tasks| {
                let orchestrator = &orchestrator;
                scope.spawn(move || {
                    tasks
                        .chunks(1_000)
                        .flat_map(|chunk| orchestrator.submit_batch(chunk.to_vec()).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for handle in handles {
            ids.extend(handle.join().unwrap());
        }
    });
    let unique: HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), TASKS as usize);
    let mut sum = 0u64;
    for id in &ids {
        let result = orchestrator.wait(*id, PATIENCE).unwrap();
        sum += result.output::<u64>().unwrap();
    }
    assert_eq!(sum, TASKS * (TASKS - 1));
    assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) == 1));
    let status = orchestrator.status();
    assert_eq!(status.totals.succeeded, TASKS);
    assert_eq!(status.agents().iter().map(|a| a.tasks).sum::<u64>(), TASKS);
}

#[test]
fn agents_cooperate_through_shared_memory_and_messages() {
    struct Collector {
        seen: Arc<AtomicU64>,
    }
    impl agentry::Agent for Collector {
        fn execute(&mut self, task: &Task, ctx: &AgentContext) -> Outcome {
            let n: i64 = task.input()?;
            ctx.memory()
                .update("total", |v: Option<i64>| v.unwrap_or(0) + n)?;
            ctx.broker().publish(ctx.id(), "progress", &n)?;
            Ok(Output::empty())
        }
        fn on_message(&mut self, message: Message, _: &AgentContext) {
            if message.body::<String>().ok().as_deref() == Some("ping") {
                self.seen.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let seen = Arc::new(AtomicU64::new(0));
    let agent_seen = seen.clone();
    let orchestrator = Orchestrator::builder()
        .agents(Role::Validator, 3, move || Collector {
            seen: agent_seen.clone(),
        })
        .autoscale(AutoscalePolicy::disabled())
        .build()
        .unwrap();
    let listener = agentry::AgentId::from(10_000);
    let inbox = orchestrator.broker().register(listener).unwrap();
    orchestrator
        .broker()
        .subscribe(listener, "progress")
        .unwrap();
    let ids = orchestrator
        .submit_batch((1..=100i64).map(|n| Task::new("add").with_input(&n).unwrap()))
        .unwrap();
    wait_all(&orchestrator, &ids);
    assert_eq!(
        orchestrator
            .memory()
            .get::<i64>("total")
            .unwrap()
            .unwrap()
            .value,
        5050
    );
    let mut progress = 0;
    while let Ok(message) = inbox.recv_timeout(Duration::from_millis(100)) {
        progress += message.body::<i64>().unwrap();
    }
    assert_eq!(progress, 5050);

    let delivery = orchestrator.broker().broadcast(listener, &"ping").unwrap();
    assert_eq!(delivery.reached(), 3);
    let deadline = Instant::now() + PATIENCE;
    while seen.load(Ordering::Relaxed) < 3 {
        assert!(
            Instant::now() < deadline,
            "agents did not get their messages"
        );
        thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn shutdown_lets_running_tasks_finish_and_never_starts_queued_ones() {
    let (entered_tx, entered) = unbounded();
    let finished = Arc::new(AtomicUsize::new(0));
    let agent_finished = finished.clone();
    let orchestrator = Orchestrator::builder()
        .agents(Role::Researcher, 1, move || {
            let (entered, finished) = (entered_tx.clone(), agent_finished.clone());
            move |_: &Task, _: &AgentContext| {
                entered.send(()).unwrap();
                thread::sleep(Duration::from_millis(100));
                finished.fetch_add(1, Ordering::SeqCst);
                Ok(Output::empty())
            }
        })
        .autoscale(AutoscalePolicy::disabled())
        .build()
        .unwrap();
    orchestrator.submit(Task::new("running")).unwrap();
    entered.recv_timeout(PATIENCE).unwrap();
    orchestrator
        .submit_batch((0..10).map(|_| Task::new("queued")))
        .unwrap();
    assert_eq!(orchestrator.status().queued(), 10);
    orchestrator.shutdown().unwrap();
    // The running task finished; none of the queued ones started.
    assert_eq!(finished.load(Ordering::SeqCst), 1);
    assert_eq!(entered.try_iter().count(), 0);
}

#[test]
fn once_shutdown_begins_agents_submitting_subtasks_are_refused() {
    let (entered_tx, entered) = bounded(1);
    let refused = Arc::new(Mutex::new(None));
    let agent_refused = refused.clone();
    let orchestrator = Orchestrator::builder()
        .agents(Role::Planner, 1, move || {
            let (entered, refused) = (entered_tx.clone(), agent_refused.clone());
            move |task: &Task, ctx: &AgentContext| {
                if task.kind() != "watcher" {
                    return Ok(Output::empty());
                }
                entered.send(()).unwrap();
                // Keep submitting until shutdown closes the door; every task
                // accepted meanwhile is queued behind this one.
                let deadline = Instant::now() + PATIENCE;
                let mut accepted = Vec::new();
                while Instant::now() < deadline {
                    match ctx.submit(Task::new("late")) {
                        Ok(id) => accepted.push(id),
                        Err(error) => {
                            *refused.lock() = Some(error.to_string());
                            break;
                        }
                    }
                    thread::sleep(Duration::from_millis(1));
                }
                Ok(Output::encode(&accepted)?)
            }
        })
        .build()
        .unwrap();
    orchestrator.submit(Task::new("watcher")).unwrap();
    entered.recv_timeout(PATIENCE).unwrap();
    let cancelled_before = orchestrator.status().totals.cancelled;
    assert_eq!(cancelled_before, 0);
    orchestrator.shutdown().unwrap();
    assert_eq!(refused.lock().as_deref(), Some("shut down"));
}

#[test]
fn no_agent_outlives_shutdown() {
    let orchestrator = Orchestrator::builder()
        .agents(Role::Researcher, 3, || ok)
        .build()
        .unwrap();
    let broker = orchestrator.broker().clone();
    assert_eq!(broker.registered().len(), 3);
    let events = orchestrator.events().clone();
    orchestrator.shutdown().unwrap();
    // Every agent's mailbox is gone with its thread, and each said so.
    assert!(broker.registered().is_empty());
    let stopped = events
        .try_iter()
        .filter(|e| matches!(e, Event::AgentStopped { .. }))
        .count();
    assert_eq!(stopped, 3);
}

#[test]
fn status_report_has_a_row_per_agent_queues_and_totals() {
    let orchestrator = Orchestrator::builder()
        .agents(Role::Researcher, 2, || ok)
        .agents(Role::Validator, 1, || {
            |_: &Task, _: &AgentContext| Err(TaskError::fatal("no"))
        })
        .build()
        .unwrap();
    let ids = orchestrator
        .submit_batch((0..10).map(|_| Task::new("r").with_role(Role::Researcher)))
        .unwrap();
    let bad = orchestrator
        .submit(Task::new("v").with_role(Role::Validator))
        .unwrap();
    wait_all(&orchestrator, &ids);
    orchestrator.wait(bad, PATIENCE).unwrap();
    let report = orchestrator.status();
    assert_eq!(report.agents().len(), 3);
    assert_eq!(report.queued(), 0);
    assert_eq!(report.totals.submitted, 11);
    assert_eq!(report.totals.succeeded, 10);
    assert_eq!(report.totals.failed, 1);
    let researchers: Vec<_> = report
        .agents()
        .iter()
        .filter(|a| a.role == Role::Researcher)
        .collect();
    assert_eq!(researchers.iter().map(|a| a.tasks).sum::<u64>(), 10);
    assert!(researchers.iter().all(|a| a.success_rate == 1.0));
    let validator = report
        .agents()
        .iter()
        .find(|a| a.role == Role::Validator)
        .unwrap();
    assert_eq!((validator.tasks, validator.success_rate), (1, 0.0));
    assert!(report.throughput > 0.0);
    let table = report.to_string();
    assert!(
        table.contains("researcher") && table.contains("validator"),
        "{table}"
    );
    assert!(table.contains("IDLE") || table.contains("BUSY"), "{table}");
}

#[test]
fn events_nobody_reads_are_kept_up_to_the_bound_and_the_rest_counted() {
    const TASKS: usize = 2_500;
    let orchestrator = Orchestrator::builder()
        .agents(Role::Researcher, 1, || {
            |_: &Task, _: &AgentContext| Err(TaskError::retryable("again"))
        })
        .autoscale(AutoscalePolicy::disabled())
        .build()
        .unwrap();
    let ids = orchestrator
        .submit_batch((0..TASKS).map(|_| Task::new("r").with_max_attempts(2)))
        .unwrap();
    for id in ids {
        let result = orchestrator.wait(id, PATIENCE).unwrap();
        assert_eq!(result.status(), TaskStatus::Failed);
    }
    // The agent's spawn, then a retry and a dead letter per task, from one
    // emitter (the only agent), which emits a task's events just after
    // publishing its result: every one is kept or counted, and the bound
    // holds exactly.
    let emitted = 1 + 2 * TASKS as u64;
    let deadline = Instant::now() + PATIENCE;
    let accounted = || orchestrator.events().len() as u64 + orchestrator.status().events_dropped;
    while accounted() < emitted {
        assert!(
            Instant::now() < deadline,
            "{} of {emitted} events accounted for",
            accounted()
        );
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(accounted(), emitted);
    assert_eq!(orchestrator.events().len(), 4_096);
    // The oldest are kept.
    assert!(matches!(
        orchestrator.events().try_recv(),
        Ok(Event::AgentSpawned { .. })
    ));
}

#[test]
fn invalid_configurations_are_refused() {
    assert!(matches!(
        Orchestrator::builder().build(),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        Orchestrator::builder()
            .agents(Role::Planner, 0, || ok)
            .build(),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        Orchestrator::builder()
            .agents(Role::Planner, 1, || ok)
            .min_agents(5)
            .max_agents(3)
            .build(),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        Orchestrator::builder()
            .agents(Role::Planner, 1, || ok)
            .result_retention(0)
            .build(),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn agent_threads_are_named_after_their_role() {
    let orchestrator = Orchestrator::builder()
        .agents(Role::Custom("translator".into()), 2, || {
            |_: &Task, _: &AgentContext| {
                Ok(Output::encode(
                    &thread::current().name().unwrap_or_default().to_owned(),
                )?)
            }
        })
        .build()
        .unwrap();
    let name: String = orchestrator
        .wait(orchestrator.submit(Task::new("t")).unwrap(), PATIENCE)
        .unwrap()
        .output()
        .unwrap();
    assert!(
        name == "agentry-translator-1" || name == "agentry-translator-2",
        "{name}"
    );
}

// ------------------------------------------------ on both backends

/// Where a suite test's orchestrators keep their tasks.
enum Backend {
    InProcess,
    /// A server of the test's own; each orchestrator gets a namespace of its
    /// own, so two in one test are two clusters, as two in-process ones are
    /// two orchestrators.
    #[cfg(feature = "redis")]
    Redis(common::RedisServer, AtomicUsize),
}

impl Backend {
    fn builder(&self) -> OrchestratorBuilder {
        match self {
            Backend::InProcess => Orchestrator::builder(),
            #[cfg(feature = "redis")]
            Backend::Redis(server, next) => Orchestrator::builder().redis(
                agentry::RedisConfig::new(server.url())
                    .namespace(format!("test-{}", next.fetch_add(1, Ordering::Relaxed))),
            ),
        }
    }
}

/// The task-flow behaviour every backend must show. Each test calls
/// `backend()`, which the module invoking the suite defines.
macro_rules! task_flow_suite {
    () => {
        #[test]
        fn dependency_chains_run_in_order_and_failures_propagate() {
            let backend = backend();
            let log = Arc::new(Mutex::new(Vec::new()));
            let agent_log = log.clone();
            let orchestrator = backend
                .builder()
                .agents(Role::Planner, 4, move || {
                    let log = agent_log.clone();
                    move |task: &Task, _: &AgentContext| {
                        log.lock().push(task.kind().to_owned());
                        if task.kind() == "bad" {
                            Err(TaskError::fatal("bad step"))
                        } else {
                            Ok(Output::empty())
                        }
                    }
                })
                .build()
                .unwrap();
            let a = orchestrator.submit(Task::new("a")).unwrap();
            let b = orchestrator.submit(Task::new("b").after(a)).unwrap();
            let c = orchestrator
                .submit(Task::new("c").after(b).after(a))
                .unwrap();
            assert!(orchestrator.wait(c, PATIENCE).unwrap().is_success());
            assert_eq!(*log.lock(), vec!["a", "b", "c"]);

            let bad = orchestrator.submit(Task::new("bad")).unwrap();
            let child = orchestrator.submit(Task::new("child").after(bad)).unwrap();
            let grandchild = orchestrator
                .submit(Task::new("grandchild").after(child))
                .unwrap();
            let child_result = orchestrator.wait(child, PATIENCE).unwrap();
            assert_eq!(child_result.status(), TaskStatus::Failed);
            assert!(child_result.error().unwrap().contains(&bad.to_string()));
            assert!(child_result.error().unwrap().contains("bad step"));
            assert_eq!(child_result.attempts(), 0);
            let grandchild_result = orchestrator.wait(grandchild, PATIENCE).unwrap();
            assert_eq!(grandchild_result.status(), TaskStatus::Failed);
            assert!(
                grandchild_result
                    .error()
                    .unwrap()
                    .contains(&child.to_string())
            );

            // A dependency that had failed before the dependent was submitted: a
            // failed result, not a submit error.
            let late = orchestrator.submit(Task::new("late").after(bad)).unwrap();
            let late_result = orchestrator.wait(late, PATIENCE).unwrap();
            assert_eq!(late_result.status(), TaskStatus::Failed);
            assert!(
                !log.lock()
                    .iter()
                    .any(|k| k == "child" || k == "grandchild" || k == "late")
            );

            // An unknown dependency is the only submit error.
            assert!(matches!(
                orchestrator.submit(Task::new("x").after(agentry::TaskId::from(1_000_000))),
                Err(Error::NotFound { .. })
            ));
        }

        #[test]
        fn work_spreads_across_agents() {
            let backend = backend();
            let orchestrator = backend
                .builder()
                .agents(Role::Extractor, 4, || {
                    |_: &Task, _: &AgentContext| {
                        thread::sleep(Duration::from_millis(2));
                        Ok(Output::empty())
                    }
                })
                .autoscale(AutoscalePolicy::disabled())
                .build()
                .unwrap();
            let ids = orchestrator
                .submit_batch((0..200).map(|_| Task::new("work")))
                .unwrap();
            let mut per_agent = std::collections::HashMap::new();
            for id in ids {
                let result = orchestrator.wait(id, PATIENCE).unwrap();
                *per_agent.entry(result.agent().unwrap()).or_insert(0) += 1;
            }
            assert_eq!(per_agent.len(), 4, "{per_agent:?}");
            for (&agent, &count) in &per_agent {
                assert!(
                    count >= 20,
                    "{agent} ran only {count} of 200: {per_agent:?}"
                );
            }
        }

        #[test]
        fn retryable_errors_retry_until_the_last_attempt_and_keep_the_last_error() {
            let backend = backend();
            let orchestrator = backend
                .builder()
                .agents(Role::Validator, 2, || {
                    |task: &Task, _: &AgentContext| {
                        Err(TaskError::retryable(format!(
                            "attempt {} failed",
                            task.attempt()
                        )))
                    }
                })
                .build()
                .unwrap();
            let id = orchestrator
                .submit(Task::new("flaky").with_max_attempts(3))
                .unwrap();
            let result = orchestrator.wait(id, PATIENCE).unwrap();
            assert_eq!(result.status(), TaskStatus::Failed);
            assert_eq!(result.attempts(), 3);
            assert_eq!(result.error(), Some("attempt 3 failed"));
            assert!(!result.is_success());
            assert!(result.output::<()>().is_err());
            assert_eq!(orchestrator.status().totals.retried, 2);
            let retried: Vec<Event> = orchestrator
                .events()
                .try_iter()
                .filter(|e| matches!(e, Event::TaskRetried { .. }))
                .collect();
            assert_eq!(retried.len(), 2);
        }

        #[test]
        fn a_retry_can_succeed() {
            let backend = backend();
            let orchestrator = backend
                .builder()
                .agents(Role::Validator, 1, || {
                    |task: &Task, _: &AgentContext| {
                        if task.attempt() < 2 {
                            Err(TaskError::retryable("not yet"))
                        } else {
                            Ok(Output::encode(&task.attempt())?)
                        }
                    }
                })
                .build()
                .unwrap();
            let id = orchestrator
                .submit(Task::new("t").with_max_attempts(5))
                .unwrap();
            let result = orchestrator.wait(id, PATIENCE).unwrap();
            assert!(result.is_success());
            assert_eq!(result.attempts(), 2);
            assert_eq!(result.output::<u32>().unwrap(), 2);
        }

        #[test]
        fn fatal_errors_fail_at_once() {
            let backend = backend();
            let orchestrator = backend
                .builder()
                .agents(Role::Validator, 1, || {
                    |_: &Task, _: &AgentContext| Err(TaskError::fatal("malformed input"))
                })
                .build()
                .unwrap();
            let id = orchestrator
                .submit(Task::new("t").with_max_attempts(5))
                .unwrap();
            let result = orchestrator.wait(id, PATIENCE).unwrap();
            assert_eq!(result.status(), TaskStatus::Failed);
            assert_eq!(result.attempts(), 1);
            assert_eq!(result.error(), Some("malformed input"));
        }

        #[test]
        fn a_panicking_agent_fails_the_attempt_the_task_retries_and_the_agent_is_replaced() {
            let backend = backend();
            let orchestrator = backend
                .builder()
                .agents(Role::Planner, 1, || {
                    |task: &Task, _: &AgentContext| {
                        if task.attempt() == 1 {
                            panic!("boom on attempt one");
                        }
                        Ok(Output::empty())
                    }
                })
                .build()
                .unwrap();
            let id = orchestrator
                .submit(Task::new("t").with_max_attempts(2))
                .unwrap();
            let result = orchestrator.wait(id, PATIENCE).unwrap();
            assert!(result.is_success(), "{result:?}");
            assert_eq!(result.attempts(), 2);
            let events: Vec<Event> = orchestrator.events().try_iter().collect();
            let failed = events.iter().find_map(|e| match e {
                Event::AgentFailed { agent, reason } if reason.contains("boom on attempt one") => {
                    Some(*agent)
                }
                _ => None,
            });
            let failed = failed.expect("the panic is reported");
            // The retry ran on the replacement, not on the agent that panicked.
            assert_ne!(result.agent(), Some(failed));
            let status = orchestrator.status();
            assert_eq!(status.agents().len(), 1);
            assert_ne!(status.agents()[0].id, failed);
            assert_ne!(status.agents()[0].state, AgentState::Error);

            let once = backend
                .builder()
                .agents(Role::Planner, 1, || {
                    |_: &Task, _: &AgentContext| -> Outcome { panic!("always") }
                })
                .build()
                .unwrap();
            let result = once
                .wait(once.submit(Task::new("t")).unwrap(), PATIENCE)
                .unwrap();
            assert_eq!(result.status(), TaskStatus::Failed);
            assert!(result.error().unwrap().contains("always"), "{result:?}");
        }

        #[test]
        fn a_task_past_its_timeout_times_out_at_its_deadline() {
            let backend = backend();
            let (release, gate) = bounded::<()>(1);
            let orchestrator = backend
                .builder()
                .agents(Role::Researcher, 1, move || {
                    let gate = gate.clone();
                    move |_: &Task, _: &AgentContext| {
                        let _ = gate.recv_timeout(PATIENCE);
                        Ok(Output::empty())
                    }
                })
                .build()
                .unwrap();
            let started = Instant::now();
            let id = orchestrator
                .submit(Task::new("slow").with_timeout(Duration::from_millis(100)))
                .unwrap();
            let result = orchestrator.wait(id, PATIENCE).unwrap();
            assert!(started.elapsed() >= Duration::from_millis(100));
            assert!(started.elapsed() < PATIENCE);
            assert_eq!(result.status(), TaskStatus::TimedOut);
            assert!(result.error().unwrap().contains("timed out"));
            release.send(()).unwrap();
            // The late result is ignored, and counted.
            let deadline = Instant::now() + PATIENCE;
            while orchestrator.status().totals.late_results == 0 {
                assert!(Instant::now() < deadline);
                thread::sleep(Duration::from_millis(5));
            }
            assert_eq!(
                orchestrator.result(id).unwrap().status(),
                TaskStatus::TimedOut
            );
        }

        #[test]
        fn agents_submit_subtasks() {
            let backend = backend();
            let orchestrator = backend
                .builder()
                .agents(Role::Planner, 2, || {
                    |task: &Task, ctx: &AgentContext| {
                        if task.kind() == "plan" {
                            let ids: Vec<_> = (0..3)
                                .map(|i| {
                                    ctx.submit(
                                        Task::new(format!("step-{i}")).with_role(Role::Planner),
                                    )
                                })
                                .collect::<agentry::Result<_>>()?;
                            Ok(Output::encode(&ids)?)
                        } else {
                            Ok(Output::empty())
                        }
                    }
                })
                .build()
                .unwrap();
            let plan = orchestrator
                .wait(orchestrator.submit(Task::new("plan")).unwrap(), PATIENCE)
                .unwrap();
            let steps: Vec<agentry::TaskId> = plan.output().unwrap();
            for step in steps {
                assert!(orchestrator.wait(step, PATIENCE).unwrap().is_success());
            }
        }

        #[test]
        fn results_beyond_the_retention_are_evicted_oldest_first() {
            let backend = backend();
            let orchestrator = backend
                .builder()
                .agents(Role::Researcher, 1, || ok)
                .result_retention(10)
                .build()
                .unwrap();
            let ids: Vec<_> = (0..30)
                .map(|_| {
                    let id = orchestrator.submit(Task::new("t")).unwrap();
                    orchestrator.wait(id, PATIENCE).unwrap();
                    id
                })
                .collect();
            assert!(orchestrator.result(ids[0]).is_none());
            assert!(orchestrator.result(ids[19]).is_none());
            assert!(orchestrator.result(ids[20]).is_some());
            assert!(orchestrator.result(ids[29]).is_some());
        }
    };
}

mod in_process {
    use super::*;

    fn backend() -> Backend {
        Backend::InProcess
    }

    task_flow_suite!();
}

#[cfg(feature = "redis")]
mod on_redis {
    use super::*;

    fn backend() -> Backend {
        Backend::Redis(common::RedisServer::start(), AtomicUsize::new(0))
    }

    task_flow_suite!();
}
