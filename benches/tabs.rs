//! Tab pool benchmark: the cost of leasing a tab and giving it back, next
//! to a bare `Mutex<Vec<Box<dyn Tab>>>` pool that only pops and pushes, with
//! a no-op tab so that only the pool is measured. Uncontended (one thread)
//! and with four threads sharing two tabs.
//!
//! Run: `cargo bench --bench tabs`

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use agentry::tabs::{Browser, Tab, TabPool};
use criterion::{Criterion, criterion_group, criterion_main};

const PATIENCE: Duration = Duration::from_secs(30);

struct NoopBrowser;
struct NoopTab;

impl Browser for NoopBrowser {
    fn open_tab(&self) -> agentry::Result<Box<dyn Tab>> {
        Ok(Box::new(NoopTab))
    }
}

impl Tab for NoopTab {
    fn navigate(&mut self, _: &str, _: Duration) -> agentry::Result<()> {
        Ok(())
    }
    fn html(&mut self) -> agentry::Result<String> {
        Ok(String::new())
    }
    fn evaluate(&mut self, _: &str) -> agentry::Result<String> {
        Ok(String::new())
    }
    fn screenshot(&mut self) -> agentry::Result<Vec<u8>> {
        Ok(Vec::new())
    }
}

/// The baseline: a vector of tabs behind a mutex, spinning when empty.
struct BarePool(Mutex<Vec<Box<dyn Tab>>>);

impl BarePool {
    fn new(tabs: usize) -> BarePool {
        BarePool(Mutex::new(
            (0..tabs)
                .map(|_| Box::new(NoopTab) as Box<dyn Tab>)
                .collect(),
        ))
    }
    fn with_tab(&self, f: impl FnOnce(&mut dyn Tab)) {
        let mut tab = loop {
            if let Some(tab) = self.0.lock().unwrap().pop() {
                break tab;
            }
            thread::yield_now();
        };
        f(tab.as_mut());
        self.0.lock().unwrap().push(tab);
    }
}

fn pool(tabs: usize) -> TabPool {
    TabPool::builder(NoopBrowser)
        .max_tabs(tabs)
        .recycle_after(u64::MAX)
        .build()
        .unwrap()
}

fn lease_and_return(c: &mut Criterion) {
    let mut group = c.benchmark_group("tabs/lease_and_return");
    let tabs = pool(2);
    group.bench_function("agentry_lease", |b| {
        b.iter(|| drop(tabs.lease(PATIENCE).unwrap()))
    });
    group.bench_function("agentry_lease_for", |b| {
        b.iter(|| drop(tabs.lease_for("http://acme.example/", PATIENCE).unwrap()))
    });
    let bare = BarePool::new(2);
    group.bench_function("bare_mutex_vec", |b| b.iter(|| bare.with_tab(|_| ())));
    group.finish();
}

/// Four threads share two tabs; each iteration is 1,000 leases in all.
fn contended(c: &mut Criterion) {
    const PER_THREAD: usize = 250;
    let mut group = c.benchmark_group("tabs/four_threads_two_tabs_1000_leases");
    group.sample_size(20);
    let tabs = pool(2);
    group.bench_function("agentry_lease", |b| {
        b.iter(|| {
            thread::scope(|s| {
                for _ in 0..4 {
                    s.spawn(|| {
                        for _ in 0..PER_THREAD {
                            drop(tabs.lease(PATIENCE).unwrap());
                        }
                    });
                }
            })
        })
    });
    let bare = Arc::new(BarePool::new(2));
    group.bench_function("bare_mutex_vec", |b| {
        b.iter(|| {
            thread::scope(|s| {
                for _ in 0..4 {
                    s.spawn(|| {
                        for _ in 0..PER_THREAD {
                            bare.with_tab(|_| ());
                        }
                    });
                }
            })
        })
    });
    group.finish();
}

criterion_group!(benches, lease_and_return, contended);
criterion_main!(benches);
