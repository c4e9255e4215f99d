//! Tab pool semantics with a fake browser: exclusivity, FIFO waiting,
//! timeouts, the per-site limit, recycling, panics, stats, and the pool
//! inside an orchestrator.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use agentry::tabs::{Browser, Tab, TabPool, TabPoolStats};
use agentry::{AgentContext, Error, Orchestrator, Output, Role, Task, TaskError};

const GENEROUS: Duration = Duration::from_secs(20);

/// Counts what the pool does to its tabs; can refuse to open them.
#[derive(Clone, Default)]
struct FakeBrowser {
    opened: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    refuse: Arc<AtomicBool>,
}

struct FakeTab {
    closed: Arc<AtomicUsize>,
    page: String,
}

impl Browser for FakeBrowser {
    fn open_tab(&self) -> agentry::Result<Box<dyn Tab>> {
        if self.refuse.load(Ordering::SeqCst) {
            return Err(Error::Browser {
                reason: "fake browser refuses".into(),
            });
        }
        self.opened.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(FakeTab {
            closed: Arc::clone(&self.closed),
            page: String::new(),
        }))
    }
}

impl Tab for FakeTab {
    /// A url whose path is `/crash` crashes the tab; `/missing` is a page
    /// that cannot load.
    fn navigate(&mut self, url: &str, _timeout: Duration) -> agentry::Result<()> {
        if url.ends_with("/crash") {
            return Err(Error::Browser {
                reason: "tab crashed".into(),
            });
        }
        if url.ends_with("/missing") {
            return Err(Error::Navigation {
                url: url.into(),
                reason: "no such page".into(),
            });
        }
        self.page = url.to_owned();
        Ok(())
    }
    fn html(&mut self) -> agentry::Result<String> {
        Ok(format!("<html>{}</html>", self.page))
    }
    fn evaluate(&mut self, script: &str) -> agentry::Result<String> {
        Ok(format!("{script:?}"))
    }
    fn screenshot(&mut self) -> agentry::Result<Vec<u8>> {
        Ok(b"\x89PNG".to_vec())
    }
}

impl Drop for FakeTab {
    fn drop(&mut self) {
        self.closed.fetch_add(1, Ordering::SeqCst);
    }
}

fn pool(browser: &FakeBrowser, max_tabs: usize) -> TabPool {
    TabPool::builder(browser.clone())
        .max_tabs(max_tabs)
        .build()
        .unwrap()
}

/// Polls the pool's stats until `done` holds, for at most `GENEROUS`.
fn wait_for(pool: &TabPool, what: &str, done: impl Fn(&TabPoolStats) -> bool) {
    let start = Instant::now();
    while !done(&pool.stats()) {
        assert!(
            start.elapsed() < GENEROUS,
            "timed out waiting for {what}: {:?}",
            pool.stats()
        );
        thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_tab_is_leased_to_one_holder_at_a_time() {
    let browser = FakeBrowser::default();
    let pool = pool(&browser, 3);
    let in_use = Arc::new(Mutex::new(HashSet::new()));
    let most = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (pool, in_use, most) = (pool.clone(), Arc::clone(&in_use), Arc::clone(&most));
            thread::spawn(move || {
                for _ in 0..200 {
                    let lease = pool.lease(GENEROUS).unwrap();
                    {
                        let mut held = in_use.lock().unwrap();
                        assert!(
                            held.insert(lease.tab_id()),
                            "{} leased twice",
                            lease.tab_id()
                        );
                        most.fetch_max(held.len(), Ordering::SeqCst);
                    }
                    thread::yield_now();
                    in_use.lock().unwrap().remove(&lease.tab_id());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(most.load(Ordering::SeqCst) <= 3);
    let stats = pool.stats();
    assert_eq!(stats.leases, 1_600);
    assert_eq!((stats.leased, stats.waiting), (0, 0));
    assert!(stats.open <= 3);
    assert!(browser.opened.load(Ordering::SeqCst) <= 3 + stats.recycled as usize);
}

#[test]
fn waiters_are_served_in_arrival_order() {
    let browser = FakeBrowser::default();
    let pool = pool(&browser, 1);
    let held = pool.try_lease().unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for name in ["first", "second", "third", "fourth"] {
        let (p, order) = (pool.clone(), Arc::clone(&order));
        waiters.push(thread::spawn(move || {
            let lease = p.lease(GENEROUS).unwrap();
            order.lock().unwrap().push((name, lease.tab_id()));
        }));
        let queued = waiters.len();
        wait_for(&pool, "the waiter to queue", |s| s.waiting == queued);
    }
    let tab = held.tab_id();
    drop(held);
    for w in waiters {
        w.join().unwrap();
    }
    let order = order.lock().unwrap();
    assert_eq!(
        *order,
        [
            ("first", tab),
            ("second", tab),
            ("third", tab),
            ("fourth", tab)
        ]
    );
}

#[test]
fn a_lease_times_out_when_no_tab_frees_up() {
    let browser = FakeBrowser::default();
    let pool = pool(&browser, 1);
    let _held = pool.try_lease().unwrap();
    assert!(matches!(
        pool.try_lease(),
        Err(Error::NoTabFree { max_tabs: 1 })
    ));
    assert!(matches!(
        pool.lease(Duration::from_millis(30)),
        Err(Error::Timeout)
    ));
    assert!(matches!(
        pool.lease_for("http://a.example/", Duration::from_millis(30)),
        Err(Error::Timeout)
    ));
    let stats = pool.stats();
    assert_eq!((stats.timeouts, stats.waiting, stats.leased), (2, 0, 1));
}

#[test]
fn a_timed_out_waiter_does_not_take_a_later_tab() {
    let browser = FakeBrowser::default();
    let pool = pool(&browser, 1);
    let held = pool.try_lease().unwrap();
    assert!(pool.lease(Duration::from_millis(10)).is_err());
    drop(held);
    // The tab is free, not granted to the waiter that gave up.
    let again = pool.try_lease().unwrap();
    assert_eq!(pool.stats().leased, 1);
    drop(again);
}

#[test]
fn no_more_than_the_per_site_limit_hold_a_host() {
    let browser = FakeBrowser::default();
    let pool = TabPool::builder(browser.clone())
        .max_tabs(4)
        .per_site_limit(2)
        .build()
        .unwrap();
    let a1 = pool.try_lease_for("http://a.example/one").unwrap();
    let _a2 = pool
        .lease_for("http://A.example:8080/two", GENEROUS)
        .unwrap();
    assert!(matches!(
        pool.try_lease_for("https://a.example/three"),
        Err(Error::SiteBusy { ref host, limit: 2 }) if host == "a.example"
    ));
    let _b = pool.try_lease_for("http://b.example/").unwrap();
    assert!(matches!(
        pool.lease_for("http://a.example/", Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    assert_eq!(pool.stats().site_waits, 1);

    let waiter = {
        let pool = pool.clone();
        thread::spawn(move || {
            pool.lease_for("http://a.example/", GENEROUS)
                .map(|l| l.site().map(str::to_owned))
        })
    };
    wait_for(&pool, "the site waiter", |s| s.waiting == 1);
    // A tab is free, but the host is not: the waiter keeps waiting.
    assert_eq!(pool.stats().leased, 3);
    drop(a1);
    assert_eq!(
        waiter.join().unwrap().unwrap().as_deref(),
        Some("a.example")
    );
}

#[test]
fn a_waiter_for_a_busy_site_does_not_hold_up_others() {
    let browser = FakeBrowser::default();
    let pool = TabPool::builder(browser.clone())
        .max_tabs(2)
        .per_site_limit(1)
        .build()
        .unwrap();
    let a = pool.try_lease_for("http://a.example/").unwrap();
    let b = pool.try_lease_for("http://b.example/").unwrap();
    let spawn_waiter = |url: &'static str| {
        let pool = pool.clone();
        thread::spawn(move || pool.lease_for(url, GENEROUS).map(|lease| lease.tab_id()))
    };
    let for_a = spawn_waiter("http://a.example/");
    wait_for(&pool, "the waiter for a", |s| s.waiting == 1);
    let for_c = spawn_waiter("http://c.example/");
    wait_for(&pool, "the waiter for c", |s| s.waiting == 2);
    let b_tab = b.tab_id();
    drop(b);
    // The freed tab goes to the later waiter: the earlier one's site is full.
    assert_eq!(for_c.join().unwrap().unwrap(), b_tab);
    assert_eq!(pool.stats().waiting, 1);
    drop(a);
    for_a.join().unwrap().unwrap();
}

#[test]
fn a_site_lease_refuses_another_host() {
    let browser = FakeBrowser::default();
    let pool = pool(&browser, 2);
    let mut lease = pool.try_lease_for("http://a.example/").unwrap();
    lease.navigate("http://a.example/page").unwrap();
    let refused = lease.navigate("http://b.example/page").unwrap_err();
    assert!(
        matches!(&refused, Error::WrongSite { leased, url } if leased == "a.example" && url == "http://b.example/page"),
        "{refused:?}"
    );
    assert!(lease.navigate("about:blank").is_err());
    assert_eq!(lease.html().unwrap(), "<html>http://a.example/page</html>");
}

#[test]
fn a_plain_lease_takes_the_slot_of_the_host_it_visits() {
    let browser = FakeBrowser::default();
    let pool = TabPool::builder(browser.clone())
        .max_tabs(3)
        .per_site_limit(1)
        .build()
        .unwrap();
    let mut first = pool.try_lease().unwrap();
    assert_eq!(first.site(), None);
    first.navigate("http://a.example/").unwrap();
    assert_eq!(first.site(), Some("a.example"));
    assert!(matches!(
        pool.try_lease_for("http://a.example/"),
        Err(Error::SiteBusy { .. })
    ));

    let mut second = pool.try_lease().unwrap();
    assert!(matches!(
        second.navigate("http://a.example/x"),
        Err(Error::SiteBusy { limit: 1, .. })
    ));
    assert_eq!(second.site(), None);

    // Moving on gives the slot back.
    first.navigate("http://b.example/").unwrap();
    second.navigate("http://a.example/x").unwrap();
    first.navigate("about:blank").unwrap();
    assert_eq!(first.site(), None);
    assert_eq!(pool.stats().sites, 1);
    let _b = pool.try_lease_for("http://b.example/").unwrap();
}

#[test]
fn malformed_urls_are_refused() {
    let browser = FakeBrowser::default();
    let pool = pool(&browser, 1);
    assert!(matches!(
        pool.try_lease_for("not a url"),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        pool.lease_for("data:text/html,hello", GENEROUS),
        Err(Error::InvalidInput(_))
    ));
    let mut lease = pool.try_lease().unwrap();
    assert!(matches!(
        lease.navigate("http//missing-colon"),
        Err(Error::InvalidInput(_))
    ));
    assert!(!lease.is_broken());
}

#[test]
fn a_crashed_tab_is_recycled_and_never_handed_out_again() {
    let browser = FakeBrowser::default();
    let pool = pool(&browser, 1);
    let mut lease = pool.try_lease().unwrap();
    let crashed = lease.tab_id();
    // A page that cannot load leaves the tab usable.
    assert!(matches!(
        lease.navigate("http://a.example/missing"),
        Err(Error::Navigation { .. })
    ));
    assert!(!lease.is_broken());
    assert!(matches!(
        lease.navigate("http://a.example/crash"),
        Err(Error::Browser { .. })
    ));
    assert!(lease.is_broken());
    assert!(matches!(lease.html(), Err(Error::Browser { .. })));
    drop(lease);
    assert_eq!(browser.closed.load(Ordering::SeqCst), 1);

    let mut next = pool.try_lease().unwrap();
    assert_ne!(next.tab_id(), crashed);
    next.navigate("http://a.example/").unwrap();
    let stats = pool.stats();
    assert_eq!((stats.recycled, stats.opened, stats.open), (1, 2, 1));
}

#[test]
fn a_tab_marked_broken_is_recycled() {
    let browser = FakeBrowser::default();
    let pool = pool(&browser, 1);
    let mut lease = pool.try_lease().unwrap();
    let id = lease.tab_id();
    lease.mark_broken();
    assert!(lease.screenshot().is_err());
    drop(lease);
    assert_ne!(pool.try_lease().unwrap().tab_id(), id);
    assert_eq!(pool.stats().recycled, 1);
}

#[test]
fn a_tab_is_recycled_after_its_uses() {
    let browser = FakeBrowser::default();
    let pool = TabPool::builder(browser.clone())
        .max_tabs(1)
        .recycle_after(3)
        .build()
        .unwrap();
    let ids: Vec<_> = (0..7).map(|_| pool.try_lease().unwrap().tab_id()).collect();
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[1], ids[2]);
    assert_ne!(ids[2], ids[3]);
    assert_eq!(ids[3], ids[5]);
    assert_ne!(ids[5], ids[6]);
    assert_eq!(pool.stats().recycled, 2);
    assert_eq!(browser.closed.load(Ordering::SeqCst), 2);
    assert_eq!(browser.opened.load(Ordering::SeqCst), 3);
}

#[test]
fn no_tab_is_leaked_when_a_holder_panics() {
    let browser = FakeBrowser::default();
    let pool = pool(&browser, 2);
    let panicker = {
        let pool = pool.clone();
        thread::spawn(move || {
            let mut lease = pool.lease(GENEROUS).unwrap();
            lease.navigate("http://a.example/").unwrap();
            panic!("agent failed while holding {}", lease.tab_id());
        })
    };
    assert!(panicker.join().is_err());
    let stats = pool.stats();
    assert_eq!((stats.leased, stats.sites, stats.recycled), (0, 0, 1));
    // Both tabs can be leased again.
    let _one = pool.try_lease().unwrap();
    let _two = pool.try_lease().unwrap();
}

#[test]
fn a_waiter_gets_the_tab_a_panicking_holder_drops() {
    let browser = FakeBrowser::default();
    let pool = pool(&browser, 1);
    let (go_tx, go_rx) = crossbeam_channel::bounded::<()>(0);
    let panicker = {
        let pool = pool.clone();
        thread::spawn(move || {
            let _lease = pool.try_lease().unwrap();
            go_rx.recv().unwrap();
            panic!("agent failed");
        })
    };
    wait_for(&pool, "the panicker's lease", |s| s.leased == 1);
    let waiter = {
        let pool = pool.clone();
        thread::spawn(move || pool.lease(GENEROUS).map(|lease| lease.tab_id()))
    };
    wait_for(&pool, "the waiter", |s| s.waiting == 1);
    go_tx.send(()).unwrap();
    assert!(panicker.join().is_err());
    waiter.join().unwrap().unwrap();
}

#[test]
fn a_tab_that_cannot_open_leaves_nothing_behind() {
    let browser = FakeBrowser::default();
    let pool = pool(&browser, 1);
    browser.refuse.store(true, Ordering::SeqCst);
    assert!(matches!(pool.try_lease(), Err(Error::Browser { .. })));
    assert!(matches!(
        pool.lease_for("http://a.example/", GENEROUS),
        Err(Error::Browser { .. })
    ));
    let stats = pool.stats();
    assert_eq!((stats.open, stats.leased, stats.sites), (0, 0, 0));
    browser.refuse.store(false, Ordering::SeqCst);
    let mut lease = pool.try_lease().unwrap();
    lease.navigate("http://a.example/").unwrap();
}

#[test]
fn zero_settings_are_refused() {
    let zeroes = [
        TabPool::builder(FakeBrowser::default()).max_tabs(0).build(),
        TabPool::builder(FakeBrowser::default())
            .per_site_limit(0)
            .build(),
        TabPool::builder(FakeBrowser::default())
            .recycle_after(0)
            .build(),
        TabPool::builder(FakeBrowser::default())
            .navigation_timeout(Duration::ZERO)
            .build(),
        TabPool::http(0),
    ];
    for built in zeroes {
        assert!(matches!(built, Err(Error::InvalidConfig(_))), "{built:?}");
    }
}

#[test]
fn stats_count_what_happened() {
    let browser = FakeBrowser::default();
    let pool = pool(&browser, 2);
    let one = pool.try_lease_for("http://a.example/").unwrap();
    let _two = pool.try_lease().unwrap();
    let _ = pool.lease(Duration::from_millis(5));
    let stats = pool.stats();
    assert_eq!(
        (
            stats.max_tabs,
            stats.open,
            stats.leased,
            stats.sites,
            stats.leases,
            stats.timeouts
        ),
        (2, 2, 2, 1, 2, 1)
    );
    drop(one);
    let stats = pool.stats();
    assert_eq!((stats.leased, stats.sites), (1, 0));
    let text = stats.to_string();
    assert!(text.contains("2 open of 2 (1 leased)"), "{text}");
}

#[test]
fn agents_reach_the_pool_and_status_reports_it() {
    let browser = FakeBrowser::default();
    let pool = pool(&browser, 2);
    let orchestrator = Orchestrator::builder()
        .agents(Role::Researcher, 4, || {
            |task: &Task, ctx: &AgentContext| -> Result<Output, TaskError> {
                let url: String = task.input()?;
                let tabs = ctx.tabs().ok_or_else(|| TaskError::fatal("no tab pool"))?;
                let mut tab = tabs.lease_for(&url, Duration::from_secs(20))?;
                tab.navigate(&url)?;
                Ok(Output::encode(&tab.html()?)?)
            }
        })
        .tab_pool(pool.clone())
        .build()
        .unwrap();
    let ids: Vec<_> = (0..8)
        .map(|i| {
            let task = Task::new("visit")
                .with_input(&format!("http://site{}.example/", i % 3))
                .unwrap();
            orchestrator.submit(task).unwrap()
        })
        .collect();
    for (i, id) in ids.into_iter().enumerate() {
        let result = orchestrator.wait(id, GENEROUS).unwrap();
        assert_eq!(
            result.output::<String>().unwrap(),
            format!("<html>http://site{}.example/</html>", i % 3)
        );
    }
    let report = orchestrator.status();
    let tabs = report.tabs.clone().expect("the pool's figures");
    assert_eq!((tabs.leases, tabs.leased), (8, 0));
    assert!(report.to_string().contains("tabs: "));
    assert_eq!(orchestrator.tabs().map(|p| p.stats().leases), Some(8));
}

#[test]
fn a_timeout_too_long_for_a_deadline_still_waits_for_a_tab() {
    let browser = FakeBrowser::default();
    let pool = pool(&browser, 1);
    let held = pool.lease(Duration::MAX).unwrap();
    let waiter = {
        let pool = pool.clone();
        thread::spawn(move || {
            pool.lease_for("http://a.example/", Duration::MAX)
                .map(|l| l.tab_id())
        })
    };
    wait_for(&pool, "the waiter", |s| s.waiting == 1);
    let tab = held.tab_id();
    drop(held);
    assert_eq!(waiter.join().unwrap().unwrap(), tab);
}
