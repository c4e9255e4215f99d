//! Executable steps: the actions an application registers, and how a
//! skill's run reports the step that failed.

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::distributor::{Output, TaskError};
use crate::error::{Error, Result};

/// A registered action, shared by every run that uses it.
pub(super) type Action =
    Arc<dyn Fn(&ActionCall<'_>) -> std::result::Result<Output, TaskError> + Send + Sync>;

/// What an action receives when a skill's step runs it: the step's
/// parameters and the previous step's output (the run's input for the first
/// step).
#[derive(Debug)]
pub struct ActionCall<'a> {
    pub(super) skill: &'a str,
    pub(super) step: usize,
    pub(super) params: &'a [u8],
    pub(super) input: &'a Output,
}

impl ActionCall<'_> {
    /// The skill being run.
    pub fn skill(&self) -> &str {
        self.skill
    }

    /// The step's position in the skill, from 0.
    pub fn step(&self) -> usize {
        self.step
    }

    /// Decodes the step's parameters.
    ///
    /// # Errors
    /// [`Error::Codec`] when they are not a `T`.
    pub fn params<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(postcard::from_bytes(self.params)?)
    }

    /// The previous step's output, or the run's input for the first step.
    pub fn input(&self) -> &Output {
        self.input
    }
}

/// Why running a skill did not give an output.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SkillRunError {
    /// Nothing ran: the skill is unknown or retired, a step names an action
    /// that is not registered, or the library could not be read or updated.
    #[error(transparent)]
    Refused(#[from] Error),

    /// A step's action returned an error; the steps after it did not run.
    /// The failure was recorded in the skill's statistics.
    #[error("step {step} ({action}) of skill {skill:?} failed: {reason}")]
    StepFailed {
        /// The skill.
        skill: String,
        /// The failed step's position, from 0.
        step: usize,
        /// The failed step's action.
        action: String,
        /// The action's error.
        reason: TaskError,
    },
}

impl SkillRunError {
    /// The failed step's position, when a step failed.
    pub fn failed_step(&self) -> Option<usize> {
        match self {
            SkillRunError::StepFailed { step, .. } => Some(*step),
            SkillRunError::Refused(_) => None,
        }
    }
}

/// So an agent that runs a skill can fail its task with `?`; retryable
/// exactly when the failed action said so (a refusal is not).
impl From<SkillRunError> for TaskError {
    fn from(error: SkillRunError) -> TaskError {
        match &error {
            SkillRunError::StepFailed { reason, .. } if reason.is_retryable() => {
                TaskError::retryable(error.to_string())
            }
            _ => TaskError::fatal(error.to_string()),
        }
    }
}

/// The registered actions, by name.
#[derive(Default)]
pub(super) struct Actions(pub(super) std::collections::HashMap<String, Action>);

impl fmt::Debug for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.0.keys().collect();
        names.sort();
        f.debug_set().entries(names).finish()
    }
}
