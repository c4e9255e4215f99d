//! Coordinate many worker agents inside a synchronous program.
//!
//! agentry implements a multi-agent coordination architecture with plain OS
//! threads: no async runtime anywhere. Agents are threads; bounded crossbeam
//! channels connect them; a central orchestrator routes prioritised tasks to
//! the right agent; a versioned shared memory with optimistic locking lets
//! agents cooperate; processes elect a leader through a lock file.
//!
//! # Hello, broker
//!
//! Every agent owns a [`Mailbox`]; the [`MessageBroker`] routes direct
//! messages, broadcasts and topic publications between them. Bodies are any
//! `serde` type, carried as postcard bytes.
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
//! # Full mailboxes
//!
//! Sending never blocks forever and never drops silently: a full mailbox
//! refuses at once with [`Error::Full`], [`MessageBroker::send_timeout`]
//! waits at most its timeout, and a broadcast reports who was full in its
//! [`Delivery`] while keeping their copies as [`DeadLetter`]s.
//!
//! ```
//! use agentry::{AgentId, Error, MessageBroker};
//!
//! let broker = MessageBroker::new(1);
//! let _inbox = broker.register(AgentId::from(1))?;
//! broker.send(AgentId::from(0), AgentId::from(1), &1u8)?;
//! let refused = broker.send(AgentId::from(0), AgentId::from(1), &2u8);
//! assert!(matches!(refused, Err(Error::Full { .. })));
//! # Ok::<(), agentry::Error>(())
//! ```
//!
//! # The parts, and where they live
//!
//! The modules follow the seed architecture's diagram, one per part:
//!
//! | part | module | main types |
//! | --- | --- | --- |
//! | message broker | `broker` | [`MessageBroker`], [`Mailbox`], [`Message`], [`Delivery`] |
//! | shared memory | `memory` | [`Version`], [`Versioned`] |
//! | identity and routing | `ids` | [`AgentId`], [`TaskId`], [`Priority`], [`Role`], [`AgentState`] |
//! | errors | `error` | [`Error`], [`Result`] |
//!
//! `docs/ARCHITECTURE.md` in the repository explains how a task and a
//! message travel, and `docs/PERFORMANCE.md` what the benchmarks measure.
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![deny(unsafe_op_in_unsafe_fn)]

mod agent;
mod broker;
mod distributor;
mod error;
mod ids;
mod memory;
mod orchestrator;

pub use agent::{Agent, AgentContext, AgentSpec};
pub use broker::{
    BrokerBuilder, BrokerStats, Control, DEFAULT_DEAD_LETTER_CAPACITY, DEFAULT_MAILBOX_CAPACITY,
    DeadLetter, DeadLetterReason, Delivery, Mailbox, MailboxStats, Message, MessageBroker,
    MessageKind,
};
pub use distributor::{Output, Task, TaskError, TaskResult, TaskStatus};
pub use error::{Error, Missing, Result};
pub use ids::{AgentId, AgentState, Priority, Role, TaskId};
pub use memory::{Durability, SharedMemory, Version, Versioned};
pub use orchestrator::{
    AgentStatus, DEFAULT_MAX_AGENTS, DEFAULT_MIN_AGENTS, DEFAULT_RESULT_RETENTION,
    DEFAULT_SHUTDOWN_TIMEOUT, Event, ORCHESTRATOR_ID, Orchestrator, OrchestratorBuilder,
    QueueDepths, StatusReport, TaskTotals,
};
