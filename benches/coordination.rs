//! Coordination benchmarks, each beside a bare baseline: auto-scale
//! response (from the submit that makes the condition true to the new agent
//! running) and recovery (from a panic to the replacement running), both
//! beside a bare `std::thread::spawn` until the thread runs.
//!
//! Run: `cargo bench --bench coordination`

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use agentry::{
    AgentContext, AutoscalePolicy, Event, HealthConfig, Orchestrator, Output, Role, Task, TaskError,
};
use criterion::{Criterion, criterion_group, criterion_main};
use crossbeam_channel::{Receiver, bounded};
use parking_lot::Mutex;

const PATIENCE: Duration = Duration::from_secs(10);

fn await_spawn(events: &Receiver<Event>, besides: agentry::AgentId) -> Instant {
    loop {
        match events.recv_timeout(PATIENCE) {
            Ok(Event::AgentSpawned { agent, .. }) if agent != besides => return Instant::now(),
            Ok(_) => {}
            Err(e) => panic!("no agent spawned: {e}"),
        }
    }
}

fn bare_spawn_to_running() -> Duration {
    let (running, ran) = bounded(1);
    let start = Instant::now();
    let handle = thread::spawn(move || running.send(Instant::now()).unwrap());
    let at = ran.recv().unwrap();
    handle.join().unwrap();
    at - start
}

fn autoscale_response(c: &mut Criterion) {
    let mut group = c.benchmark_group("coordination/autoscale_response");
    group.sample_size(20);
    group.bench_function("bare_thread_spawn", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| bare_spawn_to_running()).sum());
    });
    group.bench_function("agentry", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (release, gate) = bounded::<()>(0);
                let orchestrator = Orchestrator::builder()
                    .agents(Role::Extractor, 1, move || {
                        let gate = gate.clone();
                        move |_: &Task, _: &AgentContext| -> Result<Output, TaskError> {
                            let _ = gate.recv_timeout(PATIENCE);
                            Ok(Output::empty())
                        }
                    })
                    .min_agents(1)
                    .max_agents(2)
                    .autoscale(AutoscalePolicy::default().cooldown(Duration::ZERO))
                    .build()
                    .unwrap();
                let events = orchestrator.events().clone();
                let first = match events.recv_timeout(PATIENCE) {
                    Ok(Event::AgentSpawned { agent, .. }) => agent,
                    other => panic!("{other:?}"),
                };
                // One task holds the only agent busy; ten more fill the
                // queue to the threshold; the eleventh crosses it.
                orchestrator.submit(Task::new("hold")).unwrap();
                orchestrator
                    .submit_batch((0..10).map(|_| Task::new("queued")))
                    .unwrap();
                let start = Instant::now();
                orchestrator.submit(Task::new("crossing")).unwrap();
                total += await_spawn(&events, first) - start;
                drop(release);
                orchestrator.shutdown().unwrap();
            }
            total
        });
    });
    group.finish();
}

fn recovery(c: &mut Criterion) {
    // The default hook prints every panic; the benchmark panics on purpose.
    std::panic::set_hook(Box::new(|_| {}));
    let mut group = c.benchmark_group("coordination/recovery_after_panic");
    group.sample_size(20);
    group.bench_function("bare_thread_spawn", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| bare_spawn_to_running()).sum());
    });
    group.bench_function("agentry", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let panicked_at = Arc::new(Mutex::new(None));
                let agent_panicked_at = panicked_at.clone();
                let orchestrator = Orchestrator::builder()
                    .agents(Role::Planner, 1, move || {
                        let panicked_at = agent_panicked_at.clone();
                        move |_: &Task, _: &AgentContext| -> Result<Output, TaskError> {
                            *panicked_at.lock() = Some(Instant::now());
                            panic!("benchmarked failure");
                        }
                    })
                    .health(HealthConfig::default())
                    .autoscale(AutoscalePolicy::disabled())
                    .build()
                    .unwrap();
                let events = orchestrator.events().clone();
                let first = match events.recv_timeout(PATIENCE) {
                    Ok(Event::AgentSpawned { agent, .. }) => agent,
                    other => panic!("{other:?}"),
                };
                orchestrator.submit(Task::new("doomed")).unwrap();
                let running = await_spawn(&events, first);
                let panicked = panicked_at.lock().expect("the agent panicked first");
                total += running - panicked;
                orchestrator.shutdown().unwrap();
            }
            total
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    targets = autoscale_response, recovery
}
criterion_main!(benches);
