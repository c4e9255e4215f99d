//! Coordinate many worker agents inside a synchronous program.
//!
//! agentry implements a multi-agent coordination architecture with plain OS
//! threads: no async runtime anywhere. Agents are threads; bounded crossbeam
//! channels connect them; a central orchestrator routes prioritised tasks to
//! the right agent; a versioned shared memory with optimistic locking lets
//! agents cooperate; processes elect a leader through a lock file.
//!
//! # Hello, agents
//!
//! An agent is any type implementing [`Agent`], or a closure. The
//! [`Orchestrator`] runs pools of them, each agent on its own thread, and
//! routes every [`Task`] to an agent of the right role.
//!
//! ```
//! use agentry::{AgentContext, Orchestrator, Output, Role, Task, TaskError};
//! use std::time::Duration;
//!
//! let orchestrator = Orchestrator::builder()
//!     .agents(Role::Researcher, 3, || {
//!         |task: &Task, _ctx: &AgentContext| -> Result<Output, TaskError> {
//!             let site: String = task.input()?;
//!             Ok(Output::encode(&format!("researched {site}"))?)
//!         }
//!     })
//!     .build()?;
//!
//! let id = orchestrator.submit(
//!     Task::new("research").with_role(Role::Researcher).with_input(&"acme.example")?,
//! )?;
//! let result = orchestrator.wait(id, Duration::from_secs(10))?;
//! assert_eq!(result.output::<String>()?, "researched acme.example");
//! # Ok::<(), agentry::Error>(())
//! ```
//!
//! # Priorities, retries, dependencies
//!
//! Four [`Priority`] levels: a more urgent task always starts first, and
//! within one level tasks start in submission order. A task may retry
//! ([`Task::with_max_attempts`], [`TaskError::retryable`]), time out
//! ([`Task::with_timeout`]) and wait for others ([`Task::after`]); if one
//! of its dependencies fails, it fails too, saying which.
//!
//! ```
//! use agentry::{AgentContext, Orchestrator, Output, Priority, Role, Task, TaskStatus};
//! use std::time::Duration;
//!
//! let orchestrator = Orchestrator::builder()
//!     .agents(Role::Planner, 2, || |_: &Task, _: &AgentContext| Ok(Output::empty()))
//!     .build()?;
//! let fetch = orchestrator.submit(Task::new("fetch").with_priority(Priority::High))?;
//! let parse = orchestrator.submit(Task::new("parse").after(fetch).with_max_attempts(3))?;
//! let parsed = orchestrator.wait(parse, Duration::from_secs(10))?;
//! assert_eq!(parsed.status(), TaskStatus::Succeeded);
//! # Ok::<(), agentry::Error>(())
//! ```
//!
//! # Failures and scaling
//!
//! A panicking agent fails only its attempt (retried while attempts
//! remain) and is replaced from its factory; a hung one is detached and
//! replaced; pools grow when work piles up and shrink when idle. Every such
//! step is an [`Event`].
//!
//! ```
//! use agentry::{AgentContext, AutoscalePolicy, Event, HealthConfig, Orchestrator, Output, Role, Task};
//! use std::time::Duration;
//!
//! let orchestrator = Orchestrator::builder()
//!     .agents(Role::Extractor, 1, || |task: &Task, _: &AgentContext| {
//!         if task.attempt() == 1 {
//!             panic!("malformed page");
//!         }
//!         Ok(Output::empty())
//!     })
//!     .health(HealthConfig::default().hang_timeout(Duration::from_secs(5)))
//!     .autoscale(AutoscalePolicy::disabled())
//!     .build()?;
//! let id = orchestrator.submit(Task::new("extract").with_max_attempts(2))?;
//! assert!(orchestrator.wait(id, Duration::from_secs(10))?.is_success());
//! let replaced = orchestrator.events().iter().find(|e| matches!(e, Event::AgentReplaced { .. }));
//! assert!(replaced.is_some());
//! # Ok::<(), agentry::Error>(())
//! ```
//!
//! # Shared memory
//!
//! [`SharedMemory`] is a versioned key/value store: every write gets a fresh
//! [`Version`], and [`SharedMemory::set`] writes only if the key is still at
//! the version the writer read, so agents never overwrite each other
//! silently. It persists to a memory-mapped snapshot, optionally with a
//! journal ([`Durability`]).
//!
//! ```
//! use agentry::{SharedMemory, Version};
//!
//! let memory = SharedMemory::in_memory();
//! let v1 = memory.set("contacts/acme", &vec!["ann@acme.example"], Version::NONE)?;
//! let read = memory.get::<Vec<String>>("contacts/acme")?.expect("just written");
//! assert_eq!(read.version, v1);
//! assert!(memory.set("contacts/acme", &Vec::<String>::new(), Version::NONE).is_err());
//! # Ok::<(), agentry::Error>(())
//! ```
//!
//! # Messages between agents
//!
//! Every agent owns a [`Mailbox`]; the [`MessageBroker`] routes direct
//! messages, broadcasts and topic publications between them. Sending never
//! blocks forever and never drops silently: a full mailbox refuses at once
//! with [`Error::Full`], [`MessageBroker::send_timeout`] waits at most its
//! timeout, and a broadcast reports who was full in its [`Delivery`] while
//! keeping their copies as [`DeadLetter`]s.
//!
//! ```
//! use agentry::{AgentId, MessageBroker};
//! use std::thread;
//!
//! let broker = MessageBroker::new(1_000);
//! let (planner, worker) = (AgentId::from(1), AgentId::from(2));
//! let planner_mail = broker.register(planner)?;
//! let worker_mail = broker.register(worker)?;
//!
//! let echo = {
//!     let broker = broker.clone();
//!     thread::spawn(move || -> agentry::Result<()> {
//!         let job: String = worker_mail.recv()?.body()?;
//!         broker.send(worker, planner, &format!("done: {job}"))
//!     })
//! };
//!
//! broker.send(planner, worker, &"crawl example.org")?;
//! let reply: String = planner_mail.recv()?.body()?;
//! assert_eq!(reply, "done: crawl example.org");
//! echo.join().unwrap()?;
//! # Ok::<(), agentry::Error>(())
//! ```
//!
//! # Browser tabs
//!
//! Agents that browse share a few tabs through a [`TabPool`]: a
//! [`TabLease`] is one agent's exclusive hold on one tab, given back on
//! drop; leases wait in FIFO order with a timeout, at most
//! `per_site_limit` of them hold one host, and a tab that crashes is
//! replaced. Tabs are HTTP sessions ([`HttpBrowser`]) or, with the cargo
//! feature `chrome`, tabs of a headless Chromium. Give the pool to the
//! orchestrator ([`OrchestratorBuilder::tab_pool`]) and agents reach it
//! through [`AgentContext::tabs`]; [the `tabs` module](tabs) has an example.
//!
//! # The parts, and where they live
//!
//! The modules follow the seed architecture's diagram, one per part:
//!
//! | part | module | main types |
//! | --- | --- | --- |
//! | agent orchestrator | `orchestrator` | [`Orchestrator`], [`OrchestratorBuilder`], [`StatusReport`], [`Event`] |
//! | task distributor | `distributor` | [`Task`], [`TaskResult`], [`TaskStatus`], [`Output`], [`TaskError`] |
//! | agents | `agent` | [`Agent`], [`AgentContext`], [`AgentSpec`] |
//! | coordination (health, recovery, auto-scaling) | `coordination` | [`HealthConfig`], [`AutoscalePolicy`] |
//! | message broker | `broker` | [`MessageBroker`], [`Mailbox`], [`Message`], [`Delivery`] |
//! | shared memory | `memory` | [`SharedMemory`], [`Version`], [`Versioned`], [`Durability`] |
//! | leader election | `election` | [`LeaderElection`], [`ElectionConfig`], [`ElectionHandle`], [`Leadership`], [`ElectionEvent`], [`LeaderInfo`] |
//! | hierarchical planning | `planning` | [`Plan`], [`Step`], [`Goal`], [`FanIn`], [`PlanHandle`], [`StepResult`] |
//! | parallel execution | `parallel` | [`run_batch`], [`BatchOutcome`], [`ParallelPool`] |
//! | skill library | `skills` | [`SkillLibrary`], [`Skill`], [`SkillStep`], [`SkillOutcome`], [`SkillRunError`] |
//! | multi-tab browser coordination | `tabs` | [`TabPool`], [`TabLease`], [`Browser`], [`Tab`], [`HttpBrowser`], `ChromeBrowser` (feature `chrome`) |
//! | identity and routing | `ids` | [`AgentId`], [`TaskId`], [`Priority`], [`Role`], [`AgentState`] |
//! | errors | `error` | [`Error`], [`Result`] |
//! | beyond one host (feature `redis`) | `cluster` | `RedisConfig`, `SharedMemory::redis`, `LeaderElection::redis`, `OrchestratorBuilder::redis`, `NodeStatus` |
//!
//! Several processes can run one orchestrator over a shared state directory
//! ([`OrchestratorBuilder::state_dir`]): only the elected leader dispatches,
//! accepted tasks are durable, and a new leader re-queues the unfinished
//! ones. With the cargo feature `redis`, the shared memory and the
//! election run on a Redis server instead, and orchestrators on several
//! hosts become nodes of one cluster sharing a task queue in Redis
//! (`OrchestratorBuilder::redis`; `docs/SCALING.md`).
//!
//! In the repository, `docs/GUIDE.md` goes through every part with a
//! runnable snippet, `docs/ARCHITECTURE.md` follows each flow of the seed
//! through the code, file by file, and `docs/PERFORMANCE.md` says what the
//! benchmarks measure (`cargo run --release --example targets` checks them
//! against the targets).
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![deny(unsafe_op_in_unsafe_fn)]

mod agent;
mod broker;
mod clock;
#[cfg(feature = "redis")]
mod cluster;
mod coordination;
mod distributor;
mod election;
mod error;
mod ids;
mod memory;
mod orchestrator;
pub mod parallel;
pub mod planning;
pub mod skills;
mod spin;
pub mod tabs;

pub use agent::{Agent, AgentContext, AgentSpec};
#[cfg(feature = "redis")]
pub use broker::DEFAULT_RELAY_CAPACITY;
pub use broker::{
    BrokerBuilder, BrokerStats, Control, DEFAULT_DEAD_LETTER_CAPACITY, DEFAULT_MAILBOX_CAPACITY,
    DeadLetter, DeadLetterReason, Delivery, Mailbox, MailboxStats, Message, MessageBroker,
    MessageKind,
};
#[cfg(feature = "redis")]
pub use cluster::{DEFAULT_REDIS_NAMESPACE, DEFAULT_REDIS_TIMEOUT, RedisConfig};
pub use coordination::{
    AutoscalePolicy, DEFAULT_CHECK_INTERVAL, DEFAULT_HANG_TIMEOUT, HealthConfig,
};
pub use distributor::{Output, Task, TaskError, TaskResult, TaskStatus};
pub use election::{
    DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_LEASE_TIMEOUT, DEFAULT_RETRY_INTERVAL, ElectionConfig,
    ElectionEvent, ElectionHandle, LeaderElection, LeaderInfo, Leadership,
};
pub use error::{Error, Missing, Result};
pub use ids::{AgentId, AgentState, Priority, Role, TaskId};
pub use memory::{Durability, SharedMemory, Version, Versioned};
pub use orchestrator::{
    AgentStatus, DEFAULT_MAX_AGENTS, DEFAULT_MIN_AGENTS, DEFAULT_RESULT_RETENTION,
    DEFAULT_SHUTDOWN_TIMEOUT, Event, ORCHESTRATOR_ID, Orchestrator, OrchestratorBuilder,
    PoolStatus, QueueDepths, StatusReport, TaskTotals,
};
#[cfg(feature = "redis")]
pub use orchestrator::{DEFAULT_VISIBILITY_TIMEOUT, NodeStatus};
pub use parallel::{BatchOutcome, ParallelPool, run_batch};
pub use planning::{
    DEFAULT_MAX_DEPTH, DEFAULT_PLANNER_KIND, FanIn, Goal, LevelProgress, Plan, PlanHandle,
    Progress, Step, StepResult,
};
// The guide's and the README's snippets run as doctests, so they stay true to
// the API.
#[cfg(doctest)]
#[doc = include_str!("../docs/GUIDE.md")]
struct GuideSnippets;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeSnippets;

pub use skills::{
    ActionCall, DEFAULT_RETIRE_AFTER, DEFAULT_SKILLS_KEY, Skill, SkillLibrary, SkillMatch,
    SkillOutcome, SkillRunError, SkillStats, SkillStep,
};
#[cfg(feature = "chrome")]
pub use tabs::ChromeBrowser;
pub use tabs::{Browser, HttpBrowser, Tab, TabId, TabLease, TabPool, TabPoolBuilder, TabPoolStats};
