//! The skill library: learning, lookup, running, persistence.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use parking_lot::RwLock;

use super::actions::{Action, ActionCall, Actions, SkillRunError};
use super::rank::{relevance, words};
use super::skill::{Skill, SkillOutcome, SkillStats};
use super::store::Store;
use crate::distributor::{Output, TaskError};
use crate::error::{Error, Result};
use crate::memory::SharedMemory;

/// Default number of failures in a row that retire a skill.
pub const DEFAULT_RETIRE_AFTER: u32 = 3;
/// Default [`SharedMemory`] key of [`SkillLibrary::in_shared_memory`].
pub const DEFAULT_SKILLS_KEY: &str = "agentry/skills";

/// Skills learned from task runs: recorded, strengthened by successes,
/// weakened by failures, retired when they keep failing, looked up by
/// relevance and success, run step by step. Clones share one library.
///
/// A skill that failed [`retire_after`](Self::retire_after) times in a row
/// is retired: lookups skip it and [`run`](Self::run) refuses it, until a
/// success recorded with [`learn`](Self::learn) brings it back.
///
/// ```
/// use agentry::{SkillOutcome, Output, Skill, SkillLibrary, SkillStep};
/// use std::time::Duration;
///
/// let library = SkillLibrary::in_memory();
/// library.register_action("greet", |call| {
///     let name: String = call.params()?;
///     Ok(Output::encode(&format!("hello {name}"))?)
/// })?;
/// let recipe = Skill::new("greeter", "welcome")
///     .with_tag("greeting")
///     .with_step(SkillStep::with_params("greet", &"ann")?);
/// library.learn(recipe, SkillOutcome::Succeeded(Duration::from_millis(3)))?;
///
/// let best = library.find("welcome", "a greeting for a guest", 1)?;
/// assert_eq!(best[0].skill.name(), "greeter");
/// let output = library.run("greeter", Output::empty())?;
/// assert_eq!(output.decode::<String>()?, "hello ann");
/// assert_eq!(library.get("greeter")?.unwrap().stats().successes(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct SkillLibrary {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    actions: RwLock<Actions>,
    retire_after: AtomicU32,
}

/// A skill found by [`SkillLibrary::find`], with its ranking.
#[derive(Clone, Debug)]
pub struct SkillMatch {
    /// The skill.
    pub skill: Skill,
    /// How well it matches the query, in (0, 1].
    pub relevance: f64,
    /// `relevance` times its smoothed success rate: the ranking key.
    pub score: f64,
}

impl SkillLibrary {
    fn with_store(store: Store) -> SkillLibrary {
        SkillLibrary {
            inner: Arc::new(Inner {
                store,
                actions: RwLock::new(Actions::default()),
                retire_after: AtomicU32::new(DEFAULT_RETIRE_AFTER),
            }),
        }
    }

    /// An empty library in a new in-memory store; nothing is persisted.
    pub fn in_memory() -> SkillLibrary {
        SkillLibrary::in_shared_memory(SharedMemory::in_memory(), DEFAULT_SKILLS_KEY)
    }

    /// The library kept under `key` in `memory`: every agent holding that
    /// memory shares it, and it is persisted (and fenced) with the memory.
    pub fn in_shared_memory(memory: SharedMemory, key: impl Into<String>) -> SkillLibrary {
        SkillLibrary::with_store(Store::Memory {
            memory,
            key: key.into(),
        })
    }

    /// The library in its own file at `path` (created on the first change),
    /// rewritten crash-safely on every change. One library value (and its
    /// clones) owns the file: two opened on one path overwrite each other's
    /// changes; agents share a library by cloning it, processes by
    /// [`in_shared_memory`](Self::in_shared_memory).
    ///
    /// # Errors
    /// [`Error::CorruptSnapshot`] when the file is not an intact skill
    /// library (truncated, foreign, bad checksum); [`Error::Io`] when it
    /// cannot be read.
    pub fn open(path: impl AsRef<Path>) -> Result<SkillLibrary> {
        Ok(SkillLibrary::with_store(Store::open(path.as_ref())?))
    }

    /// How many failures in a row retire a skill (default
    /// [`DEFAULT_RETIRE_AFTER`]; 0 is treated as 1). Applies to every clone.
    pub fn retire_after(self, failures: u32) -> SkillLibrary {
        self.inner
            .retire_after
            .store(failures.max(1), Ordering::Relaxed);
        self
    }

    fn is_retired(&self, stats: &SkillStats) -> bool {
        stats.consecutive_failures() >= self.inner.retire_after.load(Ordering::Relaxed)
    }

    /// Records that `recipe` was followed, with `outcome`. The same recipe
    /// under the same name (same task kind and steps) gains the use in its
    /// statistics, and takes the new description and tags; a different
    /// recipe under that name replaces the old one and starts a new record
    /// with this use. Returns the skill's statistics.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty name; errors of the store
    /// ([`Error::Io`], [`Error::Codec`]).
    pub fn learn(&self, recipe: Skill, outcome: SkillOutcome) -> Result<SkillStats> {
        if recipe.name.is_empty() {
            return Err(Error::InvalidInput("a skill needs a name".into()));
        }
        self.inner.store.modify(|skills| {
            let stats = match skills.get(&recipe.name) {
                Some(known) if known.same_recipe(&recipe) => known.stats.clone(),
                Some(_) => {
                    tracing::debug!(skill = %recipe.name, "a new recipe replaces the old");
                    SkillStats::default()
                }
                None => SkillStats::default(),
            };
            let mut skill = Skill {
                stats,
                ..recipe.clone()
            };
            skill.stats.record(outcome);
            let stats = skill.stats.clone();
            skills.insert(skill.name.clone(), skill);
            Ok(stats)
        })
    }

    /// Records one more use of the skill named `name`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when no skill has that name; errors of the
    /// store.
    pub fn record(&self, name: &str, outcome: SkillOutcome) -> Result<SkillStats> {
        self.inner
            .store
            .modify(|skills| match skills.get_mut(name) {
                Some(skill) => {
                    skill.stats.record(outcome);
                    Ok(skill.stats.clone())
                }
                None => Err(unknown_skill(name)),
            })
    }

    /// The skill named `name`, retired or not.
    ///
    /// # Errors
    /// Errors of the store ([`Error::Codec`] for a damaged memory value).
    pub fn get(&self, name: &str) -> Result<Option<Skill>> {
        Ok(self.inner.store.load()?.remove(name))
    }

    /// Every skill, retired ones included, by name.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn skills(&self) -> Result<Vec<Skill>> {
        Ok(self.inner.store.load()?.into_values().collect())
    }

    /// Whether the skill named `name` is retired (`false` when unknown).
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn retired(&self, name: &str) -> Result<bool> {
        Ok(self.get(name)?.is_some_and(|s| self.is_retired(&s.stats)))
    }

    /// At most `limit` skills for tasks of `task_kind`, best first, retired
    /// ones left out. The score is relevance to `query` (query words found
    /// in tags count twice those in the name or description) times the
    /// smoothed success rate ([`SkillStats::success_rate`]); equal scores
    /// are ordered by name.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn find(&self, task_kind: &str, query: &str, limit: usize) -> Result<Vec<SkillMatch>> {
        let query = words(query);
        let mut found: Vec<SkillMatch> = self
            .inner
            .store
            .load()?
            .into_values()
            .filter(|s| s.task_kind == task_kind && !self.is_retired(&s.stats))
            .map(|skill| {
                let relevance = relevance(&skill, &query);
                let score = relevance * skill.stats.success_rate();
                SkillMatch {
                    skill,
                    relevance,
                    score,
                }
            })
            .collect();
        // Stable sort over skills already in name order: equal scores keep it.
        found.sort_by(|a, b| b.score.total_cmp(&a.score));
        found.truncate(limit);
        Ok(found)
    }

    /// Registers (or replaces) the action named `name`, which skill steps
    /// refer to. Actions live in this process only; the skills that name
    /// them are what is persisted.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty name.
    pub fn register_action<F>(&self, name: impl Into<String>, action: F) -> Result<()>
    where
        F: Fn(&ActionCall<'_>) -> std::result::Result<Output, TaskError> + Send + Sync + 'static,
    {
        let name = name.into();
        if name.is_empty() {
            return Err(Error::InvalidInput("an action needs a name".into()));
        }
        self.inner.actions.write().0.insert(name, Arc::new(action));
        Ok(())
    }

    /// Runs the skill named `name`: each step's action in order, the first
    /// given `input`, each next one the previous output; returns the last
    /// output. The outcome and time are recorded in the skill's statistics.
    /// A panicking action is not caught here: inside an agent, the
    /// orchestrator catches it as it catches any panic in a task.
    ///
    /// # Errors
    /// [`SkillRunError::Refused`] (nothing ran) when the skill is unknown or
    /// retired, or a step names an unregistered action;
    /// [`SkillRunError::StepFailed`] naming the step whose action failed.
    pub fn run(&self, name: &str, input: Output) -> std::result::Result<Output, SkillRunError> {
        let skill = self.get(name)?.ok_or_else(|| unknown_skill(name))?;
        if self.is_retired(&skill.stats) {
            return Err(Error::InvalidInput(format!(
                "skill {name:?} is retired after {} failures in a row",
                skill.stats.consecutive_failures()
            ))
            .into());
        }
        let actions: Vec<Action> = {
            let registered = self.inner.actions.read();
            skill
                .steps
                .iter()
                .enumerate()
                .map(|(i, step)| {
                    registered.0.get(&step.action).cloned().ok_or_else(|| {
                        Error::InvalidInput(format!(
                            "step {i} of skill {name:?} names the unknown action {:?}",
                            step.action
                        ))
                    })
                })
                .collect::<Result<_>>()?
        };
        let started = Instant::now();
        let mut output = input;
        for (i, (step, action)) in skill.steps.iter().zip(&actions).enumerate() {
            let call = ActionCall {
                skill: name,
                step: i,
                params: &step.params,
                input: &output,
            };
            match action(&call) {
                Ok(next) => output = next,
                Err(reason) => {
                    self.record(name, SkillOutcome::Failed(started.elapsed()))?;
                    return Err(SkillRunError::StepFailed {
                        skill: name.to_owned(),
                        step: i,
                        action: step.action.clone(),
                        reason,
                    });
                }
            }
        }
        self.record(name, SkillOutcome::Succeeded(started.elapsed()))?;
        Ok(output)
    }
}

fn unknown_skill(name: &str) -> Error {
    Error::InvalidInput(format!("no skill named {name:?}"))
}

impl fmt::Debug for SkillLibrary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SkillLibrary")
            .field("store", &self.inner.store.describe())
            .field("actions", &*self.inner.actions.read())
            .field(
                "retire_after",
                &self.inner.retire_after.load(Ordering::Relaxed),
            )
            .finish()
    }
}
