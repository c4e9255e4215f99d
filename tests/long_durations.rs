//! Durations as long as `Duration::MAX`, wherever a user gives one, are
//! waits that never end by themselves, never an overflow panic.

use std::time::Duration;

use agentry::parallel::run_batch;
use agentry::{
    AgentContext, AgentId, AutoscalePolicy, HealthConfig, MessageBroker, Orchestrator, Output,
    Role, Task, TaskError,
};

const FOREVER: Duration = Duration::MAX;

fn echo(task: &Task, _: &AgentContext) -> Result<Output, TaskError> {
    Ok(Output::encode(&task.kind())?)
}

fn orchestrator() -> Orchestrator {
    Orchestrator::builder()
        .agents(Role::Researcher, 1, || echo)
        .autoscale(AutoscalePolicy::disabled())
        .health(HealthConfig::default().check_interval(FOREVER))
        .shutdown_timeout(FOREVER)
        .build()
        .unwrap()
}

#[test]
fn an_orchestrator_waits_runs_and_shuts_down_with_endless_durations() {
    let orchestrator = orchestrator();
    let id = orchestrator
        .submit(Task::new("endless").with_timeout(FOREVER))
        .unwrap();
    let result = orchestrator.wait(id, FOREVER).unwrap();
    assert_eq!(result.output::<String>().unwrap(), "endless");
    let batch = run_batch(&orchestrator, (0..3).map(|_| Task::new("batch")), FOREVER).unwrap();
    assert_eq!(batch.results().len(), 3);
    orchestrator.shutdown().unwrap();
}

#[test]
fn an_endless_receive_returns_the_waiting_message() {
    let broker = MessageBroker::new(4);
    let mailbox = broker.register(AgentId::from(1)).unwrap();
    broker
        .send(AgentId::from(2), AgentId::from(1), &7u32)
        .unwrap();
    let message = mailbox.recv_timeout(FOREVER).unwrap();
    assert_eq!(message.body::<u32>().unwrap(), 7);
}
