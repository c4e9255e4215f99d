//! The broker's books: dead letters and the totals of every mailbox, live
//! or gone.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use parking_lot::Mutex;

use super::mailbox::{MailboxCounts, MailboxShared};
use super::message::Message;
use super::stats::{BrokerStats, DeadLetter, DeadLetterReason};
use crate::ids::AgentId;

/// Counters live in each mailbox, on cache lines owned by its senders and by
/// its receiver, so the hot path never writes a line shared by all. The
/// ledger adds them up on demand: live mailboxes through weak references,
/// dropped ones through `retired`.
pub(crate) struct Ledger {
    mailboxes: Mutex<Vec<Weak<MailboxShared>>>,
    retired: Retired,
    dead_letters: Mutex<DeadLetterLog>,
    dead_letter_capacity: usize,
}

#[derive(Default)]
struct Retired {
    sent: AtomicU64,
    delivered: AtomicU64,
    refused_full: AtomicU64,
    purged: AtomicU64,
}

#[derive(Default)]
struct DeadLetterLog {
    records: VecDeque<DeadLetter>,
    recorded: u64,
    evicted: u64,
}

impl Ledger {
    pub(crate) fn new(dead_letter_capacity: usize) -> Ledger {
        Ledger {
            mailboxes: Mutex::new(Vec::new()),
            retired: Retired::default(),
            dead_letters: Mutex::new(DeadLetterLog::default()),
            dead_letter_capacity,
        }
    }

    pub(crate) fn track(&self, mailbox: &Arc<MailboxShared>) {
        let mut mailboxes = self.mailboxes.lock();
        mailboxes.retain(|m| m.strong_count() > 0);
        mailboxes.push(Arc::downgrade(mailbox));
    }

    /// Called as a mailbox's shared state is dropped.
    pub(crate) fn retire(&self, counts: MailboxCounts) {
        let r = &self.retired;
        r.sent.fetch_add(counts.sent, Ordering::Relaxed);
        r.delivered.fetch_add(counts.delivered, Ordering::Relaxed);
        r.refused_full
            .fetch_add(counts.refused_full, Ordering::Relaxed);
        r.purged.fetch_add(counts.purged, Ordering::Relaxed);
    }

    pub(crate) fn record(&self, to: AgentId, reason: DeadLetterReason, message: Message) {
        tracing::debug!(%to, ?reason, "dead letter");
        let mut log = self.dead_letters.lock();
        log.recorded += 1;
        if log.records.len() >= self.dead_letter_capacity {
            log.evicted += 1;
            if log.records.pop_front().is_none() {
                return;
            }
        }
        log.records.push_back(DeadLetter {
            to,
            reason,
            at: SystemTime::now(),
            message,
        });
    }

    pub(crate) fn dead_letters(&self) -> Vec<DeadLetter> {
        self.dead_letters.lock().records.iter().cloned().collect()
    }

    pub(crate) fn take_dead_letters(&self) -> Vec<DeadLetter> {
        self.dead_letters.lock().records.drain(..).collect()
    }

    pub(crate) fn stats(&self, registered: usize) -> BrokerStats {
        let r = &self.retired;
        let mut stats = BrokerStats {
            mailboxes: registered,
            sent: r.sent.load(Ordering::Relaxed),
            delivered: r.delivered.load(Ordering::Relaxed),
            refused_full: r.refused_full.load(Ordering::Relaxed),
            purged: r.purged.load(Ordering::Relaxed),
            ..BrokerStats::default()
        };
        for mailbox in self.mailboxes.lock().iter().filter_map(Weak::upgrade) {
            let counts = mailbox.counts();
            stats.sent += counts.sent;
            stats.delivered += counts.delivered;
            stats.refused_full += counts.refused_full;
            stats.purged += counts.purged;
        }
        let log = self.dead_letters.lock();
        stats.dead_lettered = log.recorded;
        stats.dead_letters_evicted = log.evicted;
        stats
    }
}
