//! The Chromium backend: real tabs of one headless Chromium, over the
//! DevTools protocol (the `headless_chrome` crate, synchronous).
//!
//! Every DevTools call has a deadline of ours. The crate waits for an
//! answer as long as its connection's idle timeout, and a page that never
//! answers (a server that accepts and says nothing) would hold a navigation
//! that long; so each call runs on a short-lived helper thread and the tab
//! waits for it at most its deadline. A navigation past its timeout is
//! stopped (`Page.stopLoading`), which also ends the helper's call; any
//! other call past its deadline means the tab no longer answers, and it is
//! reported broken, to be recycled. Since no call relies on the
//! connection's idle timeout, it is set long enough never to close an idle
//! browser.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use headless_chrome::protocol::cdp::types::Event;
use headless_chrome::protocol::cdp::{Inspector, Page, Runtime};

use super::{Browser, Tab};
use crate::error::{Error, Result};

/// Where [`ChromeBrowser`] looks for Chromium by default: the Debian
/// package `chromium`'s binary.
pub const DEFAULT_CHROMIUM_PATH: &str = "/usr/bin/chromium";

/// The command that installs Chromium on Debian and Ubuntu.
const INSTALL: &str = "apt-get install chromium";

/// The flags [`ChromeBrowser`] starts Chromium with, besides `--headless`,
/// `--remote-debugging-port` and a fresh temporary `--user-data-dir` (removed
/// when the browser is dropped), which the DevTools crate adds:
///
/// | flag | why |
/// | --- | --- |
/// | `--no-sandbox` | Chromium's sandbox cannot run as root (in containers and CI); pages are then not isolated from the process, so visit only sites you trust as much as your own code |
/// | `--disable-gpu` | there is no GPU (nor display) to use |
/// | `--disable-dev-shm-usage` | containers often have a tiny `/dev/shm`; use `/tmp` instead of crashing tabs |
/// | `--disable-background-networking` | no update checks, safe-browsing lists or other traffic of its own |
/// | `--disable-component-update` | no component downloads |
/// | `--disable-sync` | no account sync |
/// | `--no-first-run` | no first-run setup |
/// | `--disable-quic` | plain TCP, the same on every network |
/// | `--disable-extensions`, `--disable-default-apps` | nothing loaded besides the pages |
/// | `--mute-audio`, `--hide-scrollbars` | pages make no sound, screenshots show no scrollbars |
pub const CHROME_FLAGS: &[&str] = &[
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
    "--hide-scrollbars",
];

/// Default [`ChromeBuilder::call_timeout`].
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the connection to Chromium may stay without any message before
/// the DevTools crate closes it: long enough never to matter (see the
/// module's comment).
const IDLE_BROWSER_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// One headless Chromium; each [`Tab`] is a tab of it, with its own
/// renderer. Cargo feature `chrome`.
///
/// Chromium is never downloaded: it is the system's, by default
/// [`DEFAULT_CHROMIUM_PATH`] (on Debian and Ubuntu, `apt-get install
/// chromium`), started with [`CHROME_FLAGS`] so that it runs headless as
/// root. The process ends when the browser is dropped (with the last
/// [`TabPool`](super::TabPool) handle that holds it).
///
/// Tabs navigate and wait until the page has loaded and its network is
/// almost idle (Chromium's `networkAlmostIdle`: at most two connections for
/// 500 ms), so content that scripts fetch after the load event is there
/// too; this costs at least half a second per navigation. A page that does
/// not get there within the navigation timeout is stopped, and the
/// navigation fails with [`Error::NavigationTimeout`]. Tabs return the
/// rendered HTML, evaluate scripts and take PNG screenshots. All tabs of
/// one browser share its cookies (one browser profile); the HTTP backend
/// keeps cookies per tab. If Chromium itself exits, every tab fails with
/// [`Error::Browser`] and no new tab opens: launch a new browser and pool.
///
/// ```no_run
/// use agentry::tabs::{ChromeBrowser, TabPool};
///
/// let chrome = ChromeBrowser::builder().window_size(1280, 800).launch()?;
/// let pool = TabPool::builder(chrome).max_tabs(2).build()?;
/// let mut tab = pool.try_lease()?;
/// tab.navigate("https://example.org/")?;
/// let title = tab.evaluate("document.title")?;
/// assert_eq!(title, "\"Example Domain\"");
/// # Ok::<(), agentry::Error>(())
/// ```
pub struct ChromeBrowser {
    browser: headless_chrome::Browser,
    call_timeout: Duration,
}

/// Configures and launches a [`ChromeBrowser`]; from
/// [`ChromeBrowser::builder`].
#[derive(Clone, Debug)]
pub struct ChromeBuilder {
    path: PathBuf,
    window_size: (u32, u32),
    args: Vec<OsString>,
    call_timeout: Duration,
}

impl ChromeBrowser {
    /// Launches Chromium from [`DEFAULT_CHROMIUM_PATH`] with every default.
    ///
    /// # Errors
    /// As [`ChromeBuilder::launch`].
    pub fn launch() -> Result<ChromeBrowser> {
        ChromeBrowser::builder().launch()
    }

    /// A builder with every default.
    pub fn builder() -> ChromeBuilder {
        ChromeBuilder {
            path: PathBuf::from(DEFAULT_CHROMIUM_PATH),
            window_size: (1280, 800),
            args: Vec::new(),
            call_timeout: DEFAULT_CALL_TIMEOUT,
        }
    }
}

impl ChromeBuilder {
    /// The Chromium (or Chrome) binary (default [`DEFAULT_CHROMIUM_PATH`]).
    pub fn path(mut self, path: impl AsRef<Path>) -> Self {
        self.path = path.as_ref().to_path_buf();
        self
    }

    /// The size of every tab's viewport, in CSS pixels (default 1280 x
    /// 800): what a screenshot shows.
    pub fn window_size(mut self, width: u32, height: u32) -> Self {
        self.window_size = (width, height);
        self
    }

    /// Adds a command-line flag after [`CHROME_FLAGS`]. May repeat.
    pub fn arg(mut self, flag: impl Into<OsString>) -> Self {
        self.args.push(flag.into());
        self
    }

    /// How long a tab waits for any DevTools call other than a navigation
    /// (opening a tab, reading HTML, a script, a screenshot) before it takes
    /// the tab for broken (default 30 s). A script runs at most this long.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Starts Chromium and connects to it.
    ///
    /// # Errors
    /// [`Error::BrowserNotInstalled`] when there is no file at the path
    /// (it names `apt-get install chromium`); [`Error::InvalidConfig`] for
    /// a zero call timeout or window size; [`Error::Browser`] when Chromium
    /// does not start or answer.
    pub fn launch(self) -> Result<ChromeBrowser> {
        if !self.path.exists() {
            return Err(Error::BrowserNotInstalled {
                path: self.path,
                install: INSTALL,
            });
        }
        if self.call_timeout.is_zero() || self.window_size.0 == 0 || self.window_size.1 == 0 {
            return Err(Error::InvalidConfig(
                "chrome call_timeout and window size must be more than zero".into(),
            ));
        }
        let args: Vec<&OsStr> = CHROME_FLAGS
            .iter()
            .map(OsStr::new)
            .chain(self.args.iter().map(OsString::as_os_str))
            .collect();
        let options = headless_chrome::LaunchOptions {
            headless: true,
            sandbox: false,
            enable_gpu: false,
            window_size: Some(self.window_size),
            path: Some(self.path.clone()),
            ignore_certificate_errors: false,
            args,
            disable_default_args: true,
            idle_browser_timeout: IDLE_BROWSER_TIMEOUT,
            ..headless_chrome::LaunchOptions::default()
        };
        let browser = headless_chrome::Browser::new(options).map_err(|e| Error::Browser {
            reason: format!("cannot start {}: {e:#}", self.path.display()),
        })?;
        browser.set_default_timeout(self.call_timeout);
        tracing::info!(path = %self.path.display(), pid = ?browser.get_process_id(), "chromium started");
        Ok(ChromeBrowser {
            browser,
            call_timeout: self.call_timeout,
        })
    }
}

impl Browser for ChromeBrowser {
    fn open_tab(&self) -> Result<Box<dyn Tab>> {
        let tab = self.browser.new_tab().map_err(|e| Error::Browser {
            reason: format!("cannot open a tab: {e:#}"),
        })?;
        let crashed = Arc::new(AtomicBool::new(false));
        // Wrapped at once, so that a failure below closes the tab on drop.
        let tab = ChromeTab {
            tab,
            call_timeout: self.call_timeout,
            crashed: Arc::clone(&crashed),
        };
        let flag = crashed;
        tab.tab
            .add_event_listener(Arc::new(move |event: &Event| {
                if matches!(event, Event::InspectorTargetCrashed(_)) {
                    flag.store(true, Ordering::SeqCst);
                }
            }))
            .map_err(|e| Error::Browser {
                reason: format!("cannot listen to a new tab: {e:#}"),
            })?;
        // Crash reports come from the Inspector domain.
        tab.call_or_broken("watching a new tab for crashes", |tab| {
            tab.call_method(Inspector::Enable(None))
        })?;
        Ok(Box::new(tab))
    }
}

impl fmt::Debug for ChromeBrowser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChromeBrowser")
            .field("pid", &self.browser.get_process_id())
            .field("call_timeout", &self.call_timeout)
            .finish()
    }
}

struct ChromeTab {
    tab: Arc<headless_chrome::Tab>,
    call_timeout: Duration,
    /// Set when Chromium reports that the tab's renderer crashed: a crashed
    /// tab answers nothing, so calls fail at once instead of at their
    /// deadline.
    crashed: Arc<AtomicBool>,
}

/// A DevTools call without an answer.
enum Unanswered {
    /// None within its deadline.
    Late,
    /// The tab's renderer crashed.
    Crashed,
    /// Its helper thread could not start.
    NoThread(std::io::Error),
}

impl ChromeTab {
    /// Runs `call` on a helper thread, waiting at most `deadline`, or until
    /// the tab crashes.
    fn call<T, E>(
        &self,
        deadline: Duration,
        call: impl FnOnce(&headless_chrome::Tab) -> std::result::Result<T, E> + Send + 'static,
    ) -> std::result::Result<std::result::Result<T, E>, Unanswered>
    where
        T: Send + 'static,
        E: Send + 'static,
    {
        const CRASH_CHECK: Duration = Duration::from_millis(50);
        if self.crashed.load(Ordering::SeqCst) {
            return Err(Unanswered::Crashed);
        }
        let deadline = crate::clock::deadline_after(deadline);
        let (tx, rx) = crossbeam_channel::bounded(1);
        let tab = Arc::clone(&self.tab);
        std::thread::Builder::new()
            .name("agentry-chrome-call".into())
            .spawn(move || {
                let _ = tx.send(call(&tab));
            })
            .map_err(Unanswered::NoThread)?;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(Unanswered::Late);
            }
            let wait = CRASH_CHECK.min(deadline - now);
            if let Ok(answer) = rx.recv_timeout(wait) {
                return Ok(answer);
            }
            if self.crashed.load(Ordering::SeqCst) {
                return Err(Unanswered::Crashed);
            }
        }
    }

    /// A call that breaks the tab when it fails or does not answer.
    fn call_or_broken<T, E>(
        &self,
        what: &str,
        call: impl FnOnce(&headless_chrome::Tab) -> std::result::Result<T, E> + Send + 'static,
    ) -> Result<T>
    where
        T: Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        match self.call(self.call_timeout, call) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(Error::Browser {
                reason: format!("{what} failed: {e:#}"),
            }),
            Err(Unanswered::Late) => Err(Error::Browser {
                reason: format!("{what}: no answer within {:?}", self.call_timeout),
            }),
            Err(Unanswered::Crashed) => Err(crashed(what)),
            Err(Unanswered::NoThread(e)) => Err(Error::Browser {
                reason: format!("{what}: cannot start a thread: {e}"),
            }),
        }
    }

    /// Evaluates `expression`, awaiting a promise.
    fn eval(&self, expression: String) -> Result<Runtime::RemoteObject> {
        let timeout_ms = self.call_timeout.as_secs_f64() * 1e3;
        let answer = self.call_or_broken("evaluating a script", move |tab| {
            tab.call_method(Runtime::Evaluate {
                expression,
                return_by_value: Some(true),
                generate_preview: None,
                silent: Some(true),
                await_promise: Some(true),
                include_command_line_api: None,
                user_gesture: None,
                object_group: None,
                context_id: None,
                throw_on_side_effect: None,
                timeout: Some(timeout_ms),
                disable_breaks: None,
                repl_mode: None,
                allow_unsafe_eval_blocked_by_csp: None,
                unique_context_id: None,
                serialization_options: None,
            })
        })?;
        if let Some(exception) = answer.exception_details {
            let reason = exception
                .exception
                .and_then(|e| e.description)
                .unwrap_or(exception.text);
            return Err(Error::Script { reason });
        }
        Ok(answer.result)
    }
}

impl Tab for ChromeTab {
    fn navigate(&mut self, url: &str, timeout: Duration) -> Result<()> {
        let target = url.to_owned();
        self.tab.set_default_timeout(timeout);
        let answer = self.call(timeout, move |tab| {
            tab.navigate_to(&target)
                .and_then(|tab| tab.wait_until_navigated())
                .map(drop)
        });
        match answer {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if e.is::<headless_chrome::util::Timeout>() => self.stop(url, timeout),
            Ok(Err(_)) if self.crashed.load(Ordering::SeqCst) => {
                Err(crashed(&format!("navigating to {url}")))
            }
            Ok(Err(e)) if e.is::<headless_chrome::browser::tab::NavigationFailed>() => {
                Err(Error::Navigation {
                    url: url.to_owned(),
                    reason: format!("{e:#}"),
                })
            }
            Ok(Err(e)) => Err(Error::Browser {
                reason: format!("navigating to {url} failed: {e:#}"),
            }),
            Err(Unanswered::Late) => self.stop(url, timeout),
            Err(Unanswered::Crashed) => Err(crashed(&format!("navigating to {url}"))),
            Err(Unanswered::NoThread(e)) => Err(Error::Browser {
                reason: format!("navigating to {url}: cannot start a thread: {e}"),
            }),
        }
    }

    fn html(&mut self) -> Result<String> {
        let html = self.eval(
            "(document.doctype ? new XMLSerializer().serializeToString(document.doctype) : '') \
             + (document.documentElement ? document.documentElement.outerHTML : '')"
                .to_owned(),
        )?;
        match html.value.as_ref().and_then(|v| v.as_str()) {
            Some(html) => Ok(html.to_owned()),
            None => Err(Error::Browser {
                reason: format!("the page's HTML came back as {:?}", html.value),
            }),
        }
    }

    fn evaluate(&mut self, script: &str) -> Result<String> {
        let value = self.eval(script.to_owned())?.value;
        Ok(value.map_or_else(|| "null".to_owned(), |value| value.to_string()))
    }

    fn screenshot(&mut self) -> Result<Vec<u8>> {
        self.call_or_broken("taking a screenshot", |tab| {
            tab.capture_screenshot(Page::CaptureScreenshotFormatOption::Png, None, None, true)
        })
    }
}

impl ChromeTab {
    /// Stops a navigation past its timeout. A tab that does not stop is
    /// broken.
    fn stop(&self, url: &str, timeout: Duration) -> Result<()> {
        self.call_or_broken("stopping a page that did not load", |tab| {
            tab.stop_loading()
        })?;
        Err(Error::NavigationTimeout {
            url: url.to_owned(),
            timeout,
        })
    }
}

impl Drop for ChromeTab {
    fn drop(&mut self) {
        // Closing waits for Chromium's answer; nobody needs to wait for it.
        let tab = Arc::clone(&self.tab);
        let _ = std::thread::Builder::new()
            .name("agentry-chrome-close".into())
            .spawn(move || tab.close_target());
    }
}

fn crashed(what: &str) -> Error {
    Error::Browser {
        reason: format!("{what}: the tab crashed"),
    }
}
