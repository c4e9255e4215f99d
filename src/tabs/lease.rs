//! The lease: one agent's exclusive hold on one tab.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::pool::{Inner, Parked, Returned};
use super::{Tab, TabId, site};
use crate::error::{Error, Result};

/// Exclusive use of one tab of a [`TabPool`](super::TabPool), until
/// dropped.
///
/// Dropping the lease gives the tab (and the site slot it holds) back to
/// the pool, which hands them to the next waiter. The tab is recycled
/// instead (closed; a fresh one is opened when next needed) when an
/// operation failed with [`Error::Browser`], when
/// [`mark_broken`](Self::mark_broken) was called, when it has served
/// [`recycle_after`](super::TabPoolBuilder::recycle_after) leases, or when
/// the lease is dropped by a panic, which may have interrupted the tab in
/// the middle of something.
///
/// ```
/// use agentry::{Error, tabs::TabPool};
///
/// let pool = TabPool::http(2)?;
/// let mut tab = pool.try_lease_for("http://acme.example/")?;
/// assert_eq!(tab.site(), Some("acme.example"));
/// // A site-aware lease stays on its host.
/// assert!(matches!(tab.navigate("http://other.example/"), Err(Error::WrongSite { .. })));
/// # Ok::<(), Error>(())
/// ```
pub struct TabLease {
    pool: Arc<Inner>,
    id: TabId,
    tab: Box<dyn Tab>,
    uses: u64,
    /// The host whose slot this lease holds.
    site: Option<String>,
    /// Whether the lease was taken for its site ([`TabPool::lease_for`]).
    ///
    /// [`TabPool::lease_for`]: super::TabPool::lease_for
    pinned: bool,
    broken: bool,
}

impl TabLease {
    pub(crate) fn new(pool: Arc<Inner>, parked: Parked, site: Option<String>) -> TabLease {
        TabLease {
            pool,
            id: parked.id,
            tab: parked.tab,
            uses: parked.uses,
            pinned: site.is_some(),
            site,
            broken: false,
        }
    }

    /// The id of the tab held, stable for the tab's life.
    pub fn tab_id(&self) -> TabId {
        self.id
    }

    /// The host whose per-site slot this lease holds, if any.
    pub fn site(&self) -> Option<&str> {
        self.site.as_deref()
    }

    /// Loads `url` in the tab and waits until it has loaded, at most the
    /// pool's [navigation
    /// timeout](super::TabPoolBuilder::navigation_timeout).
    ///
    /// The per-site limit holds for every lease. A lease from
    /// [`lease_for`](super::TabPool::lease_for) holds its host's slot for
    /// its whole life and may navigate within that host only. A plain lease
    /// takes the slot of the host it navigates to (giving back the one it
    /// held) without waiting: if that host is at its limit, the navigation
    /// is refused and the tab stays where it was. A url without a host
    /// (`about:blank`) needs no slot.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `url` is malformed;
    /// [`Error::WrongSite`] when a site-aware lease is sent to another
    /// host; [`Error::SiteBusy`] when a plain lease's new host is at its
    /// limit; the tab's errors ([`Error::Navigation`],
    /// [`Error::NavigationTimeout`], [`Error::Browser`]).
    pub fn navigate(&mut self, url: &str) -> Result<()> {
        let target = site::parse(url)?;
        if target.site != self.site {
            if self.pinned {
                return Err(Error::WrongSite {
                    leased: self.site.clone().unwrap_or_default(),
                    url: url.to_owned(),
                });
            }
            self.pool
                .move_site(self.site.as_deref(), target.site.as_deref())?;
            self.site = target.site;
        }
        let timeout: Duration = self.pool.config.navigation_timeout;
        self.run(|tab| tab.navigate(target.url.as_str(), timeout))
    }

    /// The HTML of the page (rendered, for a real browser).
    ///
    /// # Errors
    /// The tab's ([`Error::Browser`]).
    pub fn html(&mut self) -> Result<String> {
        self.run(|tab| tab.html())
    }

    /// Runs `script` in the page; its value as JSON text.
    ///
    /// # Errors
    /// The tab's: [`Error::Unsupported`] with the HTTP backend,
    /// [`Error::Script`] when the script throws, [`Error::Browser`].
    pub fn evaluate(&mut self, script: &str) -> Result<String> {
        self.run(|tab| tab.evaluate(script))
    }

    /// A PNG image of the page's viewport.
    ///
    /// # Errors
    /// The tab's: [`Error::Unsupported`] with the HTTP backend,
    /// [`Error::Browser`].
    pub fn screenshot(&mut self) -> Result<Vec<u8>> {
        self.run(|tab| tab.screenshot())
    }

    /// Marks the tab broken: it is recycled when the lease is dropped, and
    /// every further operation on this lease fails with [`Error::Browser`].
    pub fn mark_broken(&mut self) {
        self.broken = true;
    }

    /// Whether the tab is broken (marked, or an operation failed with
    /// [`Error::Browser`]).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    fn run<T>(&mut self, op: impl FnOnce(&mut dyn Tab) -> Result<T>) -> Result<T> {
        if self.broken {
            return Err(Error::Browser {
                reason: format!(
                    "{} is broken: drop this lease and lease another tab",
                    self.id
                ),
            });
        }
        let result = op(self.tab.as_mut());
        if let Err(Error::Browser { reason }) = &result {
            tracing::warn!(tab = %self.id, %reason, "tab broken, to be recycled");
            self.broken = true;
        }
        result
    }
}

impl Drop for TabLease {
    fn drop(&mut self) {
        let tab = std::mem::replace(&mut self.tab, Box::new(GivenBack));
        let returned = if self.broken || std::thread::panicking() {
            Returned::Recycle(tab)
        } else {
            Returned::Keep(Parked {
                id: self.id,
                tab,
                uses: self.uses,
            })
        };
        self.pool.give_back(returned, self.site.as_deref());
    }
}

impl fmt::Debug for TabLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TabLease")
            .field("tab", &self.id)
            .field("site", &self.site)
            .field("pinned", &self.pinned)
            .field("uses", &self.uses)
            .field("broken", &self.broken)
            .finish()
    }
}

/// What a dropped lease holds in place of the tab it gave back.
struct GivenBack;

impl Tab for GivenBack {
    fn navigate(&mut self, _: &str, _: Duration) -> Result<()> {
        Err(given_back())
    }
    fn html(&mut self) -> Result<String> {
        Err(given_back())
    }
    fn evaluate(&mut self, _: &str) -> Result<String> {
        Err(given_back())
    }
    fn screenshot(&mut self) -> Result<Vec<u8>> {
        Err(given_back())
    }
}

fn given_back() -> Error {
    Error::Browser {
        reason: "the tab was given back to its pool".into(),
    }
}
