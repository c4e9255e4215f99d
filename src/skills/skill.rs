//! A skill: a named recipe of steps, and what its uses taught.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// A learned, reusable recipe for one kind of task: a name, a description
/// and tags to find it by, the ordered [`SkillStep`]s to follow, and the
/// [`SkillStats`] of its uses.
///
/// ```
/// use agentry::{Skill, SkillStep};
///
/// let skill = Skill::new("scrape-contacts", "extract")
///     .with_description("fetch a team page and pull the e-mail addresses")
///     .with_tag("email")
///     .with_tag("scraping")
///     .with_step(SkillStep::with_params("fetch", &"https://acme.example/team")?)
///     .with_step(SkillStep::new("find-emails"));
/// assert_eq!(skill.steps()[0].params::<String>()?, "https://acme.example/team");
/// assert_eq!(skill.stats().uses(), 0);
/// # Ok::<(), agentry::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skill {
    pub(super) name: String,
    pub(super) description: String,
    pub(super) tags: Vec<String>,
    pub(super) task_kind: String,
    pub(super) steps: Vec<SkillStep>,
    pub(super) stats: SkillStats,
}

impl Skill {
    /// A skill named `name` for tasks of `task_kind`, with no description,
    /// tags or steps, never used.
    pub fn new(name: impl Into<String>, task_kind: impl Into<String>) -> Skill {
        Skill {
            name: name.into(),
            description: String::new(),
            tags: Vec::new(),
            task_kind: task_kind.into(),
            steps: Vec::new(),
            stats: SkillStats::default(),
        }
    }

    /// What the skill does, in words a lookup can match.
    pub fn with_description(mut self, description: impl Into<String>) -> Skill {
        self.description = description.into();
        self
    }

    /// Adds a tag (weighs twice a description word in lookups). May repeat.
    pub fn with_tag(mut self, tag: impl Into<String>) -> Skill {
        let tag = tag.into();
        if !self.tags.contains(&tag) {
            self.tags.push(tag);
        }
        self
    }

    /// Appends a step; steps run in the order they were added.
    pub fn with_step(mut self, step: SkillStep) -> Skill {
        self.steps.push(step);
        self
    }

    /// The skill's name, unique in its library.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The description.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The tags.
    pub fn tags(&self) -> &[String] {
        &self.tags
    }

    /// The kind of task the skill serves.
    pub fn task_kind(&self) -> &str {
        &self.task_kind
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[SkillStep] {
        &self.steps
    }

    /// What its uses taught.
    pub fn stats(&self) -> &SkillStats {
        &self.stats
    }

    /// Whether `other` is the same recipe: same task kind, same steps with
    /// the same parameters.
    pub(super) fn same_recipe(&self, other: &Skill) -> bool {
        self.task_kind == other.task_kind && self.steps == other.steps
    }
}

/// One step of a skill: a named action the application registered
/// ([`SkillLibrary::register_action`](super::SkillLibrary::register_action)),
/// with its parameters as postcard-encoded serde data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkillStep {
    pub(super) action: String,
    pub(super) params: Vec<u8>,
}

impl SkillStep {
    /// A step running `action` without parameters (they decode as `()`).
    pub fn new(action: impl Into<String>) -> SkillStep {
        SkillStep {
            action: action.into(),
            params: Vec::new(),
        }
    }

    /// A step running `action` with `params`.
    ///
    /// # Errors
    /// [`Error::Codec`](crate::Error::Codec) when `params` cannot be encoded.
    pub fn with_params<T: Serialize + ?Sized>(
        action: impl Into<String>,
        params: &T,
    ) -> Result<SkillStep> {
        Ok(SkillStep {
            action: action.into(),
            params: postcard::to_allocvec(params)?,
        })
    }

    /// The action's name.
    pub fn action(&self) -> &str {
        &self.action
    }

    /// Decodes the parameters.
    ///
    /// # Errors
    /// [`Error::Codec`](crate::Error::Codec) when they are not a `T`.
    pub fn params<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(postcard::from_bytes(&self.params)?)
    }
}

/// How one use of a skill went, and how long it took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkillOutcome {
    /// The recipe worked.
    Succeeded(Duration),
    /// The recipe failed.
    Failed(Duration),
}

/// The record of a skill's uses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkillStats {
    uses: u64,
    successes: u64,
    consecutive_failures: u32,
    total_nanos: u64,
    /// Milliseconds since the Unix epoch, so the file stays portable.
    last_used_ms: Option<u64>,
}

impl SkillStats {
    /// How many uses were recorded.
    pub fn uses(&self) -> u64 {
        self.uses
    }

    /// How many of them succeeded.
    pub fn successes(&self) -> u64 {
        self.successes
    }

    /// How many of them failed.
    pub fn failures(&self) -> u64 {
        self.uses - self.successes
    }

    /// How many uses failed in a row, up to the last one.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// The success rate smoothed with one success and one failure assumed
    /// beforehand (Laplace's rule): 0.5 for a new skill, so one lucky use
    /// does not outrank a long record.
    pub fn success_rate(&self) -> f64 {
        (self.successes as f64 + 1.0) / (self.uses as f64 + 2.0)
    }

    /// The mean duration of a use (zero before the first).
    pub fn mean_time(&self) -> Duration {
        Duration::from_nanos(self.total_nanos.checked_div(self.uses).unwrap_or(0))
    }

    /// When the skill was last used (to the millisecond).
    pub fn last_used(&self) -> Option<SystemTime> {
        self.last_used_ms
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
    }

    pub(super) fn record(&mut self, outcome: SkillOutcome) {
        let elapsed = match outcome {
            SkillOutcome::Succeeded(elapsed) => {
                self.successes += 1;
                self.consecutive_failures = 0;
                elapsed
            }
            SkillOutcome::Failed(elapsed) => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                elapsed
            }
        };
        self.uses += 1;
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.total_nanos = self.total_nanos.saturating_add(nanos);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.last_used_ms = Some(u64::try_from(now.as_millis()).unwrap_or(u64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_count_smooth_and_average() {
        let mut stats = SkillStats::default();
        assert_eq!(stats.success_rate(), 0.5);
        stats.record(SkillOutcome::Succeeded(Duration::from_millis(10)));
        stats.record(SkillOutcome::Failed(Duration::from_millis(30)));
        stats.record(SkillOutcome::Failed(Duration::from_millis(20)));
        assert_eq!(
            (stats.uses(), stats.successes(), stats.failures()),
            (3, 1, 2)
        );
        assert_eq!(stats.consecutive_failures(), 2);
        assert_eq!(stats.success_rate(), 2.0 / 5.0);
        assert_eq!(stats.mean_time(), Duration::from_millis(20));
        assert!(stats.last_used().is_some());
    }
}
