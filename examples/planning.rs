//! A planner agent decomposes a goal into research, extract and validate
//! steps; the plan runs on the orchestrator and its result tree is printed.
//!
//! Data flows up the tree: a parent step receives its children's outputs
//! in order (a `FanIn`), so the pipeline research -> extract -> validate is
//! a chain of parents: `validate` aggregates `extract`, which aggregates the
//! `research` pages.
//!
//! Run with `cargo run --example planning`.

use std::time::Duration;

use agentry::{AgentContext, FanIn, Goal, Orchestrator, Output, Plan, Role, Step, Task, TaskError};

type Reply = Result<Output, TaskError>;

/// Splits "contacts at <site>" into one research step per page, their
/// extraction, and its validation.
fn planner(task: &Task, _: &AgentContext) -> Reply {
    let goal = Goal::from_task(task)?;
    let site: String = goal.input()?;
    let mut extract = Step::task("extract", "extract-emails").with_role(Role::Extractor);
    for page in ["team", "about", "press"] {
        let url = format!("https://{site}/{page}");
        let research = Step::task(page, "fetch").with_role(Role::Researcher);
        extract = extract.child(research.with_input(&url)?);
    }
    let validate = Step::task("validate", "validate-emails")
        .with_role(Role::Validator)
        .with_input(&site)?
        .child(extract);
    Ok(Goal::decomposition(&[validate])?)
}

/// Pretends to fetch a page.
fn researcher(task: &Task, _: &AgentContext) -> Reply {
    let url: String = task.input()?;
    let page = match url.rsplit('/').next() {
        Some("team") => "Ann <ann@acme.example>, Bob <bob@acme.example>",
        Some("about") => "Write to hello@acme.example or spam@elsewhere.example",
        _ => "No addresses here.",
    };
    Ok(Output::encode(page)?)
}

/// Pulls every address out of the fetched pages, in page order.
fn extractor(task: &Task, _: &AgentContext) -> Reply {
    let pages: Vec<String> = FanIn::from_task(task)?.decode_all()?;
    let emails: Vec<String> = pages
        .iter()
        .flat_map(|page| page.split([' ', '<', '>', ',']))
        .filter(|word| word.contains('@'))
        .map(str::to_owned)
        .collect();
    Ok(Output::encode(&emails)?)
}

/// Keeps the addresses of the site asked about.
fn validator(task: &Task, _: &AgentContext) -> Reply {
    let fan_in = FanIn::from_task(task)?;
    let site: String = fan_in.input()?;
    let mut emails: Vec<String> = fan_in.decode_all::<Vec<String>>()?.concat();
    emails.retain(|email| email.ends_with(&format!("@{site}")));
    Ok(Output::encode(&emails)?)
}

fn main() -> agentry::Result<()> {
    let orchestrator = Orchestrator::builder()
        .agents(Role::Planner, 1, || planner)
        .agents(Role::Researcher, 3, || researcher)
        .agents(Role::Extractor, 1, || extractor)
        .agents(Role::Validator, 1, || validator)
        .build()?;

    let goal = Step::goal("contacts", "find the contacts at a site").with_input("acme.example")?;
    let mut plan = Plan::new(goal).submit(&orchestrator)?;
    let tree = plan.wait_timeout(Duration::from_secs(30))?;

    print!("{tree}");
    for level in plan.progress().levels() {
        println!(
            "level {}: {}/{} steps done",
            level.depth, level.done, level.total
        );
    }
    let contacts: Vec<String> = tree
        .find("contacts/validate")
        .map_or(Ok(Vec::new()), |s| s.output())?;
    println!("contacts: {contacts:?}");
    orchestrator.shutdown()
}
