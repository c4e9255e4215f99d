//! What a plan is made of, and what the agents of a plan read and return.

use serde::de::DeserializeOwned;
use serde::ser::SerializeTuple;
use serde::{Deserialize, Serialize, Serializer};

use crate::distributor::{Output, Task};
use crate::error::Result;
use crate::ids::{Priority, Role};

/// One node of a plan: a task to run, a group of sub-steps, or a goal that
/// a planner agent decomposes.
///
/// * [`Step::task`]: runs one task of a kind. With children, it runs after
///   they all succeeded, as their aggregation: its input is then a
///   [`FanIn`] carrying its own input and their outputs in order.
/// * [`Step::group`]: has no task; it succeeds when its children have, and
///   its output is the [`FanIn`] of theirs.
/// * [`Step::goal`]: a [`Role::Planner`] agent receives it as a [`Goal`] and
///   answers with its sub-steps, which then run as a group's children (or
///   an aggregation's, with [`aggregate_with`](Step::aggregate_with)).
///
/// Siblings run in parallel unless ordered with [`after`](Step::after).
/// Steps are serde values, so a planner's decomposition is a list of them.
///
/// ```
/// use agentry::{Priority, Role, Step};
///
/// let report = Step::task("report", "summarise")
///     .with_role(Role::Validator)
///     .child(Step::task("fetch", "fetch").with_role(Role::Researcher).with_input(&"acme.example")?)
///     .child(Step::task("parse", "parse").after("fetch").with_priority(Priority::High))
///     .child(Step::goal("contacts", "find the people behind acme.example"));
/// assert_eq!(report.children().len(), 3);
/// # Ok::<(), agentry::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub(super) name: String,
    pub(super) kind: Option<String>,
    pub(super) goal: Option<String>,
    pub(super) role: Option<Role>,
    pub(super) priority: Priority,
    pub(super) max_attempts: u32,
    pub(super) capabilities: Vec<String>,
    pub(super) input: Vec<u8>,
    pub(super) after: Vec<String>,
    pub(super) children: Vec<Step>,
}

impl Step {
    fn named(name: impl Into<String>) -> Step {
        Step {
            name: name.into(),
            kind: None,
            goal: None,
            role: None,
            priority: Priority::Normal,
            max_attempts: 1,
            capabilities: Vec::new(),
            input: Vec::new(),
            after: Vec::new(),
            children: Vec::new(),
        }
    }

    /// A step that runs one task of `kind`, for any agent, at
    /// [`Priority::Normal`], with an empty input. `name` identifies it among
    /// its siblings (no `/`, which separates the names in a step's path).
    pub fn task(name: impl Into<String>, kind: impl Into<String>) -> Step {
        Step {
            kind: Some(kind.into()),
            ..Step::named(name)
        }
    }

    /// A step with no task of its own: it succeeds when its children have.
    pub fn group(name: impl Into<String>) -> Step {
        Step::named(name)
    }

    /// A step whose children a planner agent makes: it receives `goal` (and
    /// the step's input) as a [`Goal`] and answers with the sub-steps.
    pub fn goal(name: impl Into<String>, goal: impl Into<String>) -> Step {
        Step {
            goal: Some(goal.into()),
            ..Step::named(name)
        }
    }

    /// Once the children succeeded, runs a task of `kind` that combines
    /// their outputs (read with [`FanIn::from_task`]); its output becomes
    /// this step's.
    pub fn aggregate_with(mut self, kind: impl Into<String>) -> Step {
        self.kind = Some(kind.into());
        self
    }

    /// Only agents of this role run the step's task.
    pub fn with_role(mut self, role: Role) -> Step {
        self.role = Some(role);
        self
    }

    /// The priority of the step's tasks (default [`Priority::Normal`]),
    /// its planner's task included.
    pub fn with_priority(mut self, priority: Priority) -> Step {
        self.priority = priority;
        self
    }

    /// How many times the step's task (or its planner's) may run before the
    /// step fails, as [`Task::with_max_attempts`] (default 1; 0 counts as 1).
    /// A failed attempt that is retried, a panic included, does not fail the
    /// step.
    pub fn with_max_attempts(mut self, attempts: u32) -> Step {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Only agents with this capability run the step's task. May repeat.
    pub fn requires(mut self, capability: impl Into<String>) -> Step {
        let capability = capability.into();
        if !self.capabilities.contains(&capability) {
            self.capabilities.push(capability);
        }
        self
    }

    /// The input of the step's task (read with [`Task::input`]), or of its
    /// aggregation ([`FanIn::input`]), or of its planner ([`Goal::input`]).
    ///
    /// # Errors
    /// [`Error::Codec`](crate::Error::Codec) when `input` cannot be encoded.
    pub fn with_input<T: Serialize + ?Sized>(mut self, input: &T) -> Result<Step> {
        self.input = postcard::to_allocvec(input)?;
        Ok(self)
    }

    /// The step starts only once its sibling named `sibling` succeeded.
    /// May repeat.
    pub fn after(mut self, sibling: impl Into<String>) -> Step {
        let sibling = sibling.into();
        if !self.after.contains(&sibling) {
            self.after.push(sibling);
        }
        self
    }

    /// Adds a sub-step. Children's outputs reach their parent in the order
    /// they were added.
    pub fn child(mut self, step: Step) -> Step {
        self.children.push(step);
        self
    }

    /// The step's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kind of the step's task, if it has one.
    pub fn kind(&self) -> Option<&str> {
        self.kind.as_deref()
    }

    /// The sub-steps.
    pub fn children(&self) -> &[Step] {
        &self.children
    }
}

/// What a planner agent receives: the goal to decompose. Read it with
/// [`Goal::from_task`]; answer with [`Goal::decomposition`].
///
/// ```
/// use agentry::{AgentContext, Goal, Output, Step, Task, TaskError};
///
/// fn planner(task: &Task, _: &AgentContext) -> Result<Output, TaskError> {
///     let goal = Goal::from_task(task)?;
///     let site: String = goal.input()?;
///     Ok(Goal::decomposition(&[
///         Step::task("fetch", "fetch").with_input(&site)?,
///         Step::task("parse", "parse").after("fetch"),
///     ])?)
/// }
/// # let _ = planner;
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Goal {
    pub(super) path: String,
    pub(super) description: String,
    pub(super) depth: u32,
    pub(super) input: Vec<u8>,
    pub(super) failure: Option<String>,
}

impl Goal {
    /// Reads the goal a planner task carries.
    ///
    /// # Errors
    /// [`Error::Codec`](crate::Error::Codec) when the task is not a
    /// planner task of a plan.
    pub fn from_task(task: &Task) -> Result<Goal> {
        task.input()
    }

    /// Encodes a decomposition: the sub-steps of the goal, as the planner's
    /// output. Their names must be unique, their `after` must name each
    /// other without a cycle, and there must be at least one.
    ///
    /// # Errors
    /// [`Error::Codec`](crate::Error::Codec) when a step cannot be encoded.
    pub fn decomposition(steps: &[Step]) -> Result<Output> {
        Output::encode(steps)
    }

    /// The goal's path in the plan (`root/research/contacts`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What the goal asks for, as given to [`Step::goal`].
    pub fn description(&self) -> &str {
        &self.description
    }

    /// How deep the goal sits: 0 for the plan's root.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// Decodes the goal step's input.
    ///
    /// # Errors
    /// [`Error::Codec`](crate::Error::Codec) when the input is not a `T`.
    pub fn input<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(postcard::from_bytes(&self.input)?)
    }

    /// On a re-plan, why the previous decomposition failed; `None` on the
    /// first planning.
    pub fn previous_failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }
}

/// What an aggregation step receives: its own input and its children's
/// outputs, in the order the children were declared.
///
/// ```
/// use agentry::{AgentContext, FanIn, Output, Task, TaskError};
///
/// fn total(task: &Task, _: &AgentContext) -> Result<Output, TaskError> {
///     let counts: Vec<u32> = FanIn::from_task(task)?.decode_all()?;
///     Ok(Output::encode(&counts.iter().sum::<u32>())?)
/// }
/// # let _ = total;
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanIn {
    pub(super) input: Vec<u8>,
    pub(super) children: Vec<(String, Output)>,
}

impl FanIn {
    /// Reads the fan-in an aggregation task carries.
    ///
    /// # Errors
    /// [`Error::Codec`](crate::Error::Codec) when the task is not the
    /// aggregation of a plan step.
    pub fn from_task(task: &Task) -> Result<FanIn> {
        task.input()
    }

    /// Decodes the step's own input.
    ///
    /// # Errors
    /// [`Error::Codec`](crate::Error::Codec) when the input is not a `T`.
    pub fn input<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(postcard::from_bytes(&self.input)?)
    }

    /// The children's names and outputs, in declaration order.
    pub fn outputs(&self) -> impl Iterator<Item = (&str, &Output)> {
        self.children.iter().map(|(name, out)| (name.as_str(), out))
    }

    /// Decodes every child's output as a `T`, in declaration order.
    ///
    /// # Errors
    /// [`Error::Codec`](crate::Error::Codec) when an output is not a `T`.
    pub fn decode_all<T: DeserializeOwned>(&self) -> Result<Vec<T>> {
        self.children.iter().map(|(_, out)| out.decode()).collect()
    }

    /// How many children there were.
    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// Whether there were no children.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }
}

/// Already-encoded postcard bytes, serialized as themselves: postcard writes
/// a tuple's elements back to back without a length, and a `u8` as one
/// byte. This is how a step's input reaches its task unchanged through
/// [`Task::with_input`], so the agent decodes it as the type the plan's
/// author encoded.
pub(super) struct Raw<'a>(pub(super) &'a [u8]);

impl Serialize for Raw<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(self.0.len())?;
        for byte in self.0 {
            tuple.serialize_element(byte)?;
        }
        tuple.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_bytes_reach_the_task_unchanged() {
        let encoded = postcard::to_allocvec(&("acme", 7u32, vec![1u8, 2])).unwrap();
        let task = Task::new("t").with_input(&Raw(&encoded)).unwrap();
        let back: (String, u32, Vec<u8>) = task.input().unwrap();
        assert_eq!(back, ("acme".to_string(), 7, vec![1, 2]));
    }
}
