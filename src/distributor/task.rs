//! Tasks and their results: what is submitted and what comes back.

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::{AgentId, Priority, Role, TaskId};

/// A unit of work for an agent: a kind, routing (role, capabilities),
/// a priority, limits (timeout, attempts), dependencies and a postcard input.
///
/// Built with chained methods, submitted with
/// [`Orchestrator::submit`](crate::Orchestrator::submit), which assigns its
/// [`TaskId`]:
///
/// ```
/// use agentry::{Priority, Role, Task};
/// use std::time::Duration;
///
/// let task = Task::new("fetch")
///     .with_role(Role::Researcher)
///     .requires("http")
///     .with_priority(Priority::High)
///     .with_timeout(Duration::from_secs(30))
///     .with_max_attempts(3)
///     .with_input(&"https://example.org")?;
/// assert_eq!(task.kind(), "fetch");
/// assert_eq!(task.input::<String>()?, "https://example.org");
/// # Ok::<(), agentry::Error>(())
/// ```
#[derive(Clone)]
pub struct Task {
    pub(crate) id: TaskId,
    kind: Box<str>,
    input: Box<[u8]>,
    pub(crate) role: Option<Role>,
    /// Rarely set, so kept out of line to keep a queued task small.
    pub(crate) extras: Option<Box<Extras>>,
    pub(crate) priority: Priority,
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    /// The distributor's lane for the task's route, set at submit.
    pub(crate) lane: u32,
    /// With priority aging on: when the task joined its current priority's
    /// queue, in milliseconds of the distributor's clock.
    pub(crate) queued_at: u32,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Extras {
    pub(crate) capabilities: Vec<String>,
    pub(crate) dependencies: Vec<TaskId>,
    pub(crate) timeout: Option<Duration>,
}

impl Task {
    /// A task of this kind (a label for the agent: "fetch", "extract", ...),
    /// for any agent, at [`Priority::Normal`], one attempt, no timeout.
    pub fn new(kind: impl Into<String>) -> Task {
        Task {
            id: TaskId::from(0),
            kind: kind.into().into_boxed_str(),
            input: Box::default(),
            role: None,
            extras: None,
            priority: Priority::Normal,
            attempt: 0,
            max_attempts: 1,
            lane: 0,
            queued_at: 0,
        }
    }

    fn extras_mut(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Box::default)
    }

    /// Only agents of this role may run the task.
    pub fn with_role(mut self, role: Role) -> Task {
        self.role = Some(role);
        self
    }

    /// The task's priority (default [`Priority::Normal`]).
    pub fn with_priority(mut self, priority: Priority) -> Task {
        self.priority = priority;
        self
    }

    /// Only agents with this capability may run the task. May repeat: the
    /// agent must have every capability named.
    pub fn requires(mut self, capability: impl Into<String>) -> Task {
        let capability = capability.into();
        let capabilities = &mut self.extras_mut().capabilities;
        if !capabilities.contains(&capability) {
            capabilities.push(capability);
        }
        self
    }

    /// A run longer than this ends with [`TaskStatus::TimedOut`] at about
    /// the deadline, whatever the agent is doing.
    pub fn with_timeout(mut self, timeout: Duration) -> Task {
        self.extras_mut().timeout = Some(timeout);
        self
    }

    /// How many times the task may run in all (default 1: no retry). A
    /// [`TaskError::retryable`] error or a panic runs it again while attempts
    /// remain. A value of 0 is treated as 1.
    pub fn with_max_attempts(mut self, attempts: u32) -> Task {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The task starts only after `dependency` succeeded; if it fails, times
    /// out or is cancelled, this task fails without running. May repeat.
    pub fn after(mut self, dependency: TaskId) -> Task {
        let dependencies = &mut self.extras_mut().dependencies;
        if !dependencies.contains(&dependency) {
            dependencies.push(dependency);
        }
        self
    }

    /// Sets the input the agent reads with [`Task::input`].
    ///
    /// # Errors
    /// [`Error::Codec`] when `input` cannot be encoded with postcard.
    pub fn with_input<T: Serialize + ?Sized>(mut self, input: &T) -> Result<Task> {
        self.input = postcard::to_allocvec(input)?.into_boxed_slice();
        Ok(self)
    }

    /// The id assigned by submit (`task-0` before it is submitted).
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The task's kind.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The task's priority.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// The role required, if any.
    pub fn role(&self) -> Option<&Role> {
        self.role.as_ref()
    }

    /// The capabilities required.
    pub fn capabilities(&self) -> &[String] {
        self.extras
            .as_ref()
            .map_or(&[][..], |e| e.capabilities.as_slice())
    }

    /// The tasks this one waits for.
    pub fn dependencies(&self) -> &[TaskId] {
        self.extras
            .as_ref()
            .map_or(&[][..], |e| e.dependencies.as_slice())
    }

    /// The task's timeout, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.extras.as_ref().and_then(|e| e.timeout)
    }

    /// Which attempt this run is: 1 on the first run, 2 on the first retry.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// How many attempts the task may have in all.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Decodes the input as a `T`.
    ///
    /// # Errors
    /// [`Error::Codec`] when the input is not a postcard encoding of `T`.
    pub fn input<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(postcard::from_bytes(&self.input)?)
    }
}

/// A task as the durable task store keeps it: everything needed to run it
/// again under its own id (an internal form: [`Task`]'s serde shape is not
/// part of the public API).
#[derive(Serialize, Deserialize)]
pub(crate) struct TaskRecord {
    id: TaskId,
    kind: String,
    input: Vec<u8>,
    role: Option<Role>,
    capabilities: Vec<String>,
    priority: Priority,
    timeout: Option<Duration>,
    max_attempts: u32,
    attempt: u32,
    dependencies: Vec<TaskId>,
}

impl TaskRecord {
    /// The recorded task's id.
    pub(crate) fn id(&self) -> TaskId {
        self.id
    }

    /// Counts a takeover as an attempt: the record was accepted and may have
    /// been running when its leader died. The extra attempt is added to the
    /// limit too, so a takeover never uses up one of the task's own retries.
    pub(crate) fn count_takeover(&mut self) {
        self.attempt = self.attempt.saturating_add(1);
        self.max_attempts = self.max_attempts.saturating_add(1);
    }
}

impl Task {
    /// The durable form of this task, with its id and its dependencies
    /// (taken at submit, so read here from `dependencies`).
    pub(crate) fn to_record(&self, dependencies: &[TaskId]) -> TaskRecord {
        TaskRecord {
            id: self.id,
            kind: self.kind.to_string(),
            input: self.input.to_vec(),
            role: self.role.clone(),
            capabilities: self.capabilities().to_vec(),
            priority: self.priority,
            timeout: self.timeout(),
            max_attempts: self.max_attempts,
            attempt: self.attempt,
            dependencies: dependencies.to_vec(),
        }
    }

    /// The task a record describes, with its original id.
    pub(crate) fn from_record(record: TaskRecord) -> Task {
        let extras = (!record.capabilities.is_empty()
            || !record.dependencies.is_empty()
            || record.timeout.is_some())
        .then(|| {
            Box::new(Extras {
                capabilities: record.capabilities,
                dependencies: record.dependencies,
                timeout: record.timeout,
            })
        });
        Task {
            id: record.id,
            kind: record.kind.into_boxed_str(),
            input: record.input.into_boxed_slice(),
            role: record.role,
            extras,
            priority: record.priority,
            attempt: record.attempt,
            max_attempts: record.max_attempts.max(1),
            lane: 0,
            queued_at: 0,
        }
    }
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("role", &self.role)
            .field("capabilities", &self.capabilities())
            .field("priority", &self.priority)
            .field("attempt", &self.attempt)
            .field("max_attempts", &self.max_attempts)
            .field("dependencies", &self.dependencies())
            .field("timeout", &self.timeout())
            .field("input_len", &self.input.len())
            .finish()
    }
}

/// What a successful task returns: postcard bytes, read back with
/// [`TaskResult::output`].
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output(Box<[u8]>);

impl Output {
    /// No output (decodes as `()`).
    pub fn empty() -> Output {
        Output::default()
    }

    /// Encodes `value` as the output.
    ///
    /// # Errors
    /// [`Error::Codec`] when `value` cannot be encoded with postcard.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Output> {
        Ok(Output(postcard::to_allocvec(value)?.into_boxed_slice()))
    }

    /// Decodes the output as a `T`.
    ///
    /// # Errors
    /// [`Error::Codec`] when the output is not a postcard encoding of `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(postcard::from_bytes(&self.0)?)
    }

    /// The raw postcard bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Output({} bytes)", self.0.len())
    }
}

/// Why an attempt failed, as the agent reports it.
///
/// A [`retryable`](TaskError::retryable) error runs the task again while
/// attempts remain; a [`fatal`](TaskError::fatal) one fails it at once. Any
/// agentry [`Error`] converts into a retryable `TaskError`, so `?` works
/// inside [`Agent::execute`](crate::Agent::execute).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskError {
    message: String,
    retryable: bool,
}

impl TaskError {
    /// A failure worth another attempt (a timeout upstream, a busy site).
    pub fn retryable(message: impl Into<String>) -> TaskError {
        TaskError {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure no retry can fix (malformed input).
    pub fn fatal(message: impl Into<String>) -> TaskError {
        TaskError {
            message: message.into(),
            retryable: false,
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TaskError {}

impl From<Error> for TaskError {
    fn from(error: Error) -> TaskError {
        TaskError::retryable(error.to_string())
    }
}

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskStatus {
    /// Waiting for an agent (or for its dependencies).
    Queued,
    /// An agent is executing it.
    Running,
    /// Finished with an output.
    Succeeded,
    /// Failed on its last attempt, or a dependency failed.
    Failed,
    /// Cancelled before it started (or at shutdown).
    Cancelled,
    /// Ran past its timeout.
    TimedOut,
}

impl TaskStatus {
    /// Whether the task has finished (any status but queued and running).
    pub fn is_finished(self) -> bool {
        !matches!(self, TaskStatus::Queued | TaskStatus::Running)
    }
}

/// The outcome of a finished task, kept by the orchestrator (see
/// [`OrchestratorBuilder::result_retention`](crate::OrchestratorBuilder::result_retention)).
#[derive(Clone, Debug)]
pub struct TaskResult {
    pub(crate) id: TaskId,
    pub(crate) output: Option<Output>,
    pub(crate) error: Option<Box<str>>,
    /// `AgentId` 0 (the orchestrator's own id) when no agent ran it.
    pub(crate) agent: AgentId,
    pub(crate) elapsed_nanos: u64,
    pub(crate) attempts: u32,
    pub(crate) status: TaskStatus,
}

/// A finished result as the durable task store keeps it (an internal form:
/// [`TaskResult`] has no public serde shape).
#[derive(Serialize, Deserialize)]
pub(crate) struct ResultRecord {
    id: TaskId,
    output: Option<Output>,
    error: Option<String>,
    agent: AgentId,
    elapsed_nanos: u64,
    attempts: u32,
    status: TaskStatus,
}

impl From<&TaskResult> for ResultRecord {
    fn from(result: &TaskResult) -> ResultRecord {
        ResultRecord {
            id: result.id,
            output: result.output.clone(),
            error: result.error.as_deref().map(str::to_owned),
            agent: result.agent,
            elapsed_nanos: result.elapsed_nanos,
            attempts: result.attempts,
            status: result.status,
        }
    }
}

impl From<ResultRecord> for TaskResult {
    fn from(record: ResultRecord) -> TaskResult {
        TaskResult {
            id: record.id,
            output: record.output,
            error: record.error.map(String::into_boxed_str),
            agent: record.agent,
            elapsed_nanos: record.elapsed_nanos,
            attempts: record.attempts,
            status: record.status,
        }
    }
}

impl TaskResult {
    /// A result for a task that ended without (another) run.
    pub(crate) fn failed(id: TaskId, status: TaskStatus, reason: String, attempts: u32) -> Self {
        TaskResult {
            id,
            output: None,
            error: Some(reason.into_boxed_str()),
            agent: AgentId::new(0),
            elapsed_nanos: 0,
            attempts,
            status,
        }
    }

    /// The result of an attempt an agent ran.
    pub(crate) fn ran(
        id: TaskId,
        status: TaskStatus,
        outcome: std::result::Result<Output, String>,
        attempts: u32,
        agent: AgentId,
        elapsed: Duration,
    ) -> Self {
        let (output, error) = match outcome {
            Ok(output) => (Some(output), None),
            Err(error) => (None, Some(error.into_boxed_str())),
        };
        TaskResult {
            id,
            output,
            error,
            agent,
            elapsed_nanos: u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            attempts,
            status,
        }
    }

    /// The task.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// How it ended.
    pub fn status(&self) -> TaskStatus {
        self.status
    }

    /// Whether it succeeded.
    pub fn is_success(&self) -> bool {
        self.status == TaskStatus::Succeeded
    }

    /// Decodes the output of a successful task.
    ///
    /// # Errors
    /// [`Error::Codec`] when the output is not a postcard encoding of `T`;
    /// [`Error::InvalidInput`] when the task did not succeed (the message
    /// says why it failed).
    pub fn output<T: DeserializeOwned>(&self) -> Result<T> {
        match &self.output {
            Some(output) => output.decode(),
            None => Err(Error::InvalidInput(format!(
                "{} has no output: it ended {:?}{}",
                self.id,
                self.status,
                self.error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ))),
        }
    }

    /// The raw output of a successful task.
    pub fn raw_output(&self) -> Option<&Output> {
        self.output.as_ref()
    }

    /// Why the task did not succeed: the last attempt's error, or the
    /// reason it was failed, cancelled or timed out.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// How many attempts ran (0 when it never ran).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The agent that ran the last attempt.
    pub fn agent(&self) -> Option<AgentId> {
        (self.agent.get() != 0).then_some(self.agent)
    }

    /// How long the last attempt ran (zero when it never ran).
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.elapsed_nanos)
    }
}
