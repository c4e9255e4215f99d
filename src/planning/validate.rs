//! Checks a tree of steps before any of it runs: names, sibling order
//! without cycles, depth. The same checks apply to a plan at submit and to a
//! planner's decomposition when it arrives.

use std::collections::HashMap;

use super::step::Step;

/// Checks `steps`, the children of the step at `parent_path` (which sits at
/// `depth - 1`), and everything below them.
///
/// # Errors
/// A message that names the step at fault and what is wrong with it.
pub(super) fn check_children(
    steps: &[Step],
    parent_path: &str,
    depth: u32,
    max_depth: u32,
) -> Result<(), String> {
    if depth > max_depth {
        return Err(format!(
            "the steps under `{parent_path}` would sit at depth {depth}, deeper than the limit of {max_depth}"
        ));
    }
    sibling_order(steps, parent_path)?;
    for step in steps {
        check_step(step, &join(parent_path, &step.name), depth, max_depth)?;
    }
    Ok(())
}

/// Checks one step (at `path`, `depth`) and its subtree.
pub(super) fn check_step(
    step: &Step,
    path: &str,
    depth: u32,
    max_depth: u32,
) -> Result<(), String> {
    if step.goal.is_some() && !step.children.is_empty() {
        return Err(format!(
            "goal step `{path}` has children of its own: a goal's children come from its planner"
        ));
    }
    if step.goal.is_none() && step.children.is_empty() && step.kind.is_none() {
        return Err(format!(
            "step `{path}` has nothing to run: give it a task kind, children or a goal"
        ));
    }
    if !step.children.is_empty() {
        check_children(&step.children, path, depth + 1, max_depth)?;
    }
    Ok(())
}

/// `parent/name`, the path of a child.
pub(super) fn join(parent: &str, name: &str) -> String {
    format!("{parent}/{name}")
}

/// The order in which siblings may start, every step after those it names
/// in `after`: Kahn's algorithm, taking the earliest declared ready step
/// each round so the order is deterministic.
///
/// # Errors
/// A bad or duplicate name, an unknown sibling, a cycle.
pub(super) fn sibling_order(steps: &[Step], parent_path: &str) -> Result<Vec<usize>, String> {
    let mut index = HashMap::with_capacity(steps.len());
    for (i, step) in steps.iter().enumerate() {
        if step.name.is_empty() || step.name.contains('/') {
            return Err(format!(
                "step {:?} under `{parent_path}` has an invalid name: names are non-empty and contain no `/`",
                step.name
            ));
        }
        if index.insert(step.name.as_str(), i).is_some() {
            return Err(format!(
                "two steps under `{parent_path}` are named `{}`",
                step.name
            ));
        }
    }
    let mut deps: Vec<Vec<usize>> = Vec::with_capacity(steps.len());
    for step in steps {
        let mut mine = Vec::with_capacity(step.after.len());
        for name in &step.after {
            match index.get(name.as_str()) {
                Some(&d) => mine.push(d),
                None => {
                    return Err(format!(
                        "step `{}` runs after `{name}`, which is not a sibling of it under `{parent_path}`",
                        join(parent_path, &step.name)
                    ));
                }
            }
        }
        deps.push(mine);
    }
    let mut placed = vec![false; steps.len()];
    let mut order = Vec::with_capacity(steps.len());
    while order.len() < steps.len() {
        let next = (0..steps.len()).find(|&i| !placed[i] && deps[i].iter().all(|&d| placed[d]));
        match next {
            Some(i) => {
                placed[i] = true;
                order.push(i);
            }
            None => return Err(describe_cycle(steps, &deps, &placed, parent_path)),
        }
    }
    Ok(order)
}

/// Names one cycle among the unplaced steps: each of them waits for another
/// unplaced one, so following those edges must come back to a step seen.
fn describe_cycle(
    steps: &[Step],
    deps: &[Vec<usize>],
    placed: &[bool],
    parent_path: &str,
) -> String {
    let mut seen: Vec<usize> = Vec::new();
    let mut at = placed.iter().position(|p| !p);
    while let Some(i) = at {
        if let Some(start) = seen.iter().position(|&s| s == i) {
            let mut names: Vec<&str> = seen[start..]
                .iter()
                .map(|&s| steps[s].name.as_str())
                .collect();
            names.push(&steps[i].name);
            return format!(
                "cycle in the step dependencies under `{parent_path}`: {}",
                names.join(" -> ")
            );
        }
        seen.push(i);
        at = deps[i].iter().copied().find(|&d| !placed[d]);
    }
    format!("cycle in the step dependencies under `{parent_path}`")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(name: &str) -> Step {
        Step::task(name, "work")
    }

    #[test]
    fn siblings_start_after_what_they_name() {
        let steps = [leaf("c").after("b"), leaf("b").after("a"), leaf("a")];
        assert_eq!(sibling_order(&steps, "root").unwrap(), [2, 1, 0]);
    }

    #[test]
    fn a_cycle_is_named_step_by_step() {
        let steps = [
            leaf("a").after("c"),
            leaf("b").after("a"),
            leaf("c").after("b"),
            leaf("d"),
        ];
        let error = check_children(&steps, "root", 1, 4).unwrap_err();
        assert_eq!(
            error,
            "cycle in the step dependencies under `root`: a -> c -> b -> a"
        );
    }

    #[test]
    fn bad_names_and_unknown_siblings_are_refused() {
        assert!(
            check_children(&[leaf("a"), leaf("a")], "r", 1, 4)
                .unwrap_err()
                .contains("two steps")
        );
        assert!(
            check_children(&[leaf("a/b")], "r", 1, 4)
                .unwrap_err()
                .contains("invalid name")
        );
        assert!(
            check_children(&[leaf("a").after("x")], "r", 1, 4)
                .unwrap_err()
                .contains("not a sibling")
        );
    }

    #[test]
    fn depth_past_the_limit_is_refused() {
        let deep = Step::group("a").child(Step::group("b").child(leaf("c")));
        let error = check_step(&deep, "a", 0, 1).unwrap_err();
        assert!(
            error.contains("depth 2, deeper than the limit of 1"),
            "{error}"
        );
    }
}
