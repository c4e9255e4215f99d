//! The seed's MULTI-TAB BROWSER COORDINATION: agents share a few browser
//! tabs, one agent per tab at a time.
//!
//! A [`TabPool`] holds at most `max_tabs` tabs of one [`Browser`] and
//! leases them to agents exclusively. A [`TabLease`] is an RAII guard: the
//! tab goes back to the pool when the lease is dropped, also when its holder
//! panics. Leasing comes in the three flavours of the crate, none of which
//! waits forever: [`TabPool::try_lease`] (never waits),
//! [`TabPool::lease`] (waits at most a timeout, in FIFO order with the other
//! waiters) and the site-aware [`TabPool::lease_for`] /
//! [`TabPool::try_lease_for`], which also reserve one of the
//! `per_site_limit` slots of the url's host so that agents do not hammer
//! one site.
//!
//! Two backends implement [`Browser`]:
//!
//! * [`HttpBrowser`] (always built): a tab is an HTTP client session with a
//!   cookie jar of its own. Enough for static pages; it runs no script and
//!   takes no screenshot.
//! * `ChromeBrowser` (cargo feature `chrome`): real tabs of one headless
//!   Chromium driven over the DevTools protocol, using the system's Chromium
//!   (`/usr/bin/chromium`, Debian package `chromium`). It renders pages,
//!   runs their scripts, evaluates yours and takes screenshots.
//!
//! A tab whose operation fails with [`Error::Browser`](crate::Error::Browser)
//! (crashed, connection lost) is recycled: closed, never handed out again,
//! and replaced by a fresh one when next needed. Tabs are also recycled
//! after [`recycle_after`](TabPoolBuilder::recycle_after) leases.
//!
//! # Example
//!
//! Two agents share one tab of the HTTP backend to read a page served on
//! the loopback interface:
//!
//! ```
//! use agentry::tabs::TabPool;
//! use std::io::{Read, Write};
//! use std::net::TcpListener;
//! use std::time::Duration;
//!
//! // A one-page web server for the example.
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! let url = format!("http://{}/", listener.local_addr()?);
//! std::thread::spawn(move || {
//!     for mut stream in listener.incoming().flatten().take(2) {
//!         let mut request = [0; 1024];
//!         let _ = stream.read(&mut request);
//!         let page = "<html><body><h1>Acme</h1></body></html>";
//!         let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}", page.len());
//!     }
//! });
//!
//! let pool = TabPool::http(1)?;
//! let agents: Vec<_> = (0..2)
//!     .map(|agent| {
//!         let (pool, url) = (pool.clone(), url.clone());
//!         std::thread::spawn(move || -> agentry::Result<String> {
//!             let mut tab = pool.lease_for(&url, Duration::from_secs(10))?;
//!             tab.navigate(&url)?;
//!             Ok(format!("agent {agent} read {} bytes in {}", tab.html()?.len(), tab.tab_id()))
//!         })
//!     })
//!     .collect();
//! for agent in agents {
//!     println!("{}", agent.join().expect("agent thread")?);
//! }
//! let stats = pool.stats();
//! assert_eq!((stats.leases, stats.open, stats.leased), (2, 1, 0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(feature = "chrome")]
mod chrome;
mod http;
mod lease;
mod pool;
mod site;
#[cfg(test)]
mod test;

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::error::Result;

#[cfg(feature = "chrome")]
pub use chrome::{CHROME_FLAGS, ChromeBrowser, ChromeBuilder, DEFAULT_CHROMIUM_PATH};
pub use http::HttpBrowser;
pub use lease::TabLease;
pub use pool::{
    DEFAULT_MAX_TABS, DEFAULT_NAVIGATION_TIMEOUT, DEFAULT_PER_SITE_LIMIT, DEFAULT_RECYCLE_AFTER,
    TabPool, TabPoolBuilder, TabPoolStats,
};

/// A browser: something that opens [`Tab`]s. One value is shared by every
/// tab of a [`TabPool`].
///
/// Implement it to plug in another backend (or a fake one in tests).
pub trait Browser: Send + Sync + 'static {
    /// Opens a fresh tab, with no page loaded and its own state (cookies,
    /// history).
    ///
    /// # Errors
    /// [`Error::Browser`](crate::Error::Browser) when the browser cannot open
    /// a tab (it died, or refused).
    fn open_tab(&self) -> Result<Box<dyn Tab>>;
}

/// One tab of a [`Browser`]. Dropping it closes it.
///
/// The error an operation returns tells the pool what became of the tab:
/// [`Error::Browser`](crate::Error::Browser) means the tab itself is
/// unusable (crashed, its connection lost, it stopped answering), and the
/// pool recycles it; any other error (a page that could not load, an
/// operation the backend does not support, a script that threw) leaves the
/// tab usable.
pub trait Tab: Send {
    /// Loads `url` and waits until the page has loaded, at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Navigation`](crate::Error::Navigation) when the page cannot
    /// be loaded (unreachable host, refused connection, unsupported scheme),
    /// [`Error::NavigationTimeout`](crate::Error::NavigationTimeout) when it
    /// does not load within `timeout`.
    fn navigate(&mut self, url: &str, timeout: Duration) -> Result<()>;

    /// The HTML of the page loaded last (for a browser, the document as
    /// rendered now, scripts' changes included).
    ///
    /// # Errors
    /// [`Error::Browser`](crate::Error::Browser) when the tab fails.
    fn html(&mut self) -> Result<String>;

    /// Runs `script` in the page and returns its value as JSON text
    /// (`"42"`, `"\"text\""`, `"null"` for `undefined`).
    ///
    /// # Errors
    /// [`Error::Unsupported`](crate::Error::Unsupported) for a backend
    /// without a script engine; [`Error::Script`](crate::Error::Script) when
    /// the script throws.
    fn evaluate(&mut self, script: &str) -> Result<String>;

    /// A PNG image of the page's viewport.
    ///
    /// # Errors
    /// [`Error::Unsupported`](crate::Error::Unsupported) for a backend that
    /// does not render.
    fn screenshot(&mut self) -> Result<Vec<u8>>;
}

/// The stable id of one tab of a [`TabPool`], `tab-N`: it names the tab
/// for its whole life, and a tab recycled is replaced by one with a new id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct TabId(u64);

impl TabId {
    /// The number in the id.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for TabId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tab-{}", self.0)
    }
}
