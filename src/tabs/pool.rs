//! The tab pool: who holds which tab, who waits, and the per-site slots.
//!
//! All bookkeeping sits in one [`State`] behind one mutex; tabs are opened,
//! used and closed outside it, since a browser may take a while. Waiting is
//! a hand-off: a waiter queues a one-slot channel, and whoever frees a tab
//! or a site slot runs [`State::dispatch`], which grants what is free to
//! the waiters in arrival order, skipping those whose site is at its limit
//! (so one busy site does not hold up agents bound elsewhere). A grant is
//! made under the lock and is the waiter's from then on; a waiter that
//! times out takes the lock and looks once more before it leaves the
//! queue, so a grant is never lost. Because every change runs `dispatch`,
//! a waiter still queued could not be served, and a newcomer served at once
//! takes nothing a waiter could use: waiting is first come, first served.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};
use parking_lot::Mutex;
use serde::Serialize;

use super::lease::TabLease;
use super::{Browser, HttpBrowser, Tab, TabId, site};
use crate::error::{Error, Result};

/// Default [`TabPoolBuilder::max_tabs`].
pub const DEFAULT_MAX_TABS: usize = 4;
/// Default [`TabPoolBuilder::per_site_limit`].
pub const DEFAULT_PER_SITE_LIMIT: usize = 2;
/// Default [`TabPoolBuilder::recycle_after`].
pub const DEFAULT_RECYCLE_AFTER: u64 = 100;
/// Default [`TabPoolBuilder::navigation_timeout`].
pub const DEFAULT_NAVIGATION_TIMEOUT: Duration = Duration::from_secs(30);

/// A pool of browser tabs leased to agents exclusively. Cloning it gives
/// another handle on the same pool.
///
/// See [the module](crate::tabs) for the whole story.
///
/// ```
/// use agentry::{Error, tabs::TabPool};
/// use std::time::Duration;
///
/// let pool = TabPool::http(1)?;
/// let held = pool.try_lease()?;
/// // The only tab is leased: a second lease waits at most its timeout.
/// assert!(matches!(pool.try_lease(), Err(Error::NoTabFree { max_tabs: 1 })));
/// assert!(pool.lease(Duration::from_millis(10)).unwrap_err().is_timeout());
/// let id = held.tab_id();
/// drop(held);
/// assert_eq!(pool.try_lease()?.tab_id(), id);
/// # Ok::<(), Error>(())
/// ```
#[derive(Clone)]
pub struct TabPool {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    browser: Box<dyn Browser>,
    pub(crate) config: Config,
    state: Mutex<State>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    max_tabs: usize,
    pub(crate) per_site_limit: usize,
    recycle_after: u64,
    pub(crate) navigation_timeout: Duration,
}

/// An open tab at rest in the pool.
pub(crate) struct Parked {
    pub(crate) id: TabId,
    pub(crate) tab: Box<dyn Tab>,
    /// Leases it has served.
    pub(crate) uses: u64,
}

/// What a lease is granted: a tab at rest, or the right to open a new one
/// (counted in `open` already, under this id).
enum Grant {
    Parked(Parked),
    Open(TabId),
}

struct Waiter {
    ticket: u64,
    site: Option<String>,
    grant: Sender<Grant>,
}

#[derive(Default)]
struct State {
    parked: Vec<Parked>,
    /// Tabs open, being opened, or leased.
    open: usize,
    leased: usize,
    /// Per host, the leases holding one of its slots.
    sites: HashMap<String, usize>,
    waiters: VecDeque<Waiter>,
    next_ticket: u64,
    next_tab: u64,
    opened: u64,
    recycled: u64,
    leases: u64,
    timeouts: u64,
    site_waits: u64,
}

/// How a lease gives its tab back.
pub(crate) enum Returned {
    /// To be leased again.
    Keep(Parked),
    /// Broken or worn out: close it, open another when needed.
    Recycle(Box<dyn Tab>),
    /// The tab could not be opened.
    NeverOpened,
}

/// Figures of a [`TabPool`], from [`TabPool::stats`] (and in the
/// orchestrator's [`StatusReport`](crate::StatusReport)).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TabPoolStats {
    /// The most tabs the pool opens.
    pub max_tabs: usize,
    /// The most leases that may hold one host at once.
    pub per_site_limit: usize,
    /// Tabs open now (leased or at rest, or being opened).
    pub open: usize,
    /// Tabs leased now.
    pub leased: usize,
    /// Agents waiting for a lease now.
    pub waiting: usize,
    /// Hosts with at least one lease on them now.
    pub sites: usize,
    /// Tabs opened since the pool was built.
    pub opened: u64,
    /// Tabs closed because they broke or were worn out.
    pub recycled: u64,
    /// Leases granted.
    pub leases: u64,
    /// Lease requests that timed out.
    pub timeouts: u64,
    /// Site-aware lease requests that had to wait because their host was
    /// at its limit.
    pub site_waits: u64,
}

impl fmt::Display for TabPoolStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tabs: {} open of {} ({} leased) | {} waiting | {} sites (limit {}) | {} leases, {} timed out, {} site waits | {} opened, {} recycled",
            self.open,
            self.max_tabs,
            self.leased,
            self.waiting,
            self.sites,
            self.per_site_limit,
            self.leases,
            self.timeouts,
            self.site_waits,
            self.opened,
            self.recycled
        )
    }
}

/// Configures a [`TabPool`]; from [`TabPool::builder`].
pub struct TabPoolBuilder {
    browser: Box<dyn Browser>,
    config: Config,
}

impl TabPoolBuilder {
    /// The most tabs open at once, leased or not (default 4, at least 1).
    /// Tabs are opened when first needed.
    pub fn max_tabs(mut self, n: usize) -> Self {
        self.config.max_tabs = n;
        self
    }

    /// The most leases that may hold one host at once (default 2, at least
    /// 1): see [`TabPool::lease_for`] and [`TabLease::navigate`].
    pub fn per_site_limit(mut self, k: usize) -> Self {
        self.config.per_site_limit = k;
        self
    }

    /// After how many leases a tab is closed and replaced by a fresh one
    /// (default 100, at least 1), so that a long run does not accumulate
    /// one page's leaks.
    pub fn recycle_after(mut self, leases: u64) -> Self {
        self.config.recycle_after = leases;
        self
    }

    /// How long [`TabLease::navigate`] waits for a page to load (default
    /// 30 s, more than zero).
    pub fn navigation_timeout(mut self, timeout: Duration) -> Self {
        self.config.navigation_timeout = timeout;
        self
    }

    /// The pool. No tab is opened yet.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when `max_tabs`, `per_site_limit`,
    /// `recycle_after` or the navigation timeout is zero.
    pub fn build(self) -> Result<TabPool> {
        let c = self.config;
        let zero = [
            ("max_tabs", c.max_tabs == 0),
            ("per_site_limit", c.per_site_limit == 0),
            ("recycle_after", c.recycle_after == 0),
            ("navigation_timeout", c.navigation_timeout.is_zero()),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, is_zero)| *is_zero) {
            return Err(Error::InvalidConfig(format!(
                "tab pool {name} must be more than zero"
            )));
        }
        Ok(TabPool {
            inner: Arc::new(Inner {
                browser: self.browser,
                config: c,
                state: Mutex::new(State::default()),
            }),
        })
    }
}

impl fmt::Debug for TabPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TabPoolBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl TabPool {
    /// A builder of a pool of `browser`'s tabs, with every default.
    pub fn builder(browser: impl Browser) -> TabPoolBuilder {
        TabPoolBuilder {
            browser: Box::new(browser),
            config: Config {
                max_tabs: DEFAULT_MAX_TABS,
                per_site_limit: DEFAULT_PER_SITE_LIMIT,
                recycle_after: DEFAULT_RECYCLE_AFTER,
                navigation_timeout: DEFAULT_NAVIGATION_TIMEOUT,
            },
        }
    }

    /// A pool of at most `max_tabs` tabs of an [`HttpBrowser`], other
    /// settings at their defaults.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when `max_tabs` is 0.
    pub fn http(max_tabs: usize) -> Result<TabPool> {
        TabPool::builder(HttpBrowser::new())
            .max_tabs(max_tabs)
            .build()
    }

    /// A tab now, if one is free (at rest, or not opened yet).
    ///
    /// # Errors
    /// [`Error::NoTabFree`] when every tab is leased; [`Error::Browser`]
    /// when a new tab cannot be opened.
    pub fn try_lease(&self) -> Result<TabLease> {
        self.acquire(None, None)
    }

    /// A tab, waiting at most `timeout` for one to be free. Waiters are
    /// served in arrival order.
    ///
    /// # Errors
    /// [`Error::Timeout`] when no tab came free in time; [`Error::Browser`]
    /// when a new tab cannot be opened.
    pub fn lease(&self, timeout: Duration) -> Result<TabLease> {
        self.acquire(None, Some(timeout))
    }

    /// A tab and one of the slots of `url`'s host, now, if both are free.
    /// The lease may then navigate within that host only (see
    /// [`TabLease::navigate`]); it does not navigate by itself.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `url` is malformed or has no host;
    /// [`Error::SiteBusy`] when the host is at its limit;
    /// [`Error::NoTabFree`] when every tab is leased; [`Error::Browser`]
    /// when a new tab cannot be opened.
    pub fn try_lease_for(&self, url: &str) -> Result<TabLease> {
        self.acquire(Some(site::site_of(url)?), None)
    }

    /// A tab and one of the slots of `url`'s host, waiting at most
    /// `timeout` for both. Waiters are served in arrival order, except that
    /// a waiter whose host is at its limit lets those behind it, bound
    /// elsewhere, go first.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `url` is malformed or has no host;
    /// [`Error::Timeout`] when no tab or no slot came free in time;
    /// [`Error::Browser`] when a new tab cannot be opened.
    pub fn lease_for(&self, url: &str, timeout: Duration) -> Result<TabLease> {
        self.acquire(Some(site::site_of(url)?), Some(timeout))
    }

    /// The pool's figures now.
    pub fn stats(&self) -> TabPoolStats {
        let c = self.inner.config;
        let s = self.inner.state.lock();
        TabPoolStats {
            max_tabs: c.max_tabs,
            per_site_limit: c.per_site_limit,
            open: s.open,
            leased: s.leased,
            waiting: s.waiters.len(),
            sites: s.sites.len(),
            opened: s.opened,
            recycled: s.recycled,
            leases: s.leases,
            timeouts: s.timeouts,
            site_waits: s.site_waits,
        }
    }

    fn acquire(&self, site: Option<String>, timeout: Option<Duration>) -> Result<TabLease> {
        let config = self.inner.config;
        let mut state = self.inner.state.lock();
        let granted = state.grant(site.as_deref(), &config);
        let grant = match granted {
            Ok(grant) => {
                drop(state);
                grant
            }
            Err(busy) => {
                let Some(timeout) = timeout else {
                    return Err(busy);
                };
                if matches!(busy, Error::SiteBusy { .. }) {
                    state.site_waits += 1;
                }
                let (tx, rx) = crossbeam_channel::bounded(1);
                let ticket = state.next_ticket;
                state.next_ticket += 1;
                state.waiters.push_back(Waiter {
                    ticket,
                    site: site.clone(),
                    grant: tx,
                });
                drop(state);
                // A timeout too long to be a deadline waits without one.
                match rx.recv_timeout(timeout) {
                    Ok(grant) => grant,
                    Err(_) => {
                        let mut state = self.inner.state.lock();
                        // A grant made between the timeout and the lock is ours.
                        match rx.try_recv() {
                            Ok(grant) => grant,
                            Err(_) => {
                                state.waiters.retain(|w| w.ticket != ticket);
                                state.timeouts += 1;
                                return Err(Error::Timeout);
                            }
                        }
                    }
                }
            }
        };
        self.start(grant, site)
    }

    /// Turns a grant into a lease, opening a tab if it has to.
    fn start(&self, grant: Grant, site: Option<String>) -> Result<TabLease> {
        let parked = match grant {
            Grant::Parked(parked) => parked,
            Grant::Open(id) => match self.inner.browser.open_tab() {
                Ok(tab) => {
                    self.inner.state.lock().opened += 1;
                    Parked { id, tab, uses: 1 }
                }
                Err(error) => {
                    self.inner.give_back(Returned::NeverOpened, site.as_deref());
                    return Err(error);
                }
            },
        };
        tracing::debug!(tab = %parked.id, site = ?site, "tab leased");
        Ok(TabLease::new(Arc::clone(&self.inner), parked, site))
    }
}

impl fmt::Debug for TabPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TabPool")
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Inner {
    /// Takes a tab back from a lease, with the site slot it held, and
    /// serves the waiters. A recycled tab is closed after the lock is
    /// released.
    pub(crate) fn give_back(&self, returned: Returned, site: Option<&str>) {
        let recycle_after = self.config.recycle_after;
        let closing = {
            let mut state = self.state.lock();
            state.leased -= 1;
            if let Some(site) = site {
                state.release_site(site);
            }
            let closing = match returned {
                Returned::Keep(parked) if parked.uses < recycle_after => {
                    state.parked.push(parked);
                    None
                }
                Returned::Keep(Parked { tab, .. }) | Returned::Recycle(tab) => {
                    state.open -= 1;
                    state.recycled += 1;
                    Some(tab)
                }
                Returned::NeverOpened => {
                    state.open -= 1;
                    None
                }
            };
            state.dispatch(&self.config);
            closing
        };
        drop(closing);
    }

    /// Moves a plain lease from the site `from` to the site `to` without
    /// waiting: the slot of `to` is taken first, so a refusal leaves the
    /// lease where it was.
    pub(crate) fn move_site(&self, from: Option<&str>, to: Option<&str>) -> Result<()> {
        let limit = self.config.per_site_limit;
        let mut state = self.state.lock();
        if let Some(to) = to {
            if state.site_full(to, limit) {
                return Err(Error::SiteBusy {
                    host: to.to_owned(),
                    limit,
                });
            }
            *state.sites.entry(to.to_owned()).or_default() += 1;
        }
        if let Some(from) = from {
            state.release_site(from);
            state.dispatch(&self.config);
        }
        Ok(())
    }
}

impl State {
    fn site_full(&self, site: &str, limit: usize) -> bool {
        self.sites.get(site).is_some_and(|&n| n >= limit)
    }

    fn release_site(&mut self, site: &str) {
        if let Some(n) = self.sites.get_mut(site) {
            *n -= 1;
            if *n == 0 {
                self.sites.remove(site);
            }
        }
    }

    fn tab_free(&self, config: &Config) -> bool {
        !self.parked.is_empty() || self.open < config.max_tabs
    }

    /// A tab (and the site's slot) if both are free, counted as leased.
    fn grant(&mut self, site: Option<&str>, config: &Config) -> Result<Grant> {
        if let Some(site) = site {
            if self.site_full(site, config.per_site_limit) {
                return Err(Error::SiteBusy {
                    host: site.to_owned(),
                    limit: config.per_site_limit,
                });
            }
        }
        let grant = if let Some(mut parked) = self.parked.pop() {
            parked.uses += 1;
            Grant::Parked(parked)
        } else if self.open < config.max_tabs {
            self.open += 1;
            self.next_tab += 1;
            Grant::Open(TabId(self.next_tab))
        } else {
            return Err(Error::NoTabFree {
                max_tabs: config.max_tabs,
            });
        };
        if let Some(site) = site {
            *self.sites.entry(site.to_owned()).or_default() += 1;
        }
        self.leased += 1;
        self.leases += 1;
        Ok(grant)
    }

    /// Grants what is free to the waiters, in arrival order.
    fn dispatch(&mut self, config: &Config) {
        let mut i = 0;
        while i < self.waiters.len() && self.tab_free(config) {
            let blocked = self.waiters[i]
                .site
                .as_deref()
                .is_some_and(|site| self.site_full(site, config.per_site_limit));
            if blocked {
                i += 1;
                continue;
            }
            let Some(waiter) = self.waiters.remove(i) else {
                break;
            };
            let Ok(grant) = self.grant(waiter.site.as_deref(), config) else {
                break;
            };
            // The waiter holds its receiver until it has left the queue,
            // so this only fails if its thread is gone: take the grant back.
            if let Err(TrySendError::Full(grant) | TrySendError::Disconnected(grant)) =
                waiter.grant.try_send(grant)
            {
                self.undo(grant, waiter.site.as_deref());
            }
        }
    }

    fn undo(&mut self, grant: Grant, site: Option<&str>) {
        match grant {
            Grant::Parked(mut parked) => {
                parked.uses -= 1;
                self.parked.push(parked);
            }
            Grant::Open(_) => self.open -= 1,
        }
        if let Some(site) = site {
            self.release_site(site);
        }
        self.leased -= 1;
        self.leases -= 1;
    }
}
