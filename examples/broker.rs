//! Agents talking through the message broker: a coordinator fans work out to
//! three workers over a topic, the workers reply directly, and the broker's
//! counters show what travelled.
//!
//! Run: `cargo run --release --example broker`

use std::thread;
use std::time::Duration;

use agentry::{AgentId, MessageBroker, Role};

fn main() -> agentry::Result<()> {
    let broker = MessageBroker::new(1_000);
    let coordinator = AgentId::from(0);
    let inbox = broker.register_with_role(coordinator, Role::Planner)?;

    let workers: Vec<_> = (1..=3u64)
        .map(|n| {
            let id = AgentId::from(n);
            let mailbox = broker.register_with_role(id, Role::Researcher)?;
            broker.subscribe(id, "jobs")?;
            let broker = broker.clone();
            Ok(thread::spawn(move || -> agentry::Result<u32> {
                let mut done = 0;
                while let Ok(message) = mailbox.recv_timeout(Duration::from_millis(200)) {
                    let job: String = message.body()?;
                    broker.send(id, coordinator, &format!("{id} finished {job}"))?;
                    done += 1;
                }
                Ok(done)
            }))
        })
        .collect::<agentry::Result<_>>()?;

    for site in ["acme.example", "globex.example", "initech.example"] {
        let delivery = broker.publish(coordinator, "jobs", &format!("research {site}"))?;
        println!("published to {} workers", delivery.reached());
    }
    for _ in 0..9 {
        println!(
            "{}",
            inbox
                .recv_timeout(Duration::from_secs(5))?
                .body::<String>()?
        );
    }
    for worker in workers {
        let done = worker.join().expect("worker thread")?;
        println!("a worker handled {done} jobs");
    }
    println!("{:?}", broker.stats());
    Ok(())
}
