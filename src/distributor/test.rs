use super::*;

/// A distributor over `specs`, with no agents until a test adds some:
/// every task stays queued, so the bookkeeping can be checked without
/// threads.
fn with_specs(specs: Vec<SpecPool>) -> Distributor {
    Distributor::new(
        specs,
        Arc::new(Results::new(100)),
        Scaling {
            policy: AutoscalePolicy::disabled(),
            min: 1,
            max: 1,
        },
        None,
        None,
    )
}

fn pool() -> Distributor {
    with_specs(vec![SpecPool::new(
        Role::Researcher,
        vec!["http".into()],
        1,
    )])
}

fn aging_pool(interval: Duration) -> Distributor {
    let mut d = pool();
    d.aging = Some(Aging::new(interval));
    d
}

fn submit(d: &mut Distributor, task: Task) -> TaskId {
    let mut ids = Vec::new();
    d.submit(vec![task], &mut ids, &mut Effects::default(), |_| {})
        .unwrap();
    ids[0]
}

fn result(d: &Distributor, id: TaskId) -> Option<TaskResult> {
    d.results.get(id)
}

#[test]
fn ids_are_sequential_and_queues_count_by_priority() {
    let mut d = pool();
    let a = submit(&mut d, Task::new("a"));
    let b = submit(&mut d, Task::new("b").with_priority(Priority::Critical));
    let c = submit(
        &mut d,
        Task::new("c").with_role(Role::Researcher).requires("http"),
    );
    assert_eq!((a.get(), b.get(), c.get()), (1, 2, 3));
    assert_eq!(d.queued(), [1, 0, 2, 0]);
}

#[test]
fn close_cancels_queued_and_waiting_tasks_with_a_reason() {
    let mut d = pool();
    let queued = submit(&mut d, Task::new("queued"));
    let waiting = submit(&mut d, Task::new("waiting").after(queued));
    let mut fx = Effects::default();
    d.close(&mut fx);
    for id in [queued, waiting] {
        let result = result(&d, id).unwrap();
        assert_eq!(result.status(), TaskStatus::Cancelled);
        assert!(result.error().unwrap().contains("shut down"), "{result:?}");
    }
    assert_eq!(d.queued(), [0; 4]);
    let mut ids = Vec::new();
    assert!(matches!(
        d.submit(vec![Task::new("late")], &mut ids, &mut fx, |_| {}),
        Err(Error::ShutDown)
    ));
}

#[test]
fn cancel_removes_from_the_queue_and_fails_dependents() {
    let mut d = pool();
    let first = submit(&mut d, Task::new("first"));
    let second = submit(&mut d, Task::new("second").after(first));
    let mut fx = Effects::default();
    assert!(d.cancel(first, "by test", &mut fx).unwrap());
    assert_eq!(d.queued(), [0; 4]);
    assert_eq!(result(&d, first).unwrap().error(), Some("by test"));
    let dependent = result(&d, second).unwrap();
    assert_eq!(dependent.status(), TaskStatus::Failed);
    assert_eq!(
        dependent.error(),
        Some("dependency task-1 was cancelled: by test")
    );
    assert!(!d.cancel(first, "again", &mut fx).unwrap());
    assert!(d.cancel(TaskId::from(99), "unknown", &mut fx).is_err());
}

#[test]
fn a_task_record_keeps_everything_needed_to_run_it_again() {
    let dependency = TaskId::from(3);
    let mut task = Task::new("fetch")
        .with_role(Role::Researcher)
        .requires("http")
        .with_priority(Priority::High)
        .with_timeout(Duration::from_secs(5))
        .with_max_attempts(3)
        .after(dependency)
        .with_input(&"https://example.org")
        .unwrap();
    task.id = TaskId::from(42);
    let bytes = postcard::to_stdvec(&task.to_record(task.dependencies())).unwrap();
    let mut record: TaskRecord = postcard::from_bytes(&bytes).unwrap();
    record.count_takeover();
    let back = Task::from_record(record);
    assert_eq!(back.id(), TaskId::from(42));
    assert_eq!(back.kind(), "fetch");
    assert_eq!(back.role(), Some(&Role::Researcher));
    assert_eq!(back.capabilities(), ["http"]);
    assert_eq!(back.priority(), Priority::High);
    assert_eq!(back.timeout(), Some(Duration::from_secs(5)));
    assert_eq!(back.dependencies(), [dependency]);
    assert_eq!(back.input::<String>().unwrap(), "https://example.org");
    // The takeover counts as an attempt without using up a retry.
    assert_eq!((back.attempt(), back.max_attempts()), (1, 4));
}

#[test]
fn aging_moves_a_task_up_one_level_per_interval_to_the_back_of_the_queue() {
    let interval = Duration::from_secs(10);
    let mut d = aging_pool(interval);
    let start = d.aging.unwrap().started;
    let low = submit(&mut d, Task::new("low").with_priority(Priority::Low));
    let normal = submit(&mut d, Task::new("normal"));
    let mut fx = Effects::default();
    assert_eq!(d.age(start + interval / 2, &mut fx), 0, "too young");
    assert_eq!(d.queued(), [0, 0, 1, 1]);
    // Both waited a whole interval: each moves up one level, no further.
    assert_eq!(d.age(start + interval, &mut fx), 2);
    assert_eq!(d.queued(), [0, 1, 1, 0]);
    let queue = |d: &Distributor, rank: usize| -> Vec<TaskId> {
        d.lanes
            .iter()
            .flat_map(|l| l.queues[rank].iter().map(|t| t.id))
            .collect()
    };
    assert_eq!(queue(&d, 1), [normal]);
    assert_eq!(queue(&d, 2), [low]);
    assert_eq!(
        d.lanes
            .iter()
            .flat_map(|l| &l.queues[2])
            .next()
            .unwrap()
            .priority,
        Priority::Normal
    );
    // A normal task submitted now queues ahead of nothing: the aged low
    // task is at the front of the normal queue, the new one behind it.
    let fresh = submit(&mut d, Task::new("fresh"));
    assert_eq!(queue(&d, 2), [low, fresh]);
    // Two more intervals: the low task is critical, behind the task that
    // was there first; first in, first out holds at every level.
    assert_eq!(d.age(start + interval * 2, &mut fx), 3);
    assert_eq!(queue(&d, 1), [low, fresh]);
    assert_eq!(d.age(start + interval * 3, &mut fx), 2);
    assert_eq!(queue(&d, 0), [normal, low, fresh]);
    // Critical is the top: nothing moves from there.
    assert_eq!(d.age(start + interval * 9, &mut fx), 0);
    assert_eq!(d.queued(), [3, 0, 0, 0]);
}

#[test]
fn without_aging_priorities_stay_strict() {
    let mut d = pool();
    submit(&mut d, Task::new("low").with_priority(Priority::Low));
    let far = Instant::now() + Duration::from_secs(3600);
    assert_eq!(d.age(far, &mut Effects::default()), 0);
    assert_eq!(d.queued(), [0, 0, 0, 1]);
    assert_eq!(d.aging_period(), None);
}

#[test]
fn queued_work_handed_out_to_a_new_idle_agent_starts_with_the_most_urgent() {
    let mut d = pool();
    // Two lanes the one spec serves: any agent, and researchers with http.
    let low = submit(&mut d, Task::new("low").with_priority(Priority::Low));
    let critical = submit(
        &mut d,
        Task::new("critical")
            .with_role(Role::Researcher)
            .with_priority(Priority::Critical),
    );
    let agent = Arc::new(AgentShared::new(AgentId::from(1), Role::Researcher, 0));
    d.add_agent(Arc::clone(&agent), false);
    agent.idle_listed.store(true, Ordering::Relaxed);
    d.specs[0].idle.push_back(Arc::clone(&agent));
    d.hand_out_queued(&mut Effects::default());
    let handed: Vec<TaskId> = agent.batch.lock().tasks.iter().map(|t| t.id).collect();
    assert_eq!(handed, [critical]);
    // Handed over but not started: it still counts as waiting to start.
    assert_eq!(d.queued(), [1, 0, 0, 1], "{low} waits for the next agent");
}

#[test]
fn equally_loaded_idle_agents_of_two_specs_take_turns() {
    let mut d = with_specs(vec![
        SpecPool::new(Role::Researcher, Vec::new(), 1),
        SpecPool::new(Role::Researcher, Vec::new(), 1),
    ]);
    let mut taken = Vec::new();
    for _ in 0..4 {
        // One idle agent in each spec, neither has run anything.
        for spec in 0..2 {
            let agent = Arc::new(AgentShared::new(
                AgentId::from(spec as u64 + 1),
                Role::Researcher,
                spec,
            ));
            agent.idle_listed.store(true, Ordering::Relaxed);
            d.specs[spec].idle.clear();
            d.specs[spec].idle.push_back(agent);
        }
        let id = submit(&mut d, Task::new("t").with_role(Role::Researcher));
        let spec = (0..2)
            .find(|&s| d.specs[s].idle.is_empty())
            .expect("one agent was handed the task");
        assert!(d.is_live(id));
        taken.push(spec);
    }
    assert!(
        taken.contains(&0) && taken.contains(&1),
        "ties rotate: {taken:?}"
    );
}

/// A distributor whose one spec has `n` idle agents.
fn idle_agents(n: u64) -> (Distributor, Vec<Arc<AgentShared>>) {
    let mut d = with_specs(vec![SpecPool::new(Role::Researcher, Vec::new(), 1)]);
    let agents: Vec<_> = (1..=n)
        .map(|id| Arc::new(AgentShared::new(AgentId::from(id), Role::Researcher, 0)))
        .collect();
    for agent in &agents {
        d.add_agent(Arc::clone(agent), false);
        agent.idle_listed.store(true, Ordering::Relaxed);
        d.specs[0].idle.push_back(Arc::clone(agent));
    }
    (d, agents)
}

/// The agents `start_early` was given, and the tasks queued per priority
/// when it was called.
type EarlyStart = (Vec<AgentId>, [usize; 4]);

/// Submits `tasks`; returns their ids and what `start_early` saw (`None`
/// when it was not called).
fn submit_watching_early_start(
    d: &mut Distributor,
    tasks: Vec<Task>,
) -> (Vec<TaskId>, Option<EarlyStart>) {
    let mut ids = Vec::new();
    let mut fx = Effects::default();
    let mut early = None;
    let queued_before = d.queued;
    d.submit(tasks, &mut ids, &mut fx, |fx| {
        early = Some((fx.wake.iter().map(|a| a.id).collect(), queued_before));
    })
    .unwrap();
    (ids, early)
}

#[test]
fn a_large_batch_starts_idle_agents_before_it_queues_the_rest() {
    let (mut d, agents) = idle_agents(3);
    let (ids, early) = submit_watching_early_start(
        &mut d,
        (0..EARLY_START_BATCH).map(|_| Task::new("t")).collect(),
    );
    let (woken, queued) = early.expect("start_early was called");
    assert_eq!(woken.len(), 3);
    assert_eq!(queued, [0; 4], "called before the rest was queued");
    // Each agent holds one of the first three tasks; the rest are queued in
    // order behind them.
    let mut handed: Vec<TaskId> = agents
        .iter()
        .flat_map(|a| {
            a.batch
                .lock()
                .tasks
                .iter()
                .map(|t| t.id)
                .collect::<Vec<_>>()
        })
        .collect();
    handed.sort_unstable();
    assert_eq!(handed, ids[..3]);
    assert_eq!(d.queued()[Priority::Normal.rank()], EARLY_START_BATCH);
}

#[test]
fn a_small_batch_or_one_led_by_a_task_a_later_one_outranks_is_not_started_early() {
    let (mut d, _) = idle_agents(2);
    let small: Vec<Task> = (1..EARLY_START_BATCH).map(|_| Task::new("t")).collect();
    assert!(submit_watching_early_start(&mut d, small).1.is_none());

    let (mut d, agents) = idle_agents(1);
    let mut tasks: Vec<Task> = (0..EARLY_START_BATCH)
        .map(|_| Task::new("low").with_priority(Priority::Low))
        .collect();
    tasks.push(Task::new("critical").with_priority(Priority::Critical));
    let (ids, early) = submit_watching_early_start(&mut d, tasks);
    assert!(early.is_none());
    // The low task first handed to the agent was taken back: the agent,
    // woken after the submit, takes the critical task, last in the batch.
    assert!(agents[0].batch.lock().tasks.is_empty());
    assert!(d.next_batch(&agents[0], &mut Effects::default()));
    let handed: Vec<TaskId> = agents[0].batch.lock().tasks.iter().map(|t| t.id).collect();
    assert_eq!(handed, [*ids.last().unwrap()]);
}

#[test]
fn a_failed_agent_s_place_is_kept_for_its_replacement_not_filled_by_scaling() {
    let mut d = with_specs(vec![SpecPool::new(Role::Researcher, Vec::new(), 2)]);
    d.scaling = Scaling {
        policy: AutoscalePolicy::default(),
        min: 1,
        max: 2,
    };
    // A full pool, every agent busy, a long queue: scaling would grow it.
    let agents: Vec<_> = (1..=2)
        .map(|id| Arc::new(AgentShared::new(AgentId::from(id), Role::Researcher, 0)))
        .collect();
    for agent in &agents {
        d.add_agent(Arc::clone(agent), false);
    }
    for _ in 0..20 {
        submit(&mut d, Task::new("t"));
    }
    let mut fx = Effects::default();
    assert!(d.retire_for_replacement(&agents[0], &mut fx));
    assert!(
        !d.retire_for_replacement(&agents[0], &mut fx),
        "out already"
    );
    d.autoscale(Instant::now(), &mut fx);
    assert!(fx.scale_up.is_empty(), "the replacement's place was filled");
    // The replacement takes its place; one that never comes gives it back.
    let replacement = Arc::new(AgentShared::new(AgentId::from(3), Role::Researcher, 0));
    d.add_agent(replacement, true);
    d.autoscale(Instant::now(), &mut fx);
    assert!(fx.scale_up.is_empty());
    assert!(d.retire_for_replacement(&agents[1], &mut fx));
    d.release_reserved(0);
    d.autoscale(Instant::now(), &mut fx);
    assert_eq!(fx.scale_up, [0]);
}

#[test]
fn a_task_handed_to_an_idle_agent_names_the_one_next_in_line() {
    let (mut d, agents) = idle_agents(3);
    assert!(d.is_next_in_line(&agents[0]));
    let mut fx = Effects::default();
    let mut ids = Vec::new();
    d.submit(vec![Task::new("t")], &mut ids, &mut fx, |_| {})
        .unwrap();
    // The first agent took it; the second is the one the next task goes to.
    assert!(Arc::ptr_eq(&fx.wake[0], &agents[0]));
    let next = fx.next_in_line.take().expect("an agent is next in line");
    assert!(Arc::ptr_eq(&next, &agents[1]));
    assert!(d.is_next_in_line(&agents[1]));
    assert!(!d.is_next_in_line(&agents[2]));
    // Two tasks for the last two idle agents leave no idle agent in line
    // (the one named, if any, is one just handed work: not woken again).
    let mut fx = Effects::default();
    d.submit(
        vec![Task::new("t"), Task::new("t")],
        &mut ids,
        &mut fx,
        |_| {},
    )
    .unwrap();
    assert_eq!(fx.wake.len(), 2);
    assert!(
        fx.next_in_line
            .is_none_or(|a| !a.idle_listed.load(Ordering::Relaxed))
    );
}

#[test]
fn tasks_taken_back_for_an_urgent_one_go_to_an_idle_agent_of_another_pool() {
    // Pool 0 serves lanes "a" and "b"; pool 1 only "b".
    let mut d = with_specs(vec![
        SpecPool::new(Role::Researcher, vec!["a".into(), "b".into()], 1),
        SpecPool::new(Role::Researcher, vec!["b".into()], 1),
    ]);
    let both = Arc::new(AgentShared::new(AgentId::from(1), Role::Researcher, 0));
    let only_b = Arc::new(AgentShared::new(AgentId::from(2), Role::Researcher, 1));
    d.add_agent(Arc::clone(&both), false);
    d.add_agent(Arc::clone(&only_b), false);
    both.idle_listed.store(true, Ordering::Relaxed);
    d.specs[0].idle.push_back(Arc::clone(&both));
    // A low "b" task handed to the agent of pool 0, not started yet.
    let low = submit(
        &mut d,
        Task::new("low").requires("b").with_priority(Priority::Low),
    );
    assert_eq!(both.batch.lock().tasks.len(), 1);
    // Pool 1's agent goes idle; then an urgent "a" task finds no idle agent
    // that can run it, and takes the low task back to the queue.
    only_b.idle_listed.store(true, Ordering::Relaxed);
    d.specs[1].idle.push_back(Arc::clone(&only_b));
    submit(
        &mut d,
        Task::new("urgent")
            .requires("a")
            .with_priority(Priority::High),
    );
    assert!(both.batch.lock().tasks.is_empty());
    let handed: Vec<TaskId> = only_b.batch.lock().tasks.iter().map(|t| t.id).collect();
    assert_eq!(handed, [low], "the idle agent that can run it has it");
    // The urgent task waits for an agent; the low one waits to start.
    assert_eq!(d.queued(), [0, 1, 0, 1]);
}
