//! The Chromium tab backend (feature `chrome`) against pages served on
//! 127.0.0.1 by the test: it sees the script-built content the HTTP backend
//! cannot, stops pages that never load, evaluates scripts, takes PNG
//! screenshots, and a crashed tab is recycled.
//!
//! These tests need the system's Chromium at /usr/bin/chromium; without it
//! they fail, saying to run `apt-get install chromium`.
#![cfg(feature = "chrome")]

mod web;

use std::time::{Duration, Instant};

use agentry::Error;
use agentry::tabs::{ChromeBrowser, HttpBrowser, TabPool};
use web::{SCRIPT_BUILT, TestServer};

const GENEROUS: Duration = Duration::from_secs(30);

/// A pool over a fresh Chromium, or a failure that says how to install it.
fn chrome_pool(max_tabs: usize, navigation_timeout: Duration) -> TabPool {
    let chrome = match ChromeBrowser::builder()
        .call_timeout(Duration::from_secs(10))
        .launch()
    {
        Ok(chrome) => chrome,
        Err(e @ Error::BrowserNotInstalled { .. }) => {
            panic!("{e}\nthe chrome tests need Chromium: run `apt-get install chromium`")
        }
        Err(e) => panic!("cannot start Chromium: {e}"),
    };
    TabPool::builder(chrome)
        .max_tabs(max_tabs)
        .navigation_timeout(navigation_timeout)
        .build()
        .unwrap()
}

#[test]
fn chromium_sees_script_built_content_the_http_backend_cannot() {
    let server = TestServer::start();
    let url = server.url("/script");
    let http = TabPool::builder(HttpBrowser::new()).build().unwrap();
    let chrome = chrome_pool(1, GENEROUS);

    let mut plain = http.lease_for(&url, GENEROUS).unwrap();
    plain.navigate(&url).unwrap();
    assert!(!plain.html().unwrap().contains(SCRIPT_BUILT));

    let mut real = chrome.lease_for(&url, GENEROUS).unwrap();
    real.navigate(&url).unwrap();
    let rendered = real.html().unwrap();
    assert!(
        rendered.contains(&format!("<div id=\"out\">{SCRIPT_BUILT}</div>")),
        "{rendered}"
    );
    assert!(rendered.starts_with("<!DOCTYPE html>"), "{rendered}");
}

#[test]
fn a_page_that_never_loads_times_out_and_the_tab_goes_on() {
    let server = TestServer::start();
    let chrome = chrome_pool(1, Duration::from_secs(2));
    let mut tab = chrome.lease(GENEROUS).unwrap();
    for path in ["/hang", "/silent"] {
        let url = server.url(path);
        match tab.navigate(&url) {
            Err(Error::NavigationTimeout { url: failed, .. }) => assert_eq!(failed, url),
            other => panic!("{path}: expected a navigation timeout, got {other:?}"),
        }
        assert!(!tab.is_broken(), "{path} broke the tab");
    }
    // A loaded machine can make even a static page miss the short timeout
    // this pool was given; the tab goes on if it loads one within GENEROUS.
    let deadline = Instant::now() + GENEROUS;
    loop {
        match tab.navigate(&server.url("/static/1")) {
            Ok(()) => break,
            Err(Error::NavigationTimeout { .. }) if Instant::now() < deadline => {}
            Err(e) => panic!("the tab did not go on after the timeouts: {e}"),
        }
    }
    assert_eq!(tab.evaluate("document.title").unwrap(), "\"Static 1\"");
}

#[test]
fn a_tab_evaluates_scripts_takes_screenshots_and_reports_bad_pages() {
    let server = TestServer::start();
    let chrome = chrome_pool(2, GENEROUS);
    let mut tab = chrome.try_lease().unwrap();
    tab.navigate(&server.url("/static/7")).unwrap();

    assert_eq!(tab.evaluate("6 * 7").unwrap(), "42");
    assert_eq!(
        tab.evaluate("document.querySelector('h1').textContent")
            .unwrap(),
        "\"Static page 7\""
    );
    assert_eq!(
        tab.evaluate("({ a: [1, 2], b: null })").unwrap(),
        r#"{"a":[1,2],"b":null}"#
    );
    assert_eq!(tab.evaluate("undefined").unwrap(), "null");
    assert_eq!(
        tab.evaluate("Promise.resolve('later')").unwrap(),
        "\"later\""
    );
    match tab.evaluate("throw new Error('on purpose')") {
        Err(Error::Script { reason }) => assert!(reason.contains("on purpose"), "{reason}"),
        other => panic!("expected a script error, got {other:?}"),
    }

    let png = tab.screenshot().unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(png.len() > 100);

    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    assert!(matches!(
        tab.navigate(&format!("http://127.0.0.1:{closed_port}/")),
        Err(Error::Navigation { .. })
    ));
    assert!(!tab.is_broken());
    tab.navigate(&server.url("/static/8")).unwrap();
    assert!(tab.html().unwrap().contains("Static page 8"));
}

#[test]
fn a_crashed_tab_is_recycled() {
    let server = TestServer::start();
    let chrome = chrome_pool(1, Duration::from_secs(5));
    let mut tab = chrome.lease(GENEROUS).unwrap();
    let crashed = tab.tab_id();
    tab.navigate(&server.url("/static/1")).unwrap();
    // Kills the tab's renderer; whatever navigate says, the tab is gone.
    let _ = tab.navigate("chrome://crash");
    let after = tab.evaluate("1");
    assert!(
        matches!(after, Err(Error::Browser { .. })) || tab.is_broken(),
        "a crashed tab answered {after:?}"
    );
    drop(tab);

    let mut fresh = chrome.lease(GENEROUS).unwrap();
    assert_ne!(fresh.tab_id(), crashed);
    fresh.navigate(&server.url("/static/2")).unwrap();
    assert!(fresh.html().unwrap().contains("Static page 2"));
    assert_eq!(chrome.stats().recycled, 1);
}

#[test]
fn a_missing_chromium_is_an_error_naming_the_package() {
    let missing = ChromeBrowser::builder()
        .path("/nonexistent/chromium")
        .launch()
        .unwrap_err();
    assert!(
        matches!(missing, Error::BrowserNotInstalled { .. }),
        "{missing:?}"
    );
    assert!(
        missing.to_string().contains("apt-get install chromium"),
        "{missing}"
    );
}
