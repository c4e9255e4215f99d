//! Message broker benchmarks, each beside a bare crossbeam baseline in the
//! same group: ping-pong latency between two threads, broadcast to 10 and
//! 100 mailboxes, publish to a topic with 10 subscribers.
//!
//! Run: `cargo bench --bench broker`

use std::thread;
use std::time::{Duration, Instant};

use agentry::{AgentId, MessageBroker};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use crossbeam_channel::bounded;

const CAPACITY: usize = 1_000;

/// One round trip A -> B -> A per iteration; one-way latency is half of it.
fn ping_pong(c: &mut Criterion) {
    let mut group = c.benchmark_group("broker/round_trip");

    group.bench_function("bare_crossbeam", |b| {
        let (to_b, b_inbox) = bounded::<u64>(CAPACITY);
        let (to_a, a_inbox) = bounded::<u64>(CAPACITY);
        let echo = thread::spawn(move || {
            while let Ok(n) = b_inbox.recv() {
                if to_a.send(n).is_err() {
                    break;
                }
            }
        });
        b.iter_custom(|iters| {
            let start = Instant::now();
            for n in 0..iters {
                to_b.send(n).unwrap();
                a_inbox.recv().unwrap();
            }
            start.elapsed()
        });
        drop(to_b);
        echo.join().unwrap();
    });

    group.bench_function("agentry", |b| {
        let broker = MessageBroker::new(CAPACITY);
        let (a, bee) = (AgentId::from(1), AgentId::from(2));
        let a_mail = broker.register(a).unwrap();
        let b_mail = broker.register(bee).unwrap();
        let echo_broker = broker.clone();
        let echo = thread::spawn(move || {
            while let Ok(message) = b_mail.recv() {
                let n: u64 = message.body().unwrap();
                if echo_broker.send(bee, a, &n).is_err() {
                    break;
                }
            }
        });
        b.iter_custom(|iters| {
            let start = Instant::now();
            for n in 0..iters {
                broker.send(a, bee, &n).unwrap();
                a_mail.recv().unwrap();
            }
            start.elapsed()
        });
        broker.unregister(bee).unwrap();
        echo.join().unwrap();
    });
    group.finish();
}

/// One fan-out to `n` mailboxes, drained by the caller.
fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("broker/broadcast");
    for n in [10u64, 100] {
        group.bench_with_input(BenchmarkId::new("bare_crossbeam", n), &n, |b, &n| {
            let channels: Vec<_> = (0..n).map(|_| bounded::<Vec<u8>>(CAPACITY)).collect();
            let body = vec![7u8; 16];
            b.iter(|| {
                for (sender, _) in &channels {
                    sender.try_send(body.clone()).unwrap();
                }
                for (_, receiver) in &channels {
                    receiver.try_recv().unwrap();
                }
            });
        });
        group.bench_with_input(BenchmarkId::new("agentry", n), &n, |b, &n| {
            let broker = MessageBroker::new(CAPACITY);
            let mailboxes: Vec<_> = (1..=n)
                .map(|i| broker.register(AgentId::from(i)).unwrap())
                .collect();
            let body = vec![7u8; 16];
            b.iter(|| {
                let delivery = broker.broadcast(AgentId::from(0), &body).unwrap();
                assert_eq!(delivery.reached() as u64, n);
                for mailbox in &mailboxes {
                    mailbox.try_recv().unwrap();
                }
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("broker/publish_10_subscribers");
    group.bench_function("bare_crossbeam", |b| {
        let channels: Vec<_> = (0..10).map(|_| bounded::<Vec<u8>>(CAPACITY)).collect();
        let body = vec![7u8; 16];
        b.iter(|| {
            for (sender, _) in &channels {
                sender.try_send(body.clone()).unwrap();
            }
            for (_, receiver) in &channels {
                receiver.try_recv().unwrap();
            }
        });
    });
    group.bench_function("agentry", |b| {
        let broker = MessageBroker::new(CAPACITY);
        let mailboxes: Vec<_> = (1..=10u64)
            .map(|i| {
                let mailbox = broker.register(AgentId::from(i)).unwrap();
                broker.subscribe(AgentId::from(i), "ticks").unwrap();
                mailbox
            })
            .collect();
        let body = vec![7u8; 16];
        b.iter(|| {
            broker.publish(AgentId::from(0), "ticks", &body).unwrap();
            for mailbox in &mailboxes {
                mailbox.try_recv().unwrap();
            }
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = ping_pong, fan_out
}
criterion_main!(benches);
