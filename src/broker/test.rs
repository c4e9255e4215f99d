use super::*;

fn id(n: u64) -> AgentId {
    AgentId::from(n)
}

#[test]
fn zero_capacity_is_refused_by_the_builder() {
    assert!(matches!(
        MessageBroker::builder().mailbox_capacity(0).build(),
        Err(Error::InvalidConfig(_))
    ));
    assert_eq!(MessageBroker::new(0).mailbox_capacity(), 1);
}

#[test]
fn dead_letter_record_is_bounded_and_counts_evictions() {
    let broker = MessageBroker::builder()
        .dead_letter_capacity(2)
        .build()
        .unwrap();
    for n in 0..5u32 {
        assert!(broker.send(id(0), id(9), &n).is_err());
    }
    let kept: Vec<u32> = broker
        .dead_letters()
        .iter()
        .map(|d| d.message.body().unwrap())
        .collect();
    assert_eq!(kept, vec![3, 4]);
    let stats = broker.stats();
    assert_eq!(stats.dead_lettered, 5);
    assert_eq!(stats.dead_letters_evicted, 3);
}

#[test]
fn ids_land_in_every_shard() {
    let broker = MessageBroker::new(4);
    let mailboxes: Vec<_> = (0..SHARDS as u64 * 3)
        .map(|n| broker.register(id(n)).unwrap())
        .collect();
    assert_eq!(broker.registered().len(), mailboxes.len());
    assert!(broker.inner.shards.iter().all(|s| s.read().len() == 3));
}

/// A stand-in for the Redis relay: node 1, with node 2 live and its stream
/// full after `room` messages.
#[derive(Debug)]
struct FakeRemote {
    room: parking_lot::Mutex<usize>,
    sent: parking_lot::Mutex<Vec<(AgentId, u32)>>,
}

impl Remote for FakeRemote {
    fn node(&self) -> u32 {
        1
    }

    fn send(&self, to: AgentId, message: &Message) -> Result<()> {
        if to.node() != 2 {
            return Err(Error::unknown_agent(to));
        }
        let mut room = self.room.lock();
        if *room == 0 {
            return Err(Error::Full {
                agent: to,
                capacity: 1,
            });
        }
        *room -= 1;
        self.sent.lock().push((to, message.body().unwrap()));
        Ok(())
    }

    fn fan_out(&self, _: &Message, _: Option<&Role>) -> Result<(usize, Vec<u32>)> {
        Ok(if *self.room.lock() > 0 {
            (1, Vec::new())
        } else {
            (0, vec![2])
        })
    }
}

fn clustered(room: usize) -> (MessageBroker, Arc<FakeRemote>) {
    let remote = Arc::new(FakeRemote {
        room: parking_lot::Mutex::new(room),
        sent: parking_lot::Mutex::new(Vec::new()),
    });
    let broker = MessageBroker::with_settings(4, 16, Some(Arc::clone(&remote) as Arc<dyn Remote>));
    (broker, remote)
}

#[test]
fn only_ids_of_other_nodes_not_registered_here_are_relayed() {
    let (broker, remote) = clustered(1);
    assert_eq!(broker.node(), 1);
    let here = AgentId::on_node(1, 1);
    let mailbox = broker.register(here).unwrap();
    broker.send(here, here, &1u32).unwrap();
    assert_eq!(mailbox.try_recv().unwrap().body::<u32>().unwrap(), 1);
    broker.send(here, AgentId::on_node(2, 7), &2u32).unwrap();
    assert_eq!(*remote.sent.lock(), [(AgentId::on_node(2, 7), 2)]);
    // This node's own unknown ids, node 0 and dead nodes are not relayed.
    for to in [AgentId::on_node(1, 9), id(9), AgentId::on_node(3, 1)] {
        assert!(matches!(
            broker.send(here, to, &3u32),
            Err(Error::NotFound { .. })
        ));
    }
    assert_eq!(remote.sent.lock().len(), 1);
    assert_eq!(broker.stats().dead_lettered, 3);
    // A full relay stream is the sender's error, with no dead letter.
    assert!(matches!(
        broker.send(here, AgentId::on_node(2, 7), &4u32),
        Err(Error::Full { .. })
    ));
    assert!(matches!(
        broker.send_timeout(
            here,
            AgentId::on_node(2, 7),
            &4u32,
            Duration::from_millis(5)
        ),
        Err(Error::Full { .. })
    ));
    assert_eq!(broker.stats().dead_lettered, 3);
}

#[test]
fn a_fan_out_reports_relayed_and_full_nodes_and_keeps_a_dead_letter_for_each_full_one() {
    let (broker, _) = clustered(1);
    let here = AgentId::on_node(1, 1);
    let _mailbox = broker.register(here).unwrap();
    broker.subscribe(here, "t").unwrap();
    let published = broker.publish(id(0), "t", &1u32).unwrap();
    assert_eq!((published.reached(), published.relayed()), (1, 1));
    let (broker, _) = clustered(0);
    let broadcast = broker.broadcast(id(0), &1u32).unwrap();
    assert_eq!(broadcast.relay_full(), [2]);
    assert!(!broadcast.is_complete());
    let letters = broker.dead_letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].to, AgentId::on_node(2, 0));
    assert_eq!(letters[0].reason, DeadLetterReason::RelayFull);
}
