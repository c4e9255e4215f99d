use super::*;

fn pool() -> Distributor {
    // A spec with no agents: every task stays queued, so the distributor's
    // bookkeeping can be checked without threads.
    Distributor::new(
        vec![SpecPool::new(Role::Researcher, vec!["http".into()], 1)],
        Arc::new(Results::new(100)),
        Scaling {
            policy: AutoscalePolicy::disabled(),
            min: 1,
            max: 1,
        },
        None,
    )
}

fn submit(d: &mut Distributor, task: Task) -> TaskId {
    let mut ids = Vec::new();
    d.submit(vec![task], &mut ids, &mut Effects::default())
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
        d.submit(vec![Task::new("late")], &mut ids, &mut fx),
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
