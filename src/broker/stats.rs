//! What the broker reports: fan-out deliveries, dead letters and counters.

use std::time::SystemTime;

use serde::Serialize;

use super::message::Message;
use crate::ids::AgentId;

/// The outcome of a fan-out ([`broadcast`](crate::MessageBroker::broadcast),
/// [`publish`](crate::MessageBroker::publish)): who got the message and who
/// did not. Every recipient that did not get it also has a
/// [`DeadLetter`] record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub(crate) reached: usize,
    pub(crate) full: Vec<AgentId>,
    pub(crate) closed: Vec<AgentId>,
}

impl Delivery {
    /// How many recipients the message was queued for.
    pub fn reached(&self) -> usize {
        self.reached
    }

    /// The recipients whose mailbox was full.
    pub fn full(&self) -> &[AgentId] {
        &self.full
    }

    /// The recipients whose mailbox was closed (agent stopped).
    pub fn closed(&self) -> &[AgentId] {
        &self.closed
    }

    /// Whether every recipient got the message.
    pub fn is_complete(&self) -> bool {
        self.full.is_empty() && self.closed.is_empty()
    }
}

/// Why a message could not be delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum DeadLetterReason {
    /// The recipient's mailbox was full (fan-out only: a direct `send` hands
    /// the failure back to the caller as [`Error::Full`](crate::Error::Full)).
    Full,
    /// No agent with that id was registered.
    UnknownRecipient,
    /// The recipient's mailbox was closed: its agent stopped.
    Closed,
}

/// A message that could not be delivered, kept so it is never lost silently.
///
/// The broker keeps the most recent ones (1,024 by default, see
/// [`BrokerBuilder::dead_letter_capacity`](crate::BrokerBuilder::dead_letter_capacity));
/// older records are counted in [`BrokerStats::dead_letters_evicted`].
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// The intended recipient.
    pub to: AgentId,
    /// Why it was not delivered.
    pub reason: DeadLetterReason,
    /// When it was recorded.
    pub at: SystemTime,
    /// The message itself, ready to be sent again.
    pub message: Message,
}

/// The queue of one mailbox, as [`MessageBroker::mailbox_stats`](crate::MessageBroker::mailbox_stats)
/// reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MailboxStats {
    /// Messages waiting now.
    pub depth: usize,
    /// The most messages ever waiting at once.
    pub high_water: usize,
    /// The mailbox capacity.
    pub capacity: usize,
    /// Sends refused because the mailbox was full.
    pub refused_full: u64,
    /// Messages removed by [`MessageBroker::purge`](crate::MessageBroker::purge).
    pub purged: u64,
}

/// Broker-wide counters, a snapshot taken by
/// [`MessageBroker::stats`](crate::MessageBroker::stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BrokerStats {
    /// Registered mailboxes.
    pub mailboxes: usize,
    /// Messages queued into a mailbox (a fan-out counts once per recipient).
    pub sent: u64,
    /// Messages received by their owner.
    pub delivered: u64,
    /// Sends refused because the mailbox was full.
    pub refused_full: u64,
    /// Messages recorded as dead letters.
    pub dead_lettered: u64,
    /// Dead-letter records dropped from the bounded record to make room for
    /// newer ones (still counted in `dead_lettered`).
    pub dead_letters_evicted: u64,
    /// Messages removed by [`MessageBroker::purge`](crate::MessageBroker::purge).
    pub purged: u64,
}
