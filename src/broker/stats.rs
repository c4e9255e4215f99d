//! What the broker reports: fan-out deliveries, dead letters and counters.

use std::time::SystemTime;

use serde::Serialize;

use super::message::Message;
use crate::ids::AgentId;

/// The outcome of a fan-out ([`broadcast`](crate::MessageBroker::broadcast),
/// [`publish`](crate::MessageBroker::publish)): who got the message and who
/// did not. Every recipient that did not get it also has a
/// [`DeadLetter`] record.
///
/// On a cluster node (feature `redis`), [`reached`](Delivery::reached),
/// [`full`](Delivery::full) and [`closed`](Delivery::closed) count this
/// node's agents only: the other nodes get one copy each through Redis
/// ([`relayed`](Delivery::relayed)) and deliver it to their own agents
/// later, so their recipients cannot be counted here. A recipient there that
/// is full or stopped becomes a dead letter in that node's broker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub(crate) reached: usize,
    pub(crate) full: Vec<AgentId>,
    pub(crate) closed: Vec<AgentId>,
    pub(crate) relayed: usize,
    pub(crate) relay_full: Vec<u32>,
}

impl Delivery {
    /// How many recipients the message was queued for (on a cluster node:
    /// this node's recipients).
    pub fn reached(&self) -> usize {
        self.reached
    }

    /// On a cluster node: how many other live nodes the message was queued
    /// for, in their relay streams in Redis; 0 outside a cluster.
    pub fn relayed(&self) -> usize {
        self.relayed
    }

    /// On a cluster node: the other nodes whose relay stream was at its
    /// bound, so the message was not queued for them (each is kept as a
    /// [`DeadLetter`] with reason [`DeadLetterReason::RelayFull`]).
    pub fn relay_full(&self) -> &[u32] {
        &self.relay_full
    }

    /// The recipients whose mailbox was full.
    pub fn full(&self) -> &[AgentId] {
        &self.full
    }

    /// The recipients whose mailbox was closed (agent stopped).
    pub fn closed(&self) -> &[AgentId] {
        &self.closed
    }

    /// Whether every recipient got the message (on a cluster node: every
    /// local recipient, and every other node's relay stream).
    pub fn is_complete(&self) -> bool {
        self.full.is_empty() && self.closed.is_empty() && self.relay_full.is_empty()
    }
}

/// Why a message could not be delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum DeadLetterReason {
    /// The recipient's mailbox was full (fan-out only: a direct `send` hands
    /// the failure back to the caller as [`Error::Full`](crate::Error::Full)),
    /// or, on a cluster node, a message relayed from another node found its
    /// recipient's mailbox full (the sender's `send` had already returned).
    Full,
    /// On a cluster node: another node's relay stream in Redis was at its
    /// bound, so a fan-out was not queued for that node. The record's `to`
    /// is [`AgentId::on_node(node, 0)`](AgentId::on_node), standing for the
    /// whole node.
    RelayFull,
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
