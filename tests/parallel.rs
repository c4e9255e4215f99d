//! Parallel execution: batches collected in input order with a deadline, and the orchestrator's shared data-parallel pool inside agents.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use agentry::{
    AgentContext, AutoscalePolicy, Event, Orchestrator, Output, Role, Task, TaskError, TaskStatus,
    run_batch,
};

const LONG: Duration = Duration::from_secs(30);

type Reply = Result<Output, TaskError>;

#[test]
fn batch_results_come_back_in_input_order() {
    let orchestrator = Orchestrator::builder()
        .agents(Role::Researcher, 4, || {
            |task: &Task, _: &AgentContext| -> Reply {
                let n: u64 = task.input()?;
                // The first tasks take longest, so they finish last.
                std::thread::sleep(Duration::from_millis(20u64.saturating_sub(n)));
                Ok(Output::encode(&(n * 10))?)
            }
        })
        .build()
        .unwrap();
    let tasks: Vec<Task> = (0..20u64)
        .map(|n| Task::new("times-ten").with_input(&n).unwrap())
        .collect();
    let outcome = run_batch(&orchestrator, tasks, LONG).unwrap();
    assert!(outcome.is_complete());
    assert_eq!(outcome.finished(), 20);
    let expected: Vec<Option<u64>> = (0..20).map(|n| Some(n * 10)).collect();
    assert_eq!(outcome.outputs::<u64>().unwrap(), expected);
    let ids: Vec<_> = outcome
        .results()
        .iter()
        .map(|r| r.as_ref().unwrap().id())
        .collect();
    assert_eq!(ids, outcome.ids());
}

#[test]
fn batch_timeout_returns_partial_results() {
    let (release, gate) = crossbeam_channel::unbounded::<()>();
    let orchestrator = Orchestrator::builder()
        .autoscale(AutoscalePolicy::disabled())
        .agents(Role::Researcher, 2, move || {
            let gate = gate.clone();
            move |task: &Task, _: &AgentContext| -> Reply {
                if task.kind() == "stuck" {
                    let _ = gate.recv_timeout(LONG);
                }
                Ok(Output::encode(task.kind())?)
            }
        })
        .build()
        .unwrap();
    let tasks = [Task::new("quick"), Task::new("quick"), Task::new("stuck")];
    let outcome = run_batch(&orchestrator, tasks, Duration::from_secs(3)).unwrap();
    assert!(!outcome.is_complete());
    assert_eq!(outcome.finished(), 2);
    assert_eq!(
        outcome.outputs::<String>().unwrap(),
        [Some("quick".to_owned()), Some("quick".to_owned()), None]
    );
    assert_eq!(outcome.unfinished(), [outcome.ids()[2]]);
    release.send(()).unwrap();
    let late = orchestrator.wait(outcome.ids()[2], LONG).unwrap();
    assert_eq!(late.status(), TaskStatus::Succeeded);
}

#[test]
fn a_refused_batch_submits_nothing() {
    let orchestrator = Orchestrator::builder()
        .agents(Role::Researcher, 1, || {
            |_: &Task, _: &AgentContext| -> Reply { Ok(Output::empty()) }
        })
        .build()
        .unwrap();
    let tasks = [
        Task::new("ok"),
        Task::new("nobody").with_role(Role::Validator),
    ];
    assert!(run_batch(&orchestrator, tasks, LONG).is_err());
    assert_eq!(orchestrator.status().totals.submitted, 0);
}

#[test]
fn agents_map_and_reduce_on_the_one_shared_pool() {
    let threads_seen = std::sync::Arc::new(Mutex::new(BTreeSet::new()));
    let seen = std::sync::Arc::clone(&threads_seen);
    let orchestrator = Orchestrator::builder()
        .parallelism(2)
        .agents(Role::Extractor, 3, move || {
            let seen = std::sync::Arc::clone(&seen);
            move |task: &Task, ctx: &AgentContext| -> Reply {
                let items: Vec<u64> = task.input()?;
                let pool = ctx.parallel();
                let squares = pool.map(&items, |x| {
                    let name = std::thread::current().name().unwrap_or("").to_owned();
                    seen.lock().unwrap().insert(name);
                    x * x
                })?;
                let sum = pool.map_reduce(&items, |x| *x, || 0, |a, b| a + b)?;
                let visited = std::sync::atomic::AtomicUsize::new(0);
                pool.for_each(&items, |_| {
                    visited.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                })?;
                Ok(Output::encode(&(
                    pool.threads(),
                    squares,
                    sum,
                    visited.into_inner(),
                ))?)
            }
        })
        .build()
        .unwrap();
    let items: Vec<u64> = (0..1_000).collect();
    let tasks: Vec<Task> = (0..6)
        .map(|_| Task::new("squares").with_input(&items).unwrap())
        .collect();
    let outcome = run_batch(&orchestrator, tasks, LONG).unwrap();
    for output in outcome.outputs::<(usize, Vec<u64>, u64, usize)>().unwrap() {
        let (threads, squares, sum, visited) = output.expect("every task succeeded");
        assert_eq!(threads, 2);
        assert_eq!(squares, items.iter().map(|x| x * x).collect::<Vec<_>>());
        assert_eq!(sum, 999 * 1_000 / 2);
        assert_eq!(visited, 1_000);
    }
    let seen = threads_seen.lock().unwrap();
    assert!(
        seen.iter()
            .all(|name| name.starts_with("agentry-parallel-")),
        "work ran outside the shared pool: {seen:?}"
    );
    assert!(seen.len() <= 2, "more threads than the pool has: {seen:?}");
}

#[test]
fn panic_in_a_parallel_closure_fails_the_task_and_spares_the_pool() {
    let orchestrator = Orchestrator::builder()
        .parallelism(2)
        .autoscale(AutoscalePolicy::disabled())
        .agents(Role::Extractor, 1, || {
            |task: &Task, ctx: &AgentContext| -> Reply {
                let explode = task.kind() == "explode";
                let doubled = ctx.parallel().map(&[1u32, 2, 3, 4], |x| {
                    if explode && *x == 3 {
                        panic!("bad item {x}");
                    }
                    x * 2
                })?;
                Ok(Output::encode(&doubled)?)
            }
        })
        .build()
        .unwrap();
    let failed = orchestrator
        .wait(orchestrator.submit(Task::new("explode")).unwrap(), LONG)
        .unwrap();
    assert_eq!(failed.status(), TaskStatus::Failed);
    assert_eq!(
        failed.error(),
        Some("a parallel closure panicked: bad item 3")
    );

    let fine = orchestrator
        .wait(orchestrator.submit(Task::new("double")).unwrap(), LONG)
        .unwrap();
    assert_eq!(fine.output::<Vec<u32>>().unwrap(), [2, 4, 6, 8]);
    assert_eq!(
        fine.agent(),
        failed.agent(),
        "the agent itself did not fail"
    );
    let agent_failed = orchestrator
        .events()
        .try_iter()
        .any(|e| matches!(e, Event::AgentFailed { .. }));
    assert!(!agent_failed);
}
