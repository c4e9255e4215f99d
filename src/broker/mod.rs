//! The seed's MESSAGE BROKER: direct messages, broadcasts, pub/sub topics
//! and queue management over bounded mailboxes.
//!
//! # How a message travels
//!
//! Every registered agent owns a [`Mailbox`], the receiving end of a bounded
//! crossbeam channel (1,000 deep by default). The broker keeps the sending
//! ends in a registry split into shards by agent id, each behind its own
//! `RwLock`, so a `send` takes one shard's read lock for the duration of a
//! non-blocking `try_send` and no lock is shared by all senders. A
//! [`Message`] is one pointer wide, so an idle mailbox costs about 16 KB.
//!
//! A full mailbox never blocks a sender forever and never drops silently:
//! [`MessageBroker::send`] refuses at once with [`Error::Full`] (the caller
//! still owns the body), [`MessageBroker::send_timeout`] waits at most its
//! timeout, and a fan-out ([`MessageBroker::broadcast`],
//! [`MessageBroker::publish`]) reports who was full or gone in its
//! [`Delivery`] and keeps each undelivered copy as a [`DeadLetter`].
//!
//! # Closing
//!
//! Two things end a mailbox. [`MessageBroker::unregister`] removes its
//! sending end: the owner still receives what was queued, then
//! [`Error::Disconnected`]. Dropping the [`Mailbox`] (its agent stopped)
//! closes it: the broker keeps a second receiver for purging and measuring,
//! so the channel itself stays connected and a `closed` flag marks the end
//! instead. The owner sets the flag and then drains the queue into dead
//! letters; a sender pushes, counts the message and then checks the flag,
//! draining if it is set. The flag and the count are `SeqCst`, so at least
//! one of the two sees the other and no message is left unread (the
//! argument is spelled out on `MailboxShared::accepted`).
//!
//! # Across the nodes of a cluster
//!
//! The broker of an orchestrator that is a node of a cluster on Redis
//! (feature `redis`) holds a [`Remote`]: the node's relay (`redis_relay.rs`).
//! A message for an id that is not registered here and belongs to another
//! node goes to that node's relay stream in Redis; the node's relay thread
//! delivers it into the local mailbox. Broadcasts and publications are
//! queued once for every other live node, then delivered here as on one
//! host. Local sends are untouched: the relay is consulted only after the
//! registry lookup found nothing.

mod ledger;
mod mailbox;
mod message;
#[cfg(feature = "redis")]
pub(crate) mod redis_relay;
mod stats;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{SendTimeoutError, Sender, TrySendError};
use crossbeam_utils::CachePadded;
use parking_lot::RwLock;
use serde::Serialize;

use crate::error::{Error, Missing, Result};
use crate::ids::{AgentId, Role};

use ledger::Ledger;
pub use mailbox::Mailbox;
use mailbox::MailboxShared;
pub use message::{Control, Message, MessageKind};
#[cfg(feature = "redis")]
pub use redis_relay::DEFAULT_RELAY_CAPACITY;
pub use stats::{BrokerStats, DeadLetter, DeadLetterReason, Delivery, MailboxStats};

/// Default depth of every mailbox, as in the seed.
pub const DEFAULT_MAILBOX_CAPACITY: usize = 1_000;
/// Default number of dead letters kept.
pub const DEFAULT_DEAD_LETTER_CAPACITY: usize = 1_024;

const SHARDS: usize = 16;

/// Routes messages between agents: direct, broadcast, topics.
///
/// Cheap to clone (one `Arc`), `Send + Sync`; every clone is the same broker.
/// It can be used on its own, or through an
/// [`Orchestrator`](crate::Orchestrator), which registers a mailbox for
/// every agent it spawns.
///
/// ```
/// use agentry::{AgentId, MessageBroker};
///
/// let broker = MessageBroker::new(1_000);
/// let alice = AgentId::from(1);
/// let bob = AgentId::from(2);
/// let alice_mail = broker.register(alice)?;
/// let bob_mail = broker.register(bob)?;
///
/// // Direct.
/// broker.send(alice, bob, &"hi bob")?;
/// assert_eq!(bob_mail.recv()?.body::<String>()?, "hi bob");
///
/// // Pub/sub.
/// broker.subscribe(alice, "prices")?;
/// let delivery = broker.publish(bob, "prices", &42.5f64)?;
/// assert_eq!(delivery.reached(), 1);
/// let update = alice_mail.recv()?;
/// assert_eq!(update.topic(), Some("prices"));
/// assert_eq!(update.body::<f64>()?, 42.5);
/// # Ok::<(), agentry::Error>(())
/// ```
#[derive(Clone)]
pub struct MessageBroker {
    inner: Arc<Inner>,
}

struct Inner {
    capacity: usize,
    /// Padded so that senders to different shards never share a line.
    shards: Box<[CachePadded<Shard>]>,
    topics: RwLock<HashMap<String, Arc<[AgentId]>>>,
    ledger: Arc<Ledger>,
    /// On a cluster node: where messages for the other nodes go.
    remote: Option<Arc<dyn Remote>>,
}

/// Where a broker sends what is for agents of other nodes (the relay of a
/// cluster on Redis). Implementations deliver on the receiving node with
/// the broker's `*_here` methods, which never relay again.
pub(crate) trait Remote: Send + Sync + std::fmt::Debug {
    /// This node's number ([`AgentId::node`] of its agents).
    fn node(&self) -> u32;

    /// Queues `message` for `to`, an agent of another node.
    ///
    /// # Errors
    /// [`Error::NotFound`] when `to`'s node is not live;
    /// [`Error::Full`] when its relay stream is at its bound (`capacity` is
    /// the bound, 0 while Redis lacks it); [`Error::Backend`] when Redis
    /// cannot be reached.
    fn send(&self, to: AgentId, message: &Message) -> Result<()>;

    /// Queues a fan-out (broadcast, to `role` if given, or publication) for
    /// every other live node; returns how many got it and which were full.
    ///
    /// # Errors
    /// [`Error::Backend`] when Redis cannot be reached.
    fn fan_out(&self, message: &Message, role: Option<&Role>) -> Result<(usize, Vec<u32>)>;
}

/// One part of the registry: the mailboxes whose id falls in it.
type Shard = RwLock<HashMap<AgentId, Arc<Slot>>>;

/// The sending end of one mailbox, as the registry holds it.
struct Slot {
    sender: Sender<Message>,
    shared: Arc<MailboxShared>,
    role: Option<Role>,
}

/// Configures a [`MessageBroker`].
///
/// ```
/// use agentry::MessageBroker;
/// let broker = MessageBroker::builder()
///     .mailbox_capacity(64)
///     .dead_letter_capacity(10)
///     .build()?;
/// # Ok::<(), agentry::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct BrokerBuilder {
    mailbox_capacity: usize,
    dead_letter_capacity: usize,
    remote: Option<Arc<dyn Remote>>,
}

impl Default for BrokerBuilder {
    fn default() -> Self {
        BrokerBuilder {
            mailbox_capacity: DEFAULT_MAILBOX_CAPACITY,
            dead_letter_capacity: DEFAULT_DEAD_LETTER_CAPACITY,
            remote: None,
        }
    }
}

impl BrokerBuilder {
    /// How many messages each mailbox holds before sends are refused with
    /// [`Error::Full`]. Default 1,000; must be at least 1.
    pub fn mailbox_capacity(mut self, capacity: usize) -> Self {
        self.mailbox_capacity = capacity;
        self
    }

    /// How many dead letters are kept (the oldest are dropped first, and
    /// counted). Default 1,024; 0 keeps none but still counts them.
    pub fn dead_letter_capacity(mut self, capacity: usize) -> Self {
        self.dead_letter_capacity = capacity;
        self
    }

    /// Makes the broker one node's of a cluster: messages for other nodes'
    /// agents go to `remote`.
    #[cfg(feature = "redis")]
    pub(crate) fn remote(mut self, remote: Arc<dyn Remote>) -> Self {
        self.remote = Some(remote);
        self
    }

    /// Builds the broker.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the mailbox capacity is 0.
    pub fn build(self) -> Result<MessageBroker> {
        if self.mailbox_capacity == 0 {
            return Err(Error::InvalidConfig(
                "mailbox capacity must be at least 1".into(),
            ));
        }
        Ok(MessageBroker::with_settings(
            self.mailbox_capacity,
            self.dead_letter_capacity,
            self.remote,
        ))
    }
}

impl MessageBroker {
    /// A broker whose mailboxes hold `mailbox_capacity` messages each (a
    /// capacity of 0 is raised to 1: a mailbox must hold a message to be of
    /// use). See [`MessageBroker::builder`] for the other settings.
    pub fn new(mailbox_capacity: usize) -> MessageBroker {
        MessageBroker::with_settings(mailbox_capacity.max(1), DEFAULT_DEAD_LETTER_CAPACITY, None)
    }

    fn with_settings(
        mailbox_capacity: usize,
        dead_letter_capacity: usize,
        remote: Option<Arc<dyn Remote>>,
    ) -> MessageBroker {
        MessageBroker {
            inner: Arc::new(Inner {
                capacity: mailbox_capacity,
                shards: (0..SHARDS)
                    .map(|_| CachePadded::new(RwLock::new(HashMap::new())))
                    .collect(),
                topics: RwLock::new(HashMap::new()),
                ledger: Arc::new(Ledger::new(dead_letter_capacity)),
                remote,
            }),
        }
    }

    /// A builder with every default.
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder::default()
    }

    /// The capacity of every mailbox.
    pub fn mailbox_capacity(&self) -> usize {
        self.inner.capacity
    }

    /// The number of the cluster node this broker serves (see
    /// [`AgentId::node`]): set on an orchestrator that is a node of a
    /// cluster on Redis, 0 elsewhere.
    pub fn node(&self) -> u32 {
        self.inner.remote.as_ref().map_or(0, |remote| remote.node())
    }

    fn shard(&self, id: AgentId) -> &Shard {
        &self.inner.shards[(id.get() as usize) % SHARDS]
    }

    fn slot(&self, id: AgentId) -> Option<Arc<Slot>> {
        self.shard(id).read().get(&id).cloned()
    }

    /// Registers `id` and returns its mailbox.
    ///
    /// # Errors
    /// [`Error::AlreadyRegistered`] when `id` is registered already.
    pub fn register(&self, id: AgentId) -> Result<Mailbox> {
        self.register_slot(id, None)
    }

    /// Registers `id` with a role, so that
    /// [`broadcast_to_role`](MessageBroker::broadcast_to_role) reaches it.
    ///
    /// # Errors
    /// [`Error::AlreadyRegistered`] when `id` is registered already.
    pub fn register_with_role(&self, id: AgentId, role: Role) -> Result<Mailbox> {
        self.register_slot(id, Some(role))
    }

    fn register_slot(&self, id: AgentId, role: Option<Role>) -> Result<Mailbox> {
        let mut shard = self.shard(id).write();
        if shard.contains_key(&id) {
            return Err(Error::AlreadyRegistered { agent: id });
        }
        let (sender, receiver) = crossbeam_channel::bounded(self.inner.capacity);
        let shared = Arc::new(MailboxShared::new(
            id,
            self.inner.capacity,
            receiver.clone(),
            Arc::clone(&self.inner.ledger),
        ));
        self.inner.ledger.track(&shared);
        shard.insert(
            id,
            Arc::new(Slot {
                sender,
                shared: Arc::clone(&shared),
                role,
            }),
        );
        Ok(Mailbox::new(receiver, shared))
    }

    /// Removes `id` and its topic subscriptions. Its mailbox still yields
    /// the messages already queued, then [`Error::Disconnected`]; sends to
    /// `id` fail with [`Error::NotFound`] from now on.
    ///
    /// # Errors
    /// [`Error::NotFound`] when `id` is not registered.
    pub fn unregister(&self, id: AgentId) -> Result<()> {
        if self.shard(id).write().remove(&id).is_none() {
            return Err(Error::unknown_agent(id));
        }
        let mut topics = self.inner.topics.write();
        topics.retain(|_, subscribers| {
            if subscribers.contains(&id) {
                *subscribers = subscribers.iter().copied().filter(|s| *s != id).collect();
            }
            !subscribers.is_empty()
        });
        Ok(())
    }

    /// Whether `id` is registered.
    pub fn is_registered(&self, id: AgentId) -> bool {
        self.shard(id).read().contains_key(&id)
    }

    /// Every registered id, in ascending order.
    pub fn registered(&self) -> Vec<AgentId> {
        let mut ids: Vec<AgentId> = self
            .inner
            .shards
            .iter()
            .flat_map(|shard| shard.read().keys().copied().collect::<Vec<_>>())
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Sends `body` from `from` to `to` without ever blocking.
    ///
    /// `from` is a label for the recipient; it need not be registered.
    ///
    /// On a cluster node (feature `redis`), a `to` of another live node
    /// ([`AgentId::node`]) is queued in that node's relay stream in Redis
    /// (one round trip) and delivered by its relay thread. That node's
    /// mailbox cannot answer at once: if it is full (or `to` is not
    /// registered there), the receiving node keeps the message as a
    /// [`DeadLetter`] (reason [`DeadLetterReason::Full`] or
    /// [`DeadLetterReason::UnknownRecipient`]) and counts it in its
    /// [`BrokerStats::dead_lettered`]. So `Full` is an error for a local
    /// send and a dead letter on the receiver for a remote one.
    ///
    /// # Errors
    /// * [`Error::Full`] when `to`'s mailbox is full: nothing was queued. On
    ///   a cluster node, also when `to`'s node has its relay stream at its
    ///   bound (`capacity` is then that bound).
    /// * [`Error::NotFound`] when `to` is not registered (on a cluster node:
    ///   here, nor on a live node), and [`Error::Disconnected`] when its
    ///   agent stopped; the message is kept as a [`DeadLetter`].
    /// * [`Error::Codec`] when `body` cannot be encoded.
    /// * On a cluster node, [`Error::Backend`] when Redis cannot be reached
    ///   for a remote `to` (the message may or may not have been queued).
    pub fn send<T: Serialize + ?Sized>(&self, from: AgentId, to: AgentId, body: &T) -> Result<()> {
        let message = Message::encode(from, MessageKind::Direct, body)?;
        self.deliver(to, message)
    }

    /// Sends a control signal ([`Control::Stop`], [`Control::Ping`]) to `to`,
    /// without blocking.
    ///
    /// # Errors
    /// As [`MessageBroker::send`].
    pub fn send_control(&self, from: AgentId, to: AgentId, signal: Control) -> Result<()> {
        let message = Message::encode(from, MessageKind::Control, &signal)?;
        self.deliver(to, message)
    }

    /// Queues a prepared message for `to` without blocking.
    pub(crate) fn deliver(&self, to: AgentId, message: Message) -> Result<()> {
        let shard = self.shard(to).read();
        let Some(slot) = shard.get(&to) else {
            drop(shard);
            return self.deliver_elsewhere(to, message, None);
        };
        self.send_to(to, slot, message, None)
    }

    /// For an id not registered here: relays it to its node on a cluster
    /// (retrying a full relay stream until `deadline`, if given), else keeps
    /// it as a dead letter and reports the id unknown.
    #[cold]
    fn deliver_elsewhere(
        &self,
        to: AgentId,
        message: Message,
        deadline: Option<std::time::Instant>,
    ) -> Result<()> {
        let remote = self
            .inner
            .remote
            .as_ref()
            .filter(|remote| to.node() != 0 && to.node() != remote.node());
        if let Some(remote) = remote {
            loop {
                match remote.send(to, &message) {
                    Err(Error::Full { .. })
                        if deadline.is_some_and(|d| std::time::Instant::now() < d) =>
                    {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(Error::NotFound { .. }) => break,
                    relayed => return relayed,
                }
            }
        }
        self.dead_letter(to, DeadLetterReason::UnknownRecipient, message);
        Err(Error::unknown_agent(to))
    }

    /// Delivers a message relayed from another node to `to`, registered
    /// here, without relaying again: what cannot be queued is a dead letter.
    #[cfg(feature = "redis")]
    pub(crate) fn deliver_here(&self, to: AgentId, message: Message) {
        match self.slot(to) {
            Some(slot) => self.offer(to, &slot, message, &mut Delivery::default()),
            None => self.dead_letter(to, DeadLetterReason::UnknownRecipient, message),
        }
    }

    /// Queues `message` in `slot`'s mailbox: at once, or waiting at most
    /// `timeout` for room. Full: refused and counted; closed: a dead letter.
    fn send_to(
        &self,
        to: AgentId,
        slot: &Slot,
        message: Message,
        timeout: Option<Duration>,
    ) -> Result<()> {
        if slot.shared.is_closed() {
            self.dead_letter(to, DeadLetterReason::Closed, message);
            return Err(Error::Disconnected { agent: to });
        }
        // `Err(None)`: full; `Err(Some(message))`: the receiving end is gone.
        let sent = match timeout {
            None => slot.sender.try_send(message).map_err(|e| match e {
                TrySendError::Full(_) => None,
                TrySendError::Disconnected(message) => Some(message),
            }),
            Some(timeout) => slot
                .sender
                .send_timeout(message, timeout)
                .map_err(|e| match e {
                    SendTimeoutError::Timeout(_) => None,
                    SendTimeoutError::Disconnected(message) => Some(message),
                }),
        };
        match sent {
            Ok(()) => {
                slot.shared.accepted();
                Ok(())
            }
            Err(None) => {
                slot.shared.refused_full();
                Err(Error::Full {
                    agent: to,
                    capacity: self.inner.capacity,
                })
            }
            Err(Some(message)) => {
                self.dead_letter(to, DeadLetterReason::Closed, message);
                Err(Error::Disconnected { agent: to })
            }
        }
    }

    /// Sends `body` from `from` to `to`, waiting at most `timeout` for room
    /// in a full mailbox. On a cluster node, for an agent of another node,
    /// it waits for room in that node's relay stream instead (see
    /// [`send`](MessageBroker::send)).
    ///
    /// # Errors
    /// * [`Error::Full`] when the mailbox stayed full for `timeout`: nothing
    ///   was queued.
    /// * Otherwise as [`MessageBroker::send`].
    pub fn send_timeout<T: Serialize + ?Sized>(
        &self,
        from: AgentId,
        to: AgentId,
        body: &T,
        timeout: Duration,
    ) -> Result<()> {
        let message = Message::encode(from, MessageKind::Direct, body)?;
        let Some(slot) = self.slot(to) else {
            let deadline = crate::clock::deadline_after(timeout);
            return self.deliver_elsewhere(to, message, Some(deadline));
        };
        // The registry lock is not held while waiting, so `unregister` and
        // other senders are never held up by a slow recipient.
        self.send_to(to, &slot, message, Some(timeout))
    }

    /// Sends `body` to every registered agent except `from`, without
    /// blocking.
    ///
    /// On a cluster node (feature `redis`), the message is first queued once
    /// in the relay stream of every other live node (one round trip for
    /// all), whose relay threads deliver it to all their agents; then it is
    /// delivered here. The [`Delivery`] counts this node's recipients and
    /// the nodes relayed to ([`Delivery::relayed`]); see [`Delivery`].
    ///
    /// # Errors
    /// [`Error::Codec`] when `body` cannot be encoded. Full or closed
    /// recipients are not errors: they are listed in the [`Delivery`] and
    /// their copies kept as dead letters. On a cluster node,
    /// [`Error::Backend`] when Redis cannot be reached: then nothing was
    /// delivered here (the other nodes may or may not have got it).
    pub fn broadcast<T: Serialize + ?Sized>(&self, from: AgentId, body: &T) -> Result<Delivery> {
        self.fan_out(from, None, body)
    }

    /// Sends `body` to every registered agent of `role` except `from`,
    /// without blocking. Only agents registered with
    /// [`register_with_role`](MessageBroker::register_with_role) have a role
    /// (an orchestrator registers each agent with its role). On a cluster
    /// node, the agents of `role` on every live node, as
    /// [`broadcast`](MessageBroker::broadcast) does.
    ///
    /// # Errors
    /// As [`MessageBroker::broadcast`].
    pub fn broadcast_to_role<T: Serialize + ?Sized>(
        &self,
        from: AgentId,
        role: &Role,
        body: &T,
    ) -> Result<Delivery> {
        self.fan_out(from, Some(role), body)
    }

    fn fan_out<T: Serialize + ?Sized>(
        &self,
        from: AgentId,
        role: Option<&Role>,
        body: &T,
    ) -> Result<Delivery> {
        let body: Arc<[u8]> = postcard::to_allocvec(body)?.into();
        let mut delivery = self.relay(role, || {
            Message::shared(from, MessageKind::Broadcast, None, Arc::clone(&body))
        })?;
        self.fan_out_here(from, role, body, &mut delivery);
        Ok(delivery)
    }

    /// Delivers a broadcast (to `role`'s agents, if given) to the agents
    /// registered here, without relaying it.
    pub(crate) fn fan_out_here(
        &self,
        from: AgentId,
        role: Option<&Role>,
        body: Arc<[u8]>,
        delivery: &mut Delivery,
    ) {
        for shard in self.inner.shards.iter() {
            let recipients: Vec<(AgentId, Arc<Slot>)> = shard
                .read()
                .iter()
                .filter(|(id, slot)| {
                    **id != from && role.is_none_or(|role| slot.role.as_ref() == Some(role))
                })
                .map(|(id, slot)| (*id, Arc::clone(slot)))
                .collect();
            for (id, slot) in recipients {
                let message =
                    Message::shared(from, MessageKind::Broadcast, None, Arc::clone(&body));
                self.offer(id, &slot, message, delivery);
            }
        }
    }

    /// On a cluster node, queues a fan-out for every other live node and
    /// starts its [`Delivery`] with the outcome; a node whose relay stream
    /// is full gets a dead letter. Elsewhere, an empty `Delivery`.
    fn relay(&self, role: Option<&Role>, message: impl FnOnce() -> Message) -> Result<Delivery> {
        let mut delivery = Delivery::default();
        if let Some(remote) = &self.inner.remote {
            let message = message();
            let (relayed, full) = remote.fan_out(&message, role)?;
            for &node in &full {
                self.dead_letter(
                    AgentId::on_node(node, 0),
                    DeadLetterReason::RelayFull,
                    message.clone(),
                );
            }
            delivery.relayed = relayed;
            delivery.relay_full = full;
        }
        Ok(delivery)
    }

    /// Queues one copy of a fan-out and records the outcome.
    fn offer(&self, id: AgentId, slot: &Slot, message: Message, delivery: &mut Delivery) {
        if slot.shared.is_closed() {
            delivery.closed.push(id);
            self.dead_letter(id, DeadLetterReason::Closed, message);
            return;
        }
        match slot.sender.try_send(message) {
            Ok(()) => {
                slot.shared.accepted();
                delivery.reached += 1;
            }
            Err(TrySendError::Full(message)) => {
                slot.shared.refused_full();
                delivery.full.push(id);
                self.dead_letter(id, DeadLetterReason::Full, message);
            }
            Err(TrySendError::Disconnected(message)) => {
                delivery.closed.push(id);
                self.dead_letter(id, DeadLetterReason::Closed, message);
            }
        }
    }

    /// Subscribes `id` to `topic`. Subscribing twice is the same as once.
    ///
    /// # Errors
    /// [`Error::NotFound`] when `id` is not registered;
    /// [`Error::InvalidInput`] when `topic` is empty.
    pub fn subscribe(&self, id: AgentId, topic: &str) -> Result<()> {
        if topic.is_empty() {
            return Err(Error::InvalidInput("topic name is empty".into()));
        }
        if !self.is_registered(id) {
            return Err(Error::unknown_agent(id));
        }
        {
            let mut topics = self.inner.topics.write();
            let subscribers = topics
                .entry(topic.to_owned())
                .or_insert_with(|| Arc::from(Vec::new()));
            if !subscribers.contains(&id) {
                let mut grown = subscribers.to_vec();
                grown.push(id);
                *subscribers = grown.into();
            }
        }
        // `unregister` may have run between the check and the insert: undo,
        // so no stale subscription outlives its agent.
        if !self.is_registered(id) {
            let _ = self.unsubscribe(id, topic);
            return Err(Error::unknown_agent(id));
        }
        Ok(())
    }

    /// Ends `id`'s subscription to `topic`.
    ///
    /// # Errors
    /// [`Error::NotFound`] when `id` is not subscribed to `topic`.
    pub fn unsubscribe(&self, id: AgentId, topic: &str) -> Result<()> {
        let mut topics = self.inner.topics.write();
        let not_subscribed = || Error::NotFound {
            what: Missing::Subscription {
                agent: id,
                topic: topic.to_owned(),
            },
        };
        let subscribers = topics.get_mut(topic).ok_or_else(not_subscribed)?;
        if !subscribers.contains(&id) {
            return Err(not_subscribed());
        }
        let remaining: Vec<AgentId> = subscribers.iter().copied().filter(|s| *s != id).collect();
        if remaining.is_empty() {
            topics.remove(topic);
        } else {
            *subscribers = remaining.into();
        }
        Ok(())
    }

    /// The agents subscribed to `topic`, in subscription order.
    pub fn subscribers(&self, topic: &str) -> Vec<AgentId> {
        self.inner
            .topics
            .read()
            .get(topic)
            .map(|s| s.to_vec())
            .unwrap_or_default()
    }

    /// Publishes `body` on `topic` to every subscriber (the publisher
    /// included, if subscribed), without blocking. A topic nobody is
    /// subscribed to reaches nobody; that is not an error.
    ///
    /// On a cluster node (feature `redis`), subscriptions stay with the node
    /// of the subscriber: the publication is queued once in the relay stream
    /// of every other live node, whose relay thread delivers it to its own
    /// subscribers (if any), then delivered to the subscribers here. The
    /// [`Delivery`] counts this node's subscribers and the nodes relayed to.
    ///
    /// # Errors
    /// [`Error::Codec`] when `body` cannot be encoded;
    /// [`Error::InvalidInput`] when `topic` is empty. Full or closed
    /// subscribers are listed in the [`Delivery`] and their copies kept as
    /// dead letters. On a cluster node, [`Error::Backend`] when Redis cannot
    /// be reached: then nothing was delivered here.
    pub fn publish<T: Serialize + ?Sized>(
        &self,
        from: AgentId,
        topic: &str,
        body: &T,
    ) -> Result<Delivery> {
        if topic.is_empty() {
            return Err(Error::InvalidInput("topic name is empty".into()));
        }
        let subscribers = self.inner.topics.read().get(topic).cloned();
        if subscribers.is_none() && self.inner.remote.is_none() {
            return Ok(Delivery::default());
        }
        let body: Arc<[u8]> = postcard::to_allocvec(body)?.into();
        let topic: Arc<str> = Arc::from(topic);
        let mut delivery = self.relay(None, || {
            Message::shared(
                from,
                MessageKind::Publication,
                Some(Arc::clone(&topic)),
                Arc::clone(&body),
            )
        })?;
        if let Some(subscribers) = subscribers {
            self.publish_to(&subscribers, from, topic, body, &mut delivery);
        }
        Ok(delivery)
    }

    /// Delivers a publication relayed from another node to the subscribers
    /// registered here, without relaying it again.
    #[cfg(feature = "redis")]
    pub(crate) fn publish_here(
        &self,
        from: AgentId,
        topic: Arc<str>,
        body: Arc<[u8]>,
        delivery: &mut Delivery,
    ) {
        let subscribers = self.inner.topics.read().get(&*topic).cloned();
        if let Some(subscribers) = subscribers {
            self.publish_to(&subscribers, from, topic, body, delivery);
        }
    }

    fn publish_to(
        &self,
        subscribers: &[AgentId],
        from: AgentId,
        topic: Arc<str>,
        body: Arc<[u8]>,
        delivery: &mut Delivery,
    ) {
        for &id in subscribers {
            let shard = self.shard(id).read();
            // An agent unregistered since the list was read is no longer a
            // subscriber: skipping it is not a loss.
            if let Some(slot) = shard.get(&id) {
                let message = Message::shared(
                    from,
                    MessageKind::Publication,
                    Some(Arc::clone(&topic)),
                    Arc::clone(&body),
                );
                self.offer(id, slot, message, delivery);
            }
        }
    }

    /// Messages waiting in `id`'s mailbox, or `None` when `id` is not
    /// registered.
    pub fn depth(&self, id: AgentId) -> Option<usize> {
        self.slot(id).map(|slot| slot.shared.depth())
    }

    /// Queue figures of `id`'s mailbox, or `None` when `id` is not
    /// registered.
    pub fn mailbox_stats(&self, id: AgentId) -> Option<MailboxStats> {
        self.slot(id).map(|slot| slot.shared.stats())
    }

    /// Removes every message waiting in `id`'s mailbox and returns how many
    /// there were (counted in [`BrokerStats::purged`]).
    ///
    /// # Errors
    /// [`Error::NotFound`] when `id` is not registered.
    pub fn purge(&self, id: AgentId) -> Result<usize> {
        let slot = self.slot(id).ok_or_else(|| Error::unknown_agent(id))?;
        Ok(slot.shared.purge())
    }

    /// A snapshot of the broker-wide counters: every mailbox, live or
    /// dropped.
    pub fn stats(&self) -> BrokerStats {
        let registered = self.inner.shards.iter().map(|s| s.read().len()).sum();
        self.inner.ledger.stats(registered)
    }

    /// A copy of the dead letters kept, oldest first.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.inner.ledger.dead_letters()
    }

    /// Takes the dead letters kept, oldest first, leaving the record empty.
    pub fn take_dead_letters(&self) -> Vec<DeadLetter> {
        self.inner.ledger.take_dead_letters()
    }

    fn dead_letter(&self, to: AgentId, reason: DeadLetterReason, message: Message) {
        self.inner.ledger.record(to, reason, message);
    }
}

impl std::fmt::Debug for MessageBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageBroker")
            .field("mailbox_capacity", &self.inner.capacity)
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod test;
