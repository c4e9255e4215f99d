//! The HTTP tab backend against pages served on 127.0.0.1 by the test:
//! static pages, a script-built page it cannot see, pages that never load,
//! unreachable hosts, cookies kept per tab.

mod web;

use std::net::TcpListener;
use std::time::Duration;

use agentry::Error;
use agentry::tabs::{HttpBrowser, TabPool};
use web::{SCRIPT_BUILT, TestServer};

const GENEROUS: Duration = Duration::from_secs(20);

fn pool(max_tabs: usize, navigation_timeout: Duration) -> TabPool {
    TabPool::builder(HttpBrowser::new())
        .max_tabs(max_tabs)
        .navigation_timeout(navigation_timeout)
        .build()
        .unwrap()
}

#[test]
fn static_pages_load() {
    let server = TestServer::start();
    let pool = pool(2, GENEROUS);
    let mut tab = pool.lease_for(&server.url("/"), GENEROUS).unwrap();
    for n in 1..=3 {
        tab.navigate(&server.url(&format!("/static/{n}"))).unwrap();
        let html = tab.html().unwrap();
        assert!(
            html.contains(&format!("<h1>Static page {n}</h1>")),
            "{html}"
        );
    }
}

#[test]
fn a_missing_page_loads_as_a_browser_shows_it() {
    let server = TestServer::start();
    let pool = pool(1, GENEROUS);
    let mut tab = pool.try_lease().unwrap();
    tab.navigate(&server.url("/nowhere")).unwrap();
    assert!(tab.html().unwrap().contains("no such page"));
}

#[test]
fn script_built_content_is_not_seen() {
    let server = TestServer::start();
    let pool = pool(1, GENEROUS);
    let mut tab = pool.try_lease().unwrap();
    tab.navigate(&server.url("/script")).unwrap();
    let html = tab.html().unwrap();
    assert!(html.contains("<div id=\"out\">empty</div>"), "{html}");
    assert!(!html.contains(SCRIPT_BUILT));
}

#[test]
fn scripts_and_screenshots_are_unsupported() {
    let server = TestServer::start();
    let pool = pool(1, GENEROUS);
    let mut tab = pool.try_lease().unwrap();
    tab.navigate(&server.url("/static/1")).unwrap();
    assert!(matches!(
        tab.evaluate("document.title"),
        Err(Error::Unsupported {
            backend: "http",
            ..
        })
    ));
    assert!(matches!(
        tab.screenshot(),
        Err(Error::Unsupported {
            backend: "http",
            ..
        })
    ));
    assert!(!tab.is_broken());
}

#[test]
fn a_page_that_never_loads_times_out() {
    let server = TestServer::start();
    let pool = pool(1, Duration::from_millis(500));
    let mut tab = pool.try_lease().unwrap();
    for path in ["/hang", "/silent"] {
        let url = server.url(path);
        match tab.navigate(&url) {
            Err(Error::NavigationTimeout {
                url: failed,
                timeout,
            }) => {
                assert_eq!(failed, url);
                assert_eq!(timeout, Duration::from_millis(500));
            }
            other => panic!("{path}: expected a navigation timeout, got {other:?}"),
        }
    }
    // The tab is still usable.
    assert!(!tab.is_broken());
    tab.navigate(&server.url("/static/2")).unwrap();
    assert!(tab.html().unwrap().contains("Static page 2"));
}

#[test]
fn an_unreachable_host_fails_to_navigate() {
    let closed_port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let pool = pool(1, GENEROUS);
    let mut tab = pool.try_lease().unwrap();
    let url = format!("http://127.0.0.1:{closed_port}/");
    match tab.navigate(&url) {
        Err(Error::Navigation {
            url: failed,
            reason,
        }) => {
            assert_eq!(failed, url);
            assert!(!reason.is_empty());
        }
        other => panic!("expected a navigation error, got {other:?}"),
    }
    assert!(matches!(
        tab.navigate("ftp://127.0.0.1/file"),
        Err(Error::Navigation { .. })
    ));
    assert!(matches!(
        tab.navigate("http://[::1"),
        Err(Error::InvalidInput(_))
    ));
    assert!(!tab.is_broken());
}

#[test]
fn each_tab_keeps_its_own_cookies() {
    let server = TestServer::start();
    let pool = pool(2, GENEROUS);
    let mut ann = pool.try_lease().unwrap();
    let mut bob = pool.try_lease().unwrap();
    assert_ne!(ann.tab_id(), bob.tab_id());
    ann.navigate(&server.url("/cookie/set/ann")).unwrap();
    bob.navigate(&server.url("/cookie/show")).unwrap();
    assert!(bob.html().unwrap().contains("visitor=none"));
    bob.navigate(&server.url("/cookie/set/bob")).unwrap();
    ann.navigate(&server.url("/cookie/show")).unwrap();
    bob.navigate(&server.url("/cookie/show")).unwrap();
    assert!(ann.html().unwrap().contains("visitor=ann"));
    assert!(bob.html().unwrap().contains("visitor=bob"));

    // The session lives with the tab, across leases.
    let ann_tab = ann.tab_id();
    drop(ann);
    let mut again = pool.lease(GENEROUS).unwrap();
    assert_eq!(again.tab_id(), ann_tab);
    again.navigate(&server.url("/cookie/show")).unwrap();
    assert!(again.html().unwrap().contains("visitor=ann"));
}

#[test]
fn agents_share_tabs_over_http() {
    let server = TestServer::start();
    let pool = pool(2, GENEROUS);
    let agents: Vec<_> = (0..6)
        .map(|agent| {
            let pool = pool.clone();
            let url = server.url(&format!("/static/{agent}"));
            std::thread::spawn(move || {
                let mut tab = pool.lease_for(&url, GENEROUS).unwrap();
                tab.navigate(&url).unwrap();
                tab.html()
                    .unwrap()
                    .contains(&format!("Static page {agent}"))
            })
        })
        .collect();
    for agent in agents {
        assert!(agent.join().unwrap());
    }
    let stats = pool.stats();
    assert_eq!((stats.leases, stats.leased, stats.sites), (6, 0, 0));
    assert!(stats.opened <= 2);
}

#[test]
fn a_navigation_timeout_too_long_for_a_deadline_is_no_deadline() {
    let server = TestServer::start();
    let pool = pool(1, Duration::MAX);
    let mut tab = pool.try_lease().unwrap();
    tab.navigate(&server.url("/static/3")).unwrap();
    assert!(tab.html().unwrap().contains("Static page 3"));
}
