//! Hierarchical planning: planner-driven decomposition and its depth limit, fan-in order, branch failure and re-planning, cancellation, refused trees.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agentry::{
    AgentContext, AutoscalePolicy, Error, FanIn, Goal, Orchestrator, Output, Plan, Role, Step,
    Task, TaskError, TaskStatus,
};

const LONG: Duration = Duration::from_secs(30);

type Reply = Result<Output, TaskError>;

/// Workers that echo their input string, and fail tasks of kind "fail".
fn workers(builder: agentry::OrchestratorBuilder) -> agentry::OrchestratorBuilder {
    builder
        .autoscale(AutoscalePolicy::disabled())
        .agents(Role::Researcher, 2, || {
            |task: &Task, _: &AgentContext| -> Reply {
                if task.kind() == "fail" {
                    return Err(TaskError::fatal("site down"));
                }
                Ok(Output::encode(&task.input::<String>()?)?)
            }
        })
}

fn leaf(name: &str) -> Step {
    Step::task(name, "echo")
        .with_role(Role::Researcher)
        .with_input(name)
        .unwrap()
}

#[test]
fn planner_decomposes_goals_recursively_down_to_leaves() {
    // Goals at depth 0 and 1 split into two sub-goals; at depth 2, into leaves.
    let orchestrator = workers(Orchestrator::builder())
        .agents(Role::Planner, 1, || {
            |task: &Task, _: &AgentContext| -> Reply {
                let goal = Goal::from_task(task)?;
                let steps: Vec<Step> = if goal.depth() < 2 {
                    vec![Step::goal("l", "left"), Step::goal("r", "right")]
                } else {
                    vec![leaf("x"), leaf("y")]
                };
                Ok(Goal::decomposition(&steps)?)
            }
        })
        .build()
        .unwrap();
    let mut plan = Plan::new(Step::goal("root", "everything"))
        .max_depth(3)
        .submit(&orchestrator)
        .unwrap();
    let tree = plan.wait_timeout(LONG).unwrap();
    assert!(tree.is_success(), "{tree}");
    let leaf = tree.find("root/r/l/y").expect("a leaf three levels down");
    assert_eq!(leaf.output::<String>().unwrap(), "y");
    let totals: Vec<(usize, usize)> = plan
        .progress()
        .levels()
        .iter()
        .map(|l| (l.done, l.total))
        .collect();
    assert_eq!(totals, [(1, 1), (2, 2), (4, 4), (8, 8)]);
}

#[test]
fn decomposition_deeper_than_the_limit_fails_the_goal() {
    let orchestrator = workers(Orchestrator::builder())
        .agents(Role::Planner, 1, || {
            |_: &Task, _: &AgentContext| -> Reply {
                Ok(Goal::decomposition(&[Step::goal("deeper", "again")])?)
            }
        })
        .build()
        .unwrap();
    let mut plan = Plan::new(Step::goal("root", "forever"))
        .max_depth(2)
        .submit(&orchestrator)
        .unwrap();
    let tree = plan.wait_timeout(LONG).unwrap();
    assert_eq!(tree.status(), TaskStatus::Failed);
    let error = tree.error().unwrap();
    assert!(
        error.contains("root/deeper/deeper") && error.contains("deeper than the limit of 2"),
        "{error}"
    );
}

#[test]
fn a_submitted_tree_deeper_than_the_limit_is_refused() {
    let orchestrator = workers(Orchestrator::builder()).build().unwrap();
    let tree = Step::group("root").child(Step::group("a").child(leaf("b")));
    match Plan::new(tree).max_depth(1).submit(&orchestrator) {
        Err(Error::InvalidInput(why)) => assert!(why.contains("depth 2"), "{why}"),
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

#[test]
fn aggregation_receives_child_outputs_in_declaration_order() {
    // Later children finish first: the fan-in still follows declaration.
    let orchestrator = Orchestrator::builder()
        .autoscale(AutoscalePolicy::disabled())
        .agents(Role::Extractor, 4, || {
            |task: &Task, _: &AgentContext| -> Reply {
                let n: u64 = task.input()?;
                std::thread::sleep(Duration::from_millis(40 - 10 * n));
                Ok(Output::encode(&n)?)
            }
        })
        .agents(Role::Validator, 1, || {
            |task: &Task, _: &AgentContext| -> Reply {
                let fan_in = FanIn::from_task(task)?;
                let names: Vec<String> = fan_in.outputs().map(|(n, _)| n.to_owned()).collect();
                let values: Vec<u64> = fan_in.decode_all()?;
                let label: String = fan_in.input()?;
                Ok(Output::encode(&(label, names, values))?)
            }
        })
        .build()
        .unwrap();
    let mut root = Step::task("collect", "combine")
        .with_role(Role::Validator)
        .with_input("sum")
        .unwrap();
    for n in 0..4u64 {
        let child = Step::task(format!("c{n}"), "count").with_role(Role::Extractor);
        root = root.child(child.with_input(&n).unwrap());
    }
    let tree = Plan::new(root)
        .submit(&orchestrator)
        .unwrap()
        .wait_timeout(LONG)
        .unwrap();
    let (label, names, values): (String, Vec<String>, Vec<u64>) = tree.output().unwrap();
    assert_eq!(label, "sum");
    assert_eq!(names, ["c0", "c1", "c2", "c3"]);
    assert_eq!(values, [0, 1, 2, 3]);
}

#[test]
fn a_group_outputs_the_fan_in_of_its_children() {
    let orchestrator = workers(Orchestrator::builder()).build().unwrap();
    let root = Step::group("g")
        .child(leaf("a"))
        .child(leaf("b").after("a"));
    let tree = Plan::new(root)
        .submit(&orchestrator)
        .unwrap()
        .wait_timeout(LONG)
        .unwrap();
    let fan_in: FanIn = tree.output().unwrap();
    assert_eq!(fan_in.decode_all::<String>().unwrap(), ["a", "b"]);
}

#[test]
fn failed_leaf_fails_its_branch_with_the_reason() {
    let orchestrator = workers(Orchestrator::builder()).build().unwrap();
    let root = Step::group("root")
        .child(leaf("a"))
        .child(Step::task("b", "fail").with_role(Role::Researcher))
        .child(leaf("c").after("b"));
    let tree = Plan::new(root)
        .submit(&orchestrator)
        .unwrap()
        .wait_timeout(LONG)
        .unwrap();
    assert_eq!(tree.status(), TaskStatus::Failed);
    assert_eq!(tree.error(), Some("step `root/b` failed: site down"));
    let b = tree.find("root/b").unwrap();
    assert_eq!(
        (b.status(), b.error()),
        (TaskStatus::Failed, Some("site down"))
    );
    assert_eq!(tree.find("root/c").unwrap().status(), TaskStatus::Cancelled);
}

#[test]
fn failed_branch_is_replanned_once_when_enabled() {
    let planned = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&planned);
    let orchestrator = workers(Orchestrator::builder())
        .agents(Role::Planner, 1, move || {
            let count = Arc::clone(&count);
            move |task: &Task, _: &AgentContext| -> Reply {
                count.fetch_add(1, Ordering::SeqCst);
                let goal = Goal::from_task(task)?;
                let step = match goal.previous_failure() {
                    None => Step::task("flaky", "fail").with_role(Role::Researcher),
                    Some(why) => leaf("steady").with_input(why)?,
                };
                Ok(Goal::decomposition(&[step])?)
            }
        })
        .build()
        .unwrap();
    let tree = Plan::new(Step::goal("root", "get it done"))
        .replan_failed_branches()
        .submit(&orchestrator)
        .unwrap()
        .wait_timeout(LONG)
        .unwrap();
    assert!(tree.is_success(), "{tree}");
    assert!(tree.was_replanned());
    assert_eq!(planned.load(Ordering::SeqCst), 2);
    let steady = tree.find("root/steady").unwrap();
    assert_eq!(
        steady.output::<String>().unwrap(),
        "step `root/flaky` failed: site down"
    );
    assert!(
        tree.find("root/flaky").is_none(),
        "the failed decomposition is replaced"
    );
}

#[test]
fn a_goal_is_replanned_at_most_once() {
    let orchestrator = workers(Orchestrator::builder())
        .agents(Role::Planner, 1, || {
            |_: &Task, _: &AgentContext| -> Reply {
                let step = Step::task("flaky", "fail").with_role(Role::Researcher);
                Ok(Goal::decomposition(&[step])?)
            }
        })
        .build()
        .unwrap();
    let tree = Plan::new(Step::goal("root", "hopeless"))
        .replan_failed_branches()
        .submit(&orchestrator)
        .unwrap()
        .wait_timeout(LONG)
        .unwrap();
    assert_eq!(tree.status(), TaskStatus::Failed);
    assert!(tree.was_replanned());
    assert_eq!(tree.error(), Some("step `root/flaky` failed: site down"));
}

#[test]
fn cancelling_a_plan_cancels_its_unfinished_tasks() {
    let (started_tx, started) = crossbeam_channel::unbounded::<()>();
    let (release, gate) = crossbeam_channel::unbounded::<()>();
    let orchestrator = Orchestrator::builder()
        .autoscale(AutoscalePolicy::disabled())
        .agents(Role::Researcher, 1, move || {
            let (started_tx, gate) = (started_tx.clone(), gate.clone());
            move |_: &Task, _: &AgentContext| -> Reply {
                let _ = started_tx.send(());
                let _ = gate.recv_timeout(LONG);
                Ok(Output::empty())
            }
        })
        .build()
        .unwrap();
    let step = |name: &str| Step::task(name, "slow").with_role(Role::Researcher);
    let root = Step::group("root")
        .child(step("a"))
        .child(step("b").after("a"))
        .child(step("c").after("b"));
    let mut plan = Plan::new(root).submit(&orchestrator).unwrap();
    started.recv_timeout(LONG).expect("a starts");
    let b_task = plan
        .tree()
        .find("root/b")
        .unwrap()
        .task()
        .expect("b waits on a in the orchestrator");
    assert_eq!(plan.cancel(), 4, "root, a, b and c were unfinished");
    let tree = plan.try_result().expect("a cancelled plan has ended");
    assert_eq!(tree.status(), TaskStatus::Cancelled);
    assert!(
        tree.children()
            .iter()
            .all(|c| c.status() == TaskStatus::Cancelled)
    );
    assert_eq!(
        orchestrator.wait(b_task, LONG).unwrap().status(),
        TaskStatus::Cancelled
    );
    release.send(()).unwrap();
}

#[test]
fn cyclic_step_dependencies_are_refused_at_submit() {
    let orchestrator = workers(Orchestrator::builder()).build().unwrap();
    let root = Step::group("root")
        .child(leaf("a").after("b"))
        .child(leaf("b").after("a"));
    match Plan::new(root).submit(&orchestrator) {
        Err(Error::InvalidInput(why)) => assert_eq!(
            why,
            "cycle in the step dependencies under `root`: a -> b -> a"
        ),
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

#[test]
fn planner_answers_that_are_empty_or_malformed_fail_the_goal_precisely() {
    let orchestrator = workers(Orchestrator::builder())
        .agents(Role::Planner, 1, || {
            |task: &Task, _: &AgentContext| -> Reply {
                match Goal::from_task(task)?.description() {
                    "empty" => Ok(Goal::decomposition(&[])?),
                    "cyclic" => Ok(Goal::decomposition(&[leaf("a").after("a")])?),
                    _ => Ok(Output::encode(&"not a list of steps")?),
                }
            }
        })
        .build()
        .unwrap();
    for (goal, expected) in [
        (
            "empty",
            "the planner of goal `g` returned an empty decomposition",
        ),
        (
            "cyclic",
            "returned an invalid decomposition: cycle in the step dependencies under `g`: a -> a",
        ),
        (
            "garbage",
            "the planner of goal `g` returned a malformed decomposition: codec error",
        ),
    ] {
        let tree = Plan::new(Step::goal("g", goal))
            .submit(&orchestrator)
            .unwrap()
            .wait_timeout(LONG)
            .unwrap();
        assert_eq!(tree.status(), TaskStatus::Failed);
        let error = tree.error().unwrap();
        assert!(error.contains(expected), "{goal}: {error}");
    }
}

#[test]
fn a_step_no_agent_can_serve_fails_with_the_orchestrators_reason() {
    let orchestrator = workers(Orchestrator::builder()).build().unwrap();
    let tree = Plan::new(Step::goal("g", "nobody plans"))
        .submit(&orchestrator)
        .unwrap()
        .wait_timeout(LONG)
        .unwrap();
    let error = tree.error().unwrap();
    assert!(
        error.starts_with("step `g` could not be submitted: no agent can serve"),
        "{error}"
    );
}

#[test]
fn steps_with_max_attempts_survive_failed_and_panicking_attempts() {
    // The planner panics on its first attempt, the leaf fails twice: both
    // are retried within their steps' attempts and the plan succeeds.
    let orchestrator = Orchestrator::builder()
        .autoscale(AutoscalePolicy::disabled())
        .agents(Role::Planner, 1, || {
            |task: &Task, _: &AgentContext| -> Reply {
                if task.attempt() == 1 {
                    panic!("planner crashed");
                }
                let leaf = Step::task("flaky", "flaky")
                    .with_role(Role::Researcher)
                    .with_max_attempts(3);
                Ok(Goal::decomposition(&[leaf])?)
            }
        })
        .agents(Role::Researcher, 1, || {
            |task: &Task, _: &AgentContext| -> Reply {
                if task.attempt() < 3 {
                    return Err(TaskError::retryable("not yet"));
                }
                Ok(Output::encode(&task.attempt())?)
            }
        })
        .build()
        .unwrap();
    let goal = Step::goal("root", "retry me").with_max_attempts(2);
    let tree = Plan::new(goal)
        .submit(&orchestrator)
        .unwrap()
        .wait_timeout(LONG)
        .unwrap();
    assert!(tree.is_success(), "{:?}", tree.error());
    assert_eq!(tree.find("root/flaky").unwrap().output::<u32>().unwrap(), 3);

    // Without the attempts, the first failure fails the step.
    let tree = Plan::new(Step::task("once", "flaky").with_role(Role::Researcher))
        .submit(&orchestrator)
        .unwrap()
        .wait_timeout(LONG)
        .unwrap();
    assert_eq!(tree.status(), TaskStatus::Failed);
}
