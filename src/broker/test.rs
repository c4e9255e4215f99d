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
