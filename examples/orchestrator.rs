//! The seed's task flow in one screen: four roles, tasks of every priority,
//! a flaky step that retries, a chain of dependencies, and the status table
//! at the end.
//!
//! Run: `cargo run --release --example orchestrator`

use std::thread;
use std::time::Duration;

use agentry::{AgentContext, Orchestrator, Output, Priority, Role, Task, TaskError, TaskStatus};

fn work(task: &Task, ctx: &AgentContext) -> Result<Output, TaskError> {
    // Every agent records what it did in the shared memory.
    ctx.memory().increment(&format!("done/{}", ctx.role()), 1)?;
    match task.kind() {
        "flaky" if task.attempt() < 3 => Err(TaskError::retryable("site busy, try again")),
        "slow" => {
            thread::sleep(Duration::from_millis(20));
            Ok(Output::encode(&format!("{} finished slowly", ctx.id()))?)
        }
        kind => Ok(Output::encode(&format!("{} did {kind}", ctx.id()))?),
    }
}

fn main() -> agentry::Result<()> {
    let orchestrator = Orchestrator::builder()
        .agents(Role::Planner, 1, || work)
        .agents(Role::Researcher, 3, || work)
        .agents(Role::Extractor, 3, || work)
        .agents(Role::Validator, 2, || work)
        .build()?;

    let plan = orchestrator.submit(Task::new("plan").with_role(Role::Planner))?;
    let research = orchestrator.submit_batch((0..12).map(|i| {
        Task::new(if i % 4 == 0 { "slow" } else { "research" })
            .with_role(Role::Researcher)
            .with_priority(if i < 3 {
                Priority::High
            } else {
                Priority::Normal
            })
            .after(plan)
    }))?;
    let extract = orchestrator.submit(
        Task::new("flaky")
            .with_role(Role::Extractor)
            .with_max_attempts(5)
            .after(research[0]),
    )?;
    let validate = orchestrator.submit(
        Task::new("validate")
            .with_role(Role::Validator)
            .with_priority(Priority::Critical)
            .after(extract),
    )?;

    let result = orchestrator.wait(validate, Duration::from_secs(10))?;
    assert_eq!(result.status(), TaskStatus::Succeeded);
    println!("validate: {}", result.output::<String>()?);
    let flaky = orchestrator.wait(extract, Duration::from_secs(10))?;
    println!("flaky step succeeded after {} attempts", flaky.attempts());
    for id in research {
        orchestrator.wait(id, Duration::from_secs(10))?;
    }
    for role in ["planner", "researcher", "extractor", "validator"] {
        let done = orchestrator.memory().get::<i64>(&format!("done/{role}"))?;
        println!("{role:>10}: {} attempts", done.map_or(0, |d| d.value));
    }
    println!("\n{}", orchestrator.status());
    orchestrator.shutdown()
}
