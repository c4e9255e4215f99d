//! The receiving end of one agent's mailbox.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use crossbeam_utils::CachePadded;

use super::ledger::Ledger;
use super::message::Message;
use super::stats::{DeadLetterReason, MailboxStats};
use crate::error::{Error, Result};
use crate::ids::AgentId;

/// How long a blocking receive polls before it sleeps.
const POLL_BEFORE_SLEEP: Duration = Duration::from_micros(20);

/// State of one mailbox shared by its senders (through the broker's
/// registry) and its owner.
pub(crate) struct MailboxShared {
    pub(crate) id: AgentId,
    pub(crate) capacity: usize,
    /// A second receiver, so the broker can purge and measure the queue. It
    /// also keeps the channel connected after the owner is gone, which is why
    /// `closed` exists: see [`MailboxShared::close`].
    receiver: Receiver<Message>,
    /// Written by senders only.
    sender_side: CachePadded<SenderSide>,
    /// Written by the owner only.
    receiver_side: CachePadded<ReceiverSide>,
    purged: AtomicU64,
    ledger: Arc<Ledger>,
}

#[derive(Default)]
struct SenderSide {
    closed: AtomicBool,
    sent: AtomicU64,
    refused_full: AtomicU64,
}

#[derive(Default)]
struct ReceiverSide {
    delivered: AtomicU64,
    /// The deepest queue seen by a receive. Depth only grows between two
    /// receives, so sampling it as each message is taken (plus the current
    /// depth when asked) catches every peak without costing senders a read
    /// of the receiver's cache line.
    high_water: AtomicUsize,
}

/// One mailbox's counters, summed by the [`Ledger`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MailboxCounts {
    pub(crate) sent: u64,
    pub(crate) delivered: u64,
    pub(crate) refused_full: u64,
    pub(crate) purged: u64,
}

impl MailboxShared {
    pub(crate) fn new(
        id: AgentId,
        capacity: usize,
        receiver: Receiver<Message>,
        ledger: Arc<Ledger>,
    ) -> MailboxShared {
        MailboxShared {
            id,
            capacity,
            receiver,
            sender_side: CachePadded::new(SenderSide::default()),
            receiver_side: CachePadded::new(ReceiverSide::default()),
            purged: AtomicU64::new(0),
            ledger,
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.sender_side.closed.load(Ordering::SeqCst)
    }

    pub(crate) fn depth(&self) -> usize {
        self.receiver.len()
    }

    /// Records a successful send. Then, if the owner closed the mailbox
    /// meanwhile, moves what is queued to the dead letters.
    ///
    /// Either this check sees `closed`, or the owner's drain in
    /// [`MailboxShared::close`] sees the message: the increment of `sent` and
    /// the store of `closed` are both `SeqCst`, so one precedes the other in
    /// the single total order. If the store comes first, the load below sees
    /// it. If the increment comes first, the owner's `SeqCst` load of `sent`
    /// reads it and so synchronises with this sender: the push happened
    /// before the owner's drain. No message stays in a channel nobody reads.
    pub(crate) fn accepted(&self) {
        self.sender_side.sent.fetch_add(1, Ordering::SeqCst);
        if self.sender_side.closed.load(Ordering::SeqCst) {
            self.drain_to_dead_letters();
        }
    }

    pub(crate) fn refused_full(&self) {
        self.sender_side
            .refused_full
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The owner is gone: refuse further sends and keep what was queued as
    /// dead letters.
    fn close(&self) {
        self.sender_side.closed.store(true, Ordering::SeqCst);
        // Synchronise with every sender whose increment came first; see
        // `accepted`.
        self.sender_side.sent.load(Ordering::SeqCst);
        self.drain_to_dead_letters();
    }

    fn drain_to_dead_letters(&self) {
        while let Ok(message) = self.receiver.try_recv() {
            self.ledger
                .record(self.id, DeadLetterReason::Closed, message);
        }
    }

    fn received(&self, depth_before: usize) {
        let side = &self.receiver_side;
        side.delivered.fetch_add(1, Ordering::Relaxed);
        if depth_before > side.high_water.load(Ordering::Relaxed) {
            side.high_water.fetch_max(depth_before, Ordering::Relaxed);
        }
    }

    pub(crate) fn purge(&self) -> usize {
        let depth_before = self.depth();
        let mut purged = 0;
        while self.receiver.try_recv().is_ok() {
            purged += 1;
        }
        self.receiver_side
            .high_water
            .fetch_max(depth_before, Ordering::Relaxed);
        self.purged.fetch_add(purged as u64, Ordering::Relaxed);
        purged
    }

    pub(crate) fn counts(&self) -> MailboxCounts {
        MailboxCounts {
            sent: self.sender_side.sent.load(Ordering::Relaxed),
            delivered: self.receiver_side.delivered.load(Ordering::Relaxed),
            refused_full: self.sender_side.refused_full.load(Ordering::Relaxed),
            purged: self.purged.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn stats(&self) -> MailboxStats {
        let depth = self.depth();
        MailboxStats {
            depth,
            high_water: self
                .receiver_side
                .high_water
                .load(Ordering::Relaxed)
                .max(depth),
            capacity: self.capacity,
            refused_full: self.sender_side.refused_full.load(Ordering::Relaxed),
            purged: self.purged.load(Ordering::Relaxed),
        }
    }
}

impl Drop for MailboxShared {
    fn drop(&mut self) {
        self.ledger.retire(self.counts());
    }
}

/// The receiving end of one agent's mailbox, returned by
/// [`MessageBroker::register`](crate::MessageBroker::register).
///
/// Receiving blocks only in [`recv`](Mailbox::recv) (waiting forever for
/// your own mail is safe); [`try_recv`](Mailbox::try_recv) never blocks and
/// [`recv_timeout`](Mailbox::recv_timeout) waits at most its timeout. After
/// [`MessageBroker::unregister`](crate::MessageBroker::unregister), the
/// messages already queued are still received, then every receive returns
/// [`Error::Disconnected`].
///
/// Dropping a mailbox closes it: later sends to its id fail with
/// [`Error::Disconnected`], and messages still queued become dead letters.
pub struct Mailbox {
    receiver: Receiver<Message>,
    shared: Arc<MailboxShared>,
}

impl Mailbox {
    pub(crate) fn new(receiver: Receiver<Message>, shared: Arc<MailboxShared>) -> Mailbox {
        Mailbox { receiver, shared }
    }

    /// The agent this mailbox belongs to.
    pub fn id(&self) -> AgentId {
        self.shared.id
    }

    /// Waits for the next message.
    ///
    /// # Errors
    /// [`Error::Disconnected`] once the mailbox is unregistered and empty.
    pub fn recv(&self) -> Result<Message> {
        if let Some(message) = self.poll_briefly(POLL_BEFORE_SLEEP) {
            return Ok(self.delivered(message));
        }
        match self.receiver.recv() {
            Ok(message) => Ok(self.delivered(message)),
            Err(_) => Err(self.disconnected()),
        }
    }

    /// Waits at most `timeout` for the next message.
    ///
    /// # Errors
    /// [`Error::Timeout`] when nothing arrived in time;
    /// [`Error::Disconnected`] once the mailbox is unregistered and empty.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Message> {
        let deadline = crate::clock::deadline_after(timeout);
        if let Some(message) = self.poll_briefly(timeout.min(POLL_BEFORE_SLEEP)) {
            return Ok(self.delivered(message));
        }
        self.recv_until(deadline)
    }

    /// Waits until `deadline` for the next message without polling first:
    /// for a caller that has polled already, or that must not hold a
    /// processor while it waits.
    pub(crate) fn recv_until(&self, deadline: Instant) -> Result<Message> {
        match self.receiver.recv_deadline(deadline) {
            Ok(message) => Ok(self.delivered(message)),
            Err(RecvTimeoutError::Timeout) => Err(Error::Timeout),
            Err(RecvTimeoutError::Disconnected) => Err(self.disconnected()),
        }
    }

    /// Polls for up to `limit` before the caller blocks: a reply that comes
    /// within microseconds (a conversation between two agents) is then taken
    /// without the thread going to sleep and paying for a wake-up, which
    /// costs more than the message itself.
    fn poll_briefly(&self, limit: Duration) -> Option<Message> {
        let until = Instant::now() + limit;
        loop {
            if let Ok(message) = self.receiver.try_recv() {
                return Some(message);
            }
            if Instant::now() >= until {
                return None;
            }
            for _ in 0..32 {
                std::hint::spin_loop();
            }
        }
    }

    /// Takes the next message if there is one, without waiting.
    ///
    /// # Errors
    /// [`Error::Empty`] when no message is waiting;
    /// [`Error::Disconnected`] once the mailbox is unregistered and empty.
    pub fn try_recv(&self) -> Result<Message> {
        match self.receiver.try_recv() {
            Ok(message) => Ok(self.delivered(message)),
            Err(TryRecvError::Empty) => Err(Error::Empty),
            Err(TryRecvError::Disconnected) => Err(self.disconnected()),
        }
    }

    /// Takes every message waiting now, oldest first, without waiting for
    /// more (the receiving side of queue draining; the broker's
    /// [`purge`](super::MessageBroker::purge) discards them instead).
    ///
    /// ```
    /// use agentry::{AgentId, MessageBroker};
    ///
    /// let broker = MessageBroker::new(8);
    /// let mailbox = broker.register(AgentId::from(1))?;
    /// for n in 0..3u32 {
    ///     broker.send(AgentId::from(2), AgentId::from(1), &n)?;
    /// }
    /// let bodies: Vec<u32> = mailbox.drain().iter().map(|m| m.body().unwrap()).collect();
    /// assert_eq!(bodies, [0, 1, 2]);
    /// assert!(mailbox.is_empty());
    /// # Ok::<(), agentry::Error>(())
    /// ```
    pub fn drain(&self) -> Vec<Message> {
        let mut messages = Vec::with_capacity(self.receiver.len());
        while let Ok(message) = self.receiver.try_recv() {
            messages.push(self.delivered(message));
        }
        messages
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.receiver.len()
    }

    /// Whether no message is waiting.
    pub fn is_empty(&self) -> bool {
        self.receiver.is_empty()
    }

    /// How many messages the mailbox holds at most.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    fn delivered(&self, message: Message) -> Message {
        // The message is out of the queue already: count it back in.
        self.shared.received(self.receiver.len() + 1);
        message
    }

    fn disconnected(&self) -> Error {
        Error::Disconnected {
            agent: self.shared.id,
        }
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        self.shared.close();
    }
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("id", &self.shared.id)
            .field("len", &self.len())
            .field("capacity", &self.shared.capacity)
            .finish()
    }
}
