//! Coordination: failed agents replaced with their role and capabilities,
//! restart limits, hung agents detached, auto-scaling up and down, and a
//! chaos run where agents panic and hang while no task is lost.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use agentry::{
    AgentContext, AgentId, AgentSpec, AutoscalePolicy, Error, Event, HealthConfig, Message,
    Orchestrator, Output, Role, Task, TaskError, TaskStatus,
};
use parking_lot::Mutex;

const PATIENCE: Duration = Duration::from_secs(30);

type Outcome = Result<Output, TaskError>;

/// Waits for an event matching `wanted`, returning it; other events are
/// kept in `seen`.
fn await_event(
    orchestrator: &Orchestrator,
    seen: &mut Vec<Event>,
    wanted: impl Fn(&Event) -> bool,
) -> Event {
    if let Some(position) = seen.iter().position(&wanted) {
        return seen.remove(position);
    }
    let deadline = Instant::now() + PATIENCE;
    loop {
        let event = orchestrator
            .events()
            .recv_deadline(deadline)
            .expect("the awaited event never came");
        if wanted(&event) {
            return event;
        }
        seen.push(event);
    }
}

fn quick_health() -> HealthConfig {
    HealthConfig::default()
        .check_interval(Duration::from_millis(10))
        .hang_timeout(Duration::from_millis(200))
}

#[test]
fn a_failed_agent_is_replaced_with_its_role_and_capabilities_and_its_queue_runs_elsewhere() {
    let panicked = Arc::new(AtomicBool::new(false));
    let agent_panicked = panicked.clone();
    let orchestrator = Orchestrator::builder()
        .agents_with(
            AgentSpec::new(Role::Extractor).count(2).capability("pdf"),
            move || {
                let panicked = agent_panicked.clone();
                move |task: &Task, _: &AgentContext| {
                    thread::sleep(Duration::from_millis(2));
                    if task.kind() == "poison" && !panicked.swap(true, Ordering::SeqCst) {
                        panic!("poisoned page");
                    }
                    Ok(Output::empty())
                }
            },
        )
        .autoscale(AutoscalePolicy::disabled())
        .build()
        .unwrap();
    let mut ids = vec![
        orchestrator
            .submit(Task::new("poison").requires("pdf").with_max_attempts(2))
            .unwrap(),
    ];
    ids.extend(
        orchestrator
            .submit_batch((0..50).map(|_| Task::new("page").requires("pdf")))
            .unwrap(),
    );
    for id in &ids {
        assert!(orchestrator.wait(*id, PATIENCE).unwrap().is_success());
    }
    let mut seen = Vec::new();
    let replaced = await_event(&orchestrator, &mut seen, |e| {
        matches!(e, Event::AgentReplaced { .. })
    });
    let Event::AgentReplaced {
        failed,
        replacement,
        role,
    } = replaced
    else {
        unreachable!()
    };
    assert_eq!(role, Role::Extractor);
    let status = orchestrator.status();
    let rows: Vec<_> = status.agents().iter().map(|a| a.id).collect();
    assert!(
        !rows.contains(&failed) && rows.contains(&replacement),
        "{rows:?}"
    );
    let row = status
        .agents()
        .iter()
        .find(|a| a.id == replacement)
        .unwrap();
    assert_eq!(row.role, Role::Extractor);
    assert_eq!(row.capabilities, vec!["pdf".to_string()]);
    assert_eq!(status.pools[0].restarts, 1);
    assert_eq!(status.pools[0].agents, 2);
}

#[test]
fn past_the_restart_limit_the_spec_fails_and_the_rest_goes_on() {
    let orchestrator = Orchestrator::builder()
        .agents(Role::Validator, 1, || {
            |_: &Task, _: &AgentContext| -> Outcome { panic!("always broken") }
        })
        .agents(Role::Researcher, 1, || {
            |_: &Task, _: &AgentContext| Ok(Output::empty())
        })
        .health(HealthConfig::default().max_restarts(3, Duration::from_secs(60)))
        .autoscale(AutoscalePolicy::disabled())
        .build()
        .unwrap();
    let doomed = orchestrator
        .submit_batch((0..10).map(|_| Task::new("check").with_role(Role::Validator)))
        .unwrap();
    let mut seen = Vec::new();
    let limit = await_event(&orchestrator, &mut seen, |e| {
        matches!(e, Event::RestartLimitReached { .. })
    });
    assert!(matches!(
        limit,
        Event::RestartLimitReached {
            role: Role::Validator,
            restarts: 3,
            ..
        }
    ));
    let mut reasons = HashMap::new();
    for id in doomed {
        let result = orchestrator.wait(id, PATIENCE).unwrap();
        assert_eq!(result.status(), TaskStatus::Failed);
        *reasons
            .entry(result.error().unwrap().contains("restart limit"))
            .or_insert(0) += 1;
    }
    // Four ran (and panicked) before the limit; the rest failed because of it.
    assert_eq!(reasons.get(&false), Some(&4), "{reasons:?}");
    assert_eq!(reasons.get(&true), Some(&6), "{reasons:?}");
    let refused = orchestrator.submit(Task::new("check").with_role(Role::Validator));
    assert!(
        matches!(&refused, Err(Error::NoAgentForTask { reason, .. }) if reason.contains("restart limit")),
        "{refused:?}"
    );
    let fine = orchestrator
        .submit(Task::new("search").with_role(Role::Researcher))
        .unwrap();
    assert!(orchestrator.wait(fine, PATIENCE).unwrap().is_success());
    let status = orchestrator.status();
    let validators = status
        .pools
        .iter()
        .find(|p| p.role == Role::Validator)
        .unwrap();
    assert!(validators.failed);
    assert_eq!(validators.restarts, 3);
}

#[test]
fn a_factory_that_panics_counts_as_a_failure_and_trips_the_limit() {
    let orchestrator = Orchestrator::builder()
        .agents(
            Role::Planner,
            1,
            || -> fn(&Task, &AgentContext) -> Outcome { panic!("cannot build this agent") },
        )
        .health(HealthConfig::default().max_restarts(2, Duration::from_secs(60)))
        .build()
        .unwrap();
    let mut seen = Vec::new();
    await_event(&orchestrator, &mut seen, |e| {
        matches!(e, Event::RestartLimitReached { .. })
    });
    assert!(matches!(
        orchestrator.submit(Task::new("plan")),
        Err(Error::NoAgentForTask { .. })
    ));
}

#[test]
fn a_hung_agent_is_detached_and_replaced_and_its_task_runs_again() {
    let hang_once = Arc::new(AtomicBool::new(true));
    let release = Arc::new(AtomicBool::new(false));
    let (agent_hang, agent_release) = (hang_once.clone(), release.clone());
    let orchestrator = Orchestrator::builder()
        .agents(Role::Researcher, 2, move || {
            let (hang, release) = (agent_hang.clone(), agent_release.clone());
            move |task: &Task, _: &AgentContext| {
                if task.kind() == "stuck" && hang.swap(false, Ordering::SeqCst) {
                    let deadline = Instant::now() + PATIENCE;
                    while !release.load(Ordering::SeqCst) && Instant::now() < deadline {
                        thread::sleep(Duration::from_millis(5));
                    }
                }
                Ok(Output::encode(&task.attempt())?)
            }
        })
        .health(quick_health())
        .autoscale(AutoscalePolicy::disabled())
        .build()
        .unwrap();
    let stuck = orchestrator
        .submit(Task::new("stuck").with_max_attempts(2))
        .unwrap();
    // The other agent keeps working meanwhile.
    let others = orchestrator
        .submit_batch((0..20).map(|_| Task::new("other")))
        .unwrap();
    for id in others {
        assert!(orchestrator.wait(id, PATIENCE).unwrap().is_success());
    }
    let result = orchestrator.wait(stuck, PATIENCE).unwrap();
    assert!(result.is_success());
    assert_eq!(
        result.output::<u32>().unwrap(),
        2,
        "the retry is the second attempt"
    );
    let mut seen = Vec::new();
    let hung = await_event(&orchestrator, &mut seen, |e| {
        matches!(e, Event::AgentHung { .. })
    });
    assert!(matches!(hung, Event::AgentHung { task: Some(t), .. } if t == stuck));
    await_event(&orchestrator, &mut seen, |e| {
        matches!(e, Event::AgentReplaced { .. })
    });
    assert_eq!(orchestrator.status().hung_threads, 1);
    assert_eq!(orchestrator.status().agents().len(), 2);
    // Released, the hung thread ends; its late result is ignored and counted.
    release.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + PATIENCE;
    while orchestrator.status().hung_threads > 0 || orchestrator.status().totals.late_results == 0 {
        assert!(
            Instant::now() < deadline,
            "the hung thread was never reaped"
        );
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        orchestrator.result(stuck).unwrap().output::<u32>().unwrap(),
        2
    );
}

#[test]
fn results_a_hung_agent_gathered_are_handed_in_while_it_is_stuck() {
    let (release_tx, release) = crossbeam_channel::bounded::<()>(1);
    let orchestrator = Orchestrator::builder()
        .agents(Role::Researcher, 1, move || {
            let release = release.clone();
            move |task: &Task, _: &AgentContext| {
                if task.kind() == "stuck" {
                    let _ = release.recv_timeout(PATIENCE);
                }
                Ok(Output::empty())
            }
        })
        .health(quick_health())
        .autoscale(AutoscalePolicy::disabled())
        .build()
        .unwrap();
    // Quick tasks first: the agent then takes several queued tasks at once
    // and reports their results together, after the last of them.
    let warm_up = orchestrator
        .submit_batch((0..10).map(|_| Task::new("quick")))
        .unwrap();
    for id in warm_up {
        orchestrator.wait(id, PATIENCE).unwrap();
    }
    // The agent takes the first task at once and the rest as one batch: it
    // holds the results of q1..q5 unreported when "stuck" hangs.
    let mut batch: Vec<Task> = (0..6).map(|_| Task::new("quick")).collect();
    batch.push(Task::new("stuck"));
    let ids = orchestrator.submit_batch(batch).unwrap();
    let mut seen = Vec::new();
    await_event(
        &orchestrator,
        &mut seen,
        |e| matches!(e, Event::AgentHung { task: Some(t), .. } if *t == ids[6]),
    );
    let stuck = orchestrator.wait(ids[6], PATIENCE).unwrap();
    assert_eq!(stuck.status(), TaskStatus::Failed);
    assert!(stuck.error().unwrap().contains("hung"), "{stuck:?}");
    // Handed in when the agent was retired: its thread is still stuck.
    for &id in &ids[..6] {
        let result = orchestrator.wait(id, PATIENCE).unwrap();
        assert!(result.is_success(), "{result:?}");
    }
    release_tx.send(()).unwrap();
    // Only the hung task's own late result is ignored.
    let deadline = Instant::now() + PATIENCE;
    while orchestrator.status().totals.late_results == 0 {
        assert!(Instant::now() < deadline, "the late result never came");
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(orchestrator.status().totals.late_results, 1);
    assert_eq!(orchestrator.status().totals.succeeded, 16);
}

#[test]
fn heartbeats_keep_a_long_task_from_being_taken_for_hung() {
    let orchestrator = Orchestrator::builder()
        .agents(Role::Extractor, 1, || {
            |_: &Task, ctx: &AgentContext| {
                for _ in 0..12 {
                    thread::sleep(Duration::from_millis(50));
                    ctx.heartbeat();
                }
                Ok(Output::empty())
            }
        })
        .health(quick_health())
        .build()
        .unwrap();
    let id = orchestrator.submit(Task::new("long")).unwrap();
    assert!(orchestrator.wait(id, PATIENCE).unwrap().is_success());
    assert!(
        !orchestrator
            .events()
            .try_iter()
            .any(|e| matches!(e, Event::AgentHung { .. }))
    );
}

#[test]
fn a_burst_grows_the_pool_up_to_max_and_idleness_shrinks_it_to_above_min() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (agent_running, agent_peak) = (running.clone(), peak.clone());
    let orchestrator = Orchestrator::builder()
        .agents(Role::Extractor, 2, move || {
            let (running, peak) = (agent_running.clone(), agent_peak.clone());
            move |_: &Task, _: &AgentContext| {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(10));
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(Output::empty())
            }
        })
        .min_agents(2)
        .max_agents(6)
        .autoscale(AutoscalePolicy::default().cooldown(Duration::from_millis(5)))
        .health(quick_health())
        .build()
        .unwrap();
    let ids = orchestrator
        .submit_batch((0..300).map(|_| Task::new("page")))
        .unwrap();
    let mut max_seen = 0;
    for id in ids {
        assert!(orchestrator.wait(id, PATIENCE).unwrap().is_success());
        max_seen = max_seen.max(orchestrator.status().pools[0].agents);
    }
    assert!(max_seen > 2, "the pool never grew");
    assert!(
        max_seen <= 6 && peak.load(Ordering::SeqCst) <= 6,
        "above max"
    );
    let mut seen = Vec::new();
    await_event(&orchestrator, &mut seen, |e| {
        matches!(e, Event::ScaledUp { .. })
    });
    // Idle: shrinks while more than 3 are idle and the pool is above min.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let pool = orchestrator.status().pools[0].clone();
        if pool.agents == 3 {
            assert!(pool.scaled_down >= 1);
            break;
        }
        assert!(pool.agents >= 2, "below min: {pool:?}");
        assert!(Instant::now() < deadline, "never shrank: {pool:?}");
        thread::sleep(Duration::from_millis(10));
    }
    // Stable at 3: three idle agents are not "more than 3".
    thread::sleep(Duration::from_millis(100));
    assert_eq!(orchestrator.status().pools[0].agents, 3);
}

#[test]
fn a_pool_that_starts_below_min_is_never_shrunk_below_its_start() {
    let orchestrator = Orchestrator::builder()
        .agents(Role::Planner, 1, || {
            |_: &Task, _: &AgentContext| Ok(Output::empty())
        })
        .min_agents(2)
        .autoscale(AutoscalePolicy::default().scale_down_when_idle_exceeds(0))
        .health(quick_health())
        .build()
        .unwrap();
    thread::sleep(Duration::from_millis(100));
    assert_eq!(orchestrator.status().pools[0].agents, 1);
}

#[test]
fn an_agent_hung_in_on_message_is_detached_and_the_task_handed_to_it_runs_elsewhere() {
    struct Stalling {
        entered: crossbeam_channel::Sender<AgentId>,
        stall_once: Arc<AtomicBool>,
        release: Arc<AtomicBool>,
    }
    impl agentry::Agent for Stalling {
        fn execute(&mut self, _: &Task, _: &AgentContext) -> Outcome {
            Ok(Output::empty())
        }
        fn on_message(&mut self, _: Message, ctx: &AgentContext) {
            if self.stall_once.swap(false, Ordering::SeqCst) {
                let _ = self.entered.send(ctx.id());
                let deadline = Instant::now() + PATIENCE;
                while !self.release.load(Ordering::SeqCst) && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    let (entered_tx, entered) = crossbeam_channel::unbounded();
    let stall_once = Arc::new(AtomicBool::new(true));
    let release = Arc::new(AtomicBool::new(false));
    let agent_release = release.clone();
    let orchestrator = Orchestrator::builder()
        .agents(Role::Researcher, 1, move || Stalling {
            entered: entered_tx.clone(),
            stall_once: stall_once.clone(),
            release: agent_release.clone(),
        })
        .min_agents(1)
        .health(quick_health())
        .autoscale(AutoscalePolicy::disabled())
        .build()
        .unwrap();
    let agent = orchestrator.status().agents[0].id;
    orchestrator
        .broker()
        .send(agentry::ORCHESTRATOR_ID, agent, "stall")
        .unwrap();
    assert_eq!(entered.recv_timeout(PATIENCE).unwrap(), agent);

    // The only agent is idle in the pool's eyes: the task is handed to it.
    let id = orchestrator.submit(Task::new("t")).unwrap();
    let result = orchestrator.wait(id, PATIENCE).unwrap();
    assert!(result.is_success(), "{result:?}");
    assert_ne!(result.agent(), Some(agent), "ran on the replacement");
    let mut seen = Vec::new();
    let hung = await_event(
        &orchestrator,
        &mut seen,
        |e| matches!(e, Event::AgentHung { agent: a, .. } if *a == agent),
    );
    assert!(
        matches!(hung, Event::AgentHung { task: None, .. }),
        "{hung:?}"
    );
    await_event(
        &orchestrator,
        &mut seen,
        |e| matches!(e, Event::AgentReplaced { failed, .. } if *failed == agent),
    );

    release.store(true, Ordering::SeqCst);
    orchestrator.shutdown().unwrap();
}

#[test]
fn chaos_panics_and_hangs_lose_no_task() {
    const TASKS: usize = 10_000;
    const ATTEMPTS: u32 = 6;
    let starts: Arc<Vec<AtomicU32>> = Arc::new((0..=TASKS).map(|_| AtomicU32::new(0)).collect());
    let hangs_left = Arc::new(AtomicU32::new(3));
    let agent_starts = starts.clone();
    let agent_hangs = hangs_left.clone();
    let orchestrator = Orchestrator::builder()
        .agents(Role::Validator, 4, move || {
            let (starts, hangs) = (agent_starts.clone(), agent_hangs.clone());
            let mut rng = 0x9e37_79b9_7f4a_7c15u64;
            move |task: &Task, _: &AgentContext| {
                let n: usize = task.input()?;
                starts[n].fetch_add(1, Ordering::SeqCst);
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                if rng % 10 == 0 {
                    panic!("chaos");
                }
                if rng % 997 == 1
                    && hangs
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |h| h.checked_sub(1))
                        .is_ok()
                {
                    thread::sleep(Duration::from_millis(600));
                }
                Ok(Output::encode(&n)?)
            }
        })
        .min_agents(2)
        .max_agents(8)
        .health(quick_health().max_restarts(10_000, Duration::from_secs(1)))
        .build()
        .unwrap();
    let ids = orchestrator
        .submit_batch((1..=TASKS).map(|n| {
            Task::new("validate")
                .with_max_attempts(ATTEMPTS)
                .with_input(&n)
                .unwrap()
        }))
        .unwrap();
    let mut outcomes = HashMap::new();
    for (n, id) in (1..=TASKS).zip(&ids) {
        let result = orchestrator.wait(*id, PATIENCE).unwrap();
        match result.status() {
            TaskStatus::Succeeded => assert_eq!(result.output::<usize>().unwrap(), n),
            TaskStatus::Failed => assert_eq!(result.attempts(), ATTEMPTS, "{result:?}"),
            other => panic!("{other:?}: {result:?}"),
        }
        *outcomes.entry(result.status()).or_insert(0) += 1;
        let pool = orchestrator.status().pools[0].agents;
        assert!(pool <= 8, "pool of {pool} above max");
    }
    assert_eq!(outcomes.values().sum::<usize>(), TASKS);
    // No attempt beyond the last: a hung attempt's retry is one of them.
    assert!(starts.iter().all(|s| s.load(Ordering::SeqCst) <= ATTEMPTS));
    let status = orchestrator.status();
    assert_eq!(status.totals.finished(), TASKS as u64);
    assert!(status.pools[0].restarts > 0);
    assert!(status.pools[0].agents >= 2);
    let seen: Mutex<Vec<Event>> = Mutex::new(orchestrator.events().try_iter().collect());
    assert!(
        seen.lock()
            .iter()
            .any(|e| matches!(e, Event::AgentReplaced { .. }))
    );
}
