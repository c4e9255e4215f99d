//! Behaviour of the message broker: every message kind, full mailboxes,
//! topics, unregistering, dead letters and many senders at once.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use agentry::{
    AgentId, Control, DeadLetterReason, Error, MessageBroker, MessageKind, Missing, Role,
};

fn id(n: u64) -> AgentId {
    AgentId::from(n)
}

const PATIENCE: Duration = Duration::from_secs(10);

#[test]
fn direct_message_carries_sender_kind_and_body() {
    let broker = MessageBroker::new(8);
    let mailbox = broker.register(id(2)).unwrap();
    broker.send(id(1), id(2), &vec![1u8, 2, 3]).unwrap();
    let message = mailbox.recv_timeout(PATIENCE).unwrap();
    assert_eq!(message.from(), id(1));
    assert_eq!(message.kind(), MessageKind::Direct);
    assert_eq!(message.topic(), None);
    assert_eq!(message.body::<Vec<u8>>().unwrap(), vec![1, 2, 3]);
}

#[test]
fn control_messages_decode_as_control() {
    let broker = MessageBroker::new(8);
    let mailbox = broker.register(id(1)).unwrap();
    broker.send_control(id(0), id(1), Control::Ping).unwrap();
    broker.send_control(id(0), id(1), Control::Stop).unwrap();
    for expected in [Control::Ping, Control::Stop] {
        let message = mailbox.try_recv().unwrap();
        assert_eq!(message.kind(), MessageKind::Control);
        assert_eq!(message.body::<Control>().unwrap(), expected);
    }
}

#[test]
fn body_of_the_wrong_type_is_a_codec_error_not_a_panic() {
    let broker = MessageBroker::new(8);
    let mailbox = broker.register(id(1)).unwrap();
    broker.send(id(0), id(1), &u64::MAX).unwrap();
    let message = mailbox.recv().unwrap();
    assert!(matches!(message.body::<String>(), Err(Error::Codec(_))));
    assert!(matches!(message.body::<bool>(), Err(Error::Codec(_))));
}

#[test]
fn full_mailbox_refuses_without_blocking() {
    let broker = MessageBroker::new(3);
    let mailbox = broker.register(id(1)).unwrap();
    for n in 0..3u32 {
        broker.send(id(0), id(1), &n).unwrap();
    }
    let started = Instant::now();
    let refused = broker.send(id(0), id(1), &3u32);
    assert!(started.elapsed() < PATIENCE);
    assert!(
        matches!(refused, Err(Error::Full { agent, capacity: 3 }) if agent == id(1)),
        "{refused:?}"
    );
    assert!(refused.unwrap_err().is_full());
    // Nothing was queued by the refused send.
    assert_eq!(mailbox.len(), 3);
    assert_eq!(broker.mailbox_stats(id(1)).unwrap().refused_full, 1);
    assert_eq!(broker.stats().refused_full, 1);
    let received: Vec<u32> = (0..3)
        .map(|_| mailbox.recv().unwrap().body().unwrap())
        .collect();
    assert_eq!(received, vec![0, 1, 2]);
}

#[test]
fn send_timeout_waits_about_its_timeout_on_a_full_mailbox() {
    let broker = MessageBroker::new(1);
    let _mailbox = broker.register(id(1)).unwrap();
    broker.send(id(0), id(1), &0u8).unwrap();
    let timeout = Duration::from_millis(50);
    let started = Instant::now();
    let refused = broker.send_timeout(id(0), id(1), &1u8, timeout);
    let waited = started.elapsed();
    assert!(refused.unwrap_err().is_full());
    assert!(waited >= timeout, "returned after {waited:?}");
    assert!(waited < timeout + PATIENCE, "returned after {waited:?}");
}

#[test]
fn send_timeout_succeeds_once_room_frees_up() {
    let broker = MessageBroker::new(1);
    let mailbox = broker.register(id(1)).unwrap();
    broker.send(id(0), id(1), &0u8).unwrap();
    let receiver = thread::spawn(move || {
        let first: u8 = mailbox.recv().unwrap().body().unwrap();
        let second: u8 = mailbox.recv().unwrap().body().unwrap();
        (first, second)
    });
    broker.send_timeout(id(0), id(1), &1u8, PATIENCE).unwrap();
    assert_eq!(receiver.join().unwrap(), (0, 1));
}

#[test]
fn unknown_recipient_is_an_error_and_a_dead_letter() {
    let broker = MessageBroker::new(8);
    let refused = broker.send(id(0), id(42), &"lost?");
    assert!(
        matches!(&refused, Err(Error::NotFound { what: Missing::Agent(a) }) if *a == id(42)),
        "{refused:?}"
    );
    assert!(broker.send_timeout(id(0), id(42), &"x", PATIENCE).is_err());
    let letters = broker.dead_letters();
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0].to, id(42));
    assert_eq!(letters[0].reason, DeadLetterReason::UnknownRecipient);
    assert_eq!(letters[0].message.body::<String>().unwrap(), "lost?");
    assert_eq!(broker.take_dead_letters().len(), 2);
    assert!(broker.dead_letters().is_empty());
}

#[test]
fn registering_twice_is_an_error() {
    let broker = MessageBroker::new(8);
    let _first = broker.register(id(1)).unwrap();
    assert!(matches!(
        broker.register(id(1)),
        Err(Error::AlreadyRegistered { agent }) if agent == id(1)
    ));
    assert!(matches!(
        broker.register_with_role(id(1), Role::Planner),
        Err(Error::AlreadyRegistered { .. })
    ));
}

#[test]
fn unregister_drains_then_disconnects() {
    let broker = MessageBroker::new(8);
    let mailbox = broker.register(id(1)).unwrap();
    broker.send(id(0), id(1), &1u8).unwrap();
    broker.send(id(0), id(1), &2u8).unwrap();
    broker.unregister(id(1)).unwrap();
    assert_eq!(mailbox.recv().unwrap().body::<u8>().unwrap(), 1);
    assert_eq!(mailbox.try_recv().unwrap().body::<u8>().unwrap(), 2);
    assert!(matches!(mailbox.recv(), Err(Error::Disconnected { agent }) if agent == id(1)));
    assert!(matches!(
        mailbox.try_recv(),
        Err(Error::Disconnected { .. })
    ));
    assert!(matches!(
        mailbox.recv_timeout(PATIENCE),
        Err(Error::Disconnected { .. })
    ));
    assert!(matches!(
        broker.send(id(0), id(1), &3u8),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        broker.unregister(id(1)),
        Err(Error::NotFound { .. })
    ));
    assert_eq!(broker.depth(id(1)), None);
    // The id can be registered again, with a fresh mailbox.
    let again = broker.register(id(1)).unwrap();
    assert!(again.is_empty());
}

#[test]
fn empty_mailbox_try_recv_and_recv_timeout() {
    let broker = MessageBroker::new(8);
    let mailbox = broker.register(id(1)).unwrap();
    assert!(matches!(mailbox.try_recv(), Err(Error::Empty)));
    assert!(matches!(
        mailbox.recv_timeout(Duration::from_millis(10)),
        Err(Error::Timeout)
    ));
}

#[test]
fn dropped_mailbox_refuses_sends_and_keeps_queued_messages_as_dead_letters() {
    let broker = MessageBroker::new(8);
    let mailbox = broker.register(id(1)).unwrap();
    broker.send(id(0), id(1), &"queued").unwrap();
    drop(mailbox);
    assert!(matches!(
        broker.send(id(0), id(1), &"late"),
        Err(Error::Disconnected { agent }) if agent == id(1)
    ));
    let letters = broker.dead_letters();
    let bodies: Vec<String> = letters.iter().map(|l| l.message.body().unwrap()).collect();
    assert_eq!(bodies, vec!["queued", "late"]);
    assert!(letters.iter().all(|l| l.reason == DeadLetterReason::Closed));
}

#[test]
fn broadcast_reaches_everyone_but_the_sender_and_reports_full_mailboxes() {
    let broker = MessageBroker::new(1);
    let mailboxes: Vec<_> = (1..=4).map(|n| broker.register(id(n)).unwrap()).collect();
    broker.send(id(0), id(3), &"filler").unwrap();
    let delivery = broker.broadcast(id(1), &"all hands").unwrap();
    assert_eq!(delivery.reached(), 2);
    assert_eq!(delivery.full(), &[id(3)]);
    assert!(!delivery.is_complete());
    assert!(mailboxes[0].is_empty(), "the sender got its own broadcast");
    for n in [1, 3] {
        let message = mailboxes[n].try_recv().unwrap();
        assert_eq!(message.kind(), MessageKind::Broadcast);
        assert_eq!(message.from(), id(1));
        assert_eq!(message.body::<String>().unwrap(), "all hands");
    }
    let letters = broker.dead_letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].to, id(3));
    assert_eq!(letters[0].reason, DeadLetterReason::Full);
    assert_eq!(letters[0].message.body::<String>().unwrap(), "all hands");
}

#[test]
fn broadcast_to_role_reaches_only_that_role() {
    let broker = MessageBroker::new(8);
    let planner = broker.register_with_role(id(1), Role::Planner).unwrap();
    let researcher_a = broker.register_with_role(id(2), Role::Researcher).unwrap();
    let researcher_b = broker.register_with_role(id(3), Role::Researcher).unwrap();
    let plain = broker.register(id(4)).unwrap();
    let delivery = broker
        .broadcast_to_role(id(0), &Role::Researcher, &"go")
        .unwrap();
    assert_eq!(delivery.reached(), 2);
    assert!(delivery.is_complete());
    assert!(planner.is_empty() && plain.is_empty());
    assert_eq!(researcher_a.len(), 1);
    assert_eq!(researcher_b.len(), 1);
}

#[test]
fn topics_reach_subscribers_until_they_unsubscribe() {
    let broker = MessageBroker::new(8);
    let a = broker.register(id(1)).unwrap();
    let b = broker.register(id(2)).unwrap();
    let c = broker.register(id(3)).unwrap();
    broker.subscribe(id(1), "news").unwrap();
    broker.subscribe(id(2), "news").unwrap();
    broker.subscribe(id(2), "news").unwrap();
    broker.subscribe(id(3), "weather").unwrap();
    assert_eq!(broker.subscribers("news"), vec![id(1), id(2)]);

    let delivery = broker.publish(id(9), "news", &1u32).unwrap();
    assert_eq!(delivery.reached(), 2);
    for mailbox in [&a, &b] {
        let message = mailbox.try_recv().unwrap();
        assert_eq!(message.kind(), MessageKind::Publication);
        assert_eq!(message.topic(), Some("news"));
        assert_eq!(message.body::<u32>().unwrap(), 1);
    }
    assert!(c.is_empty());

    broker.unsubscribe(id(1), "news").unwrap();
    assert_eq!(broker.publish(id(9), "news", &2u32).unwrap().reached(), 1);
    assert!(a.is_empty());
    assert_eq!(b.try_recv().unwrap().body::<u32>().unwrap(), 2);

    assert!(matches!(
        broker.unsubscribe(id(1), "news"),
        Err(Error::NotFound {
            what: Missing::Subscription { .. }
        })
    ));
    assert_eq!(broker.publish(id(9), "nobody", &3u32).unwrap().reached(), 0);
    assert!(matches!(
        broker.subscribe(id(77), "news"),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        broker.subscribe(id(1), ""),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        broker.publish(id(1), "", &0u8),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn unregister_ends_subscriptions() {
    let broker = MessageBroker::new(8);
    let _a = broker.register(id(1)).unwrap();
    broker.subscribe(id(1), "news").unwrap();
    broker.unregister(id(1)).unwrap();
    assert!(broker.subscribers("news").is_empty());
    assert_eq!(broker.publish(id(0), "news", &0u8).unwrap().reached(), 0);
}

#[test]
fn queue_management_depth_high_water_and_purge() {
    let broker = MessageBroker::new(10);
    let mailbox = broker.register(id(1)).unwrap();
    for n in 0..6u8 {
        broker.send(id(0), id(1), &n).unwrap();
    }
    mailbox.recv().unwrap();
    mailbox.recv().unwrap();
    assert_eq!(broker.depth(id(1)), Some(4));
    let stats = broker.mailbox_stats(id(1)).unwrap();
    assert_eq!(stats.depth, 4);
    assert_eq!(stats.high_water, 6);
    assert_eq!(stats.capacity, 10);
    assert_eq!(broker.purge(id(1)).unwrap(), 4);
    assert!(mailbox.is_empty());
    assert!(matches!(broker.purge(id(5)), Err(Error::NotFound { .. })));
    let totals = broker.stats();
    assert_eq!(totals.mailboxes, 1);
    assert_eq!(totals.sent, 6);
    assert_eq!(totals.delivered, 2);
    assert_eq!(totals.purged, 4);
}

#[test]
fn many_senders_one_receiver_lose_and_duplicate_nothing() {
    const SENDERS: u64 = 4;
    const EACH: u64 = 25_000;
    let broker = MessageBroker::new(1_000);
    let mailbox = broker.register(id(0)).unwrap();
    let senders: Vec<_> = (1..=SENDERS)
        .map(|sender| {
            let broker = broker.clone();
            thread::spawn(move || {
                for seq in 0..EACH {
                    // Retry on Full: the receiver is slower than four senders.
                    loop {
                        match broker.send(id(sender), id(0), &seq) {
                            Ok(()) => break,
                            Err(Error::Full { .. }) => thread::yield_now(),
                            Err(other) => panic!("unexpected {other}"),
                        }
                    }
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    let mut last_seq = vec![None; SENDERS as usize + 1];
    for _ in 0..SENDERS * EACH {
        let message = mailbox.recv_timeout(PATIENCE).expect("a message was lost");
        let seq: u64 = message.body().unwrap();
        let sender = message.from().get();
        assert!(seen.insert((sender, seq)), "duplicate {sender}/{seq}");
        // Per sender, the order of sending is kept.
        let previous = last_seq[sender as usize].replace(seq);
        assert!(previous.is_none_or(|p| p < seq));
    }
    for sender in senders {
        sender.join().unwrap();
    }
    assert!(mailbox.is_empty());
    let stats = broker.stats();
    assert_eq!(stats.sent, SENDERS * EACH);
    assert_eq!(stats.delivered, SENDERS * EACH);
}

#[test]
fn unregister_while_others_are_sending_accounts_for_every_message() {
    let broker = MessageBroker::new(1_000);
    let mailbox = broker.register(id(0)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (1..=3u64)
        .map(|sender| {
            let broker = broker.clone();
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let (mut accepted, mut refused) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    match broker.send(id(sender), id(0), &accepted) {
                        Ok(()) => accepted += 1,
                        Err(Error::Full { .. }) => thread::yield_now(),
                        Err(Error::NotFound { .. }) => refused += 1,
                        Err(other) => panic!("unexpected {other}"),
                    }
                    if refused > 100 {
                        break;
                    }
                }
                accepted
            })
        })
        .collect();
    let mut received = 0u64;
    while received < 5_000 {
        mailbox.recv_timeout(PATIENCE).unwrap();
        received += 1;
    }
    broker.unregister(id(0)).unwrap();
    // Everything accepted before and during unregister is still received.
    while mailbox.recv_timeout(PATIENCE).is_ok() {
        received += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let accepted: u64 = senders.into_iter().map(|s| s.join().unwrap()).sum();
    assert_eq!(received, accepted);
}

#[test]
fn mailbox_dropped_while_others_send_leaves_every_message_received_or_dead_lettered() {
    for _round in 0..20 {
        let broker = MessageBroker::builder()
            .mailbox_capacity(64)
            .dead_letter_capacity(1_000_000)
            .build()
            .unwrap();
        let mailbox = broker.register(id(0)).unwrap();
        let senders: Vec<_> = (1..=2u64)
            .map(|sender| {
                let broker = broker.clone();
                thread::spawn(move || {
                    let mut accepted = 0u64;
                    loop {
                        match broker.send(id(sender), id(0), &accepted) {
                            Ok(()) => accepted += 1,
                            Err(Error::Full { .. }) => thread::yield_now(),
                            Err(Error::Disconnected { .. }) => return accepted,
                            Err(other) => panic!("unexpected {other}"),
                        }
                    }
                })
            })
            .collect();
        let mut received = 0u64;
        while received < 500 {
            mailbox.recv_timeout(PATIENCE).unwrap();
            received += 1;
        }
        drop(mailbox);
        let accepted: u64 = senders.into_iter().map(|s| s.join().unwrap()).sum();
        let stats = broker.stats();
        // The refused send of each sender is a dead letter too.
        assert_eq!(stats.dead_lettered, accepted - received + 2);
        assert_eq!(stats.dead_letters_evicted, 0);
    }
}
