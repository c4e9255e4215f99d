//! The HTTP backend: a tab is an HTTP client session.

use std::fmt;
use std::time::Duration;

use super::{Browser, Tab};
use crate::error::{Error, Result};

/// The largest page body a tab reads (larger ones fail to navigate).
const MAX_BODY: u64 = 16 * 1024 * 1024;

/// The longest timeout given to the HTTP client, which adds it to the
/// clock (a longer one would overflow): a year is as good as none.
const LONGEST_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// A browser without a rendering engine: each tab is an HTTP client session
/// (ureq, with TLS) with a cookie jar of its own, following redirects.
///
/// Enough for static pages: [`Tab::html`] is the body fetched last, as the
/// server sent it; content that scripts build is not there, and
/// [`Tab::evaluate`] and [`Tab::screenshot`] fail with
/// [`Error::Unsupported`]. A page loads whatever its HTTP status, as in a
/// browser; a host that cannot be reached fails with
/// [`Error::Navigation`], and a page that does not arrive whole within the
/// navigation timeout with [`Error::NavigationTimeout`].
///
/// ```
/// use agentry::tabs::{Browser, HttpBrowser};
/// use std::time::Duration;
///
/// let mut tab = HttpBrowser::new().open_tab()?;
/// // Nothing listens on port 9 of the loopback interface.
/// let refused = tab.navigate("http://127.0.0.1:9/", Duration::from_secs(5));
/// assert!(matches!(refused, Err(agentry::Error::Navigation { .. })));
/// assert!(matches!(tab.evaluate("1 + 1"), Err(agentry::Error::Unsupported { .. })));
/// # Ok::<(), agentry::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct HttpBrowser {
    user_agent: String,
}

impl HttpBrowser {
    /// A browser whose requests say `User-Agent: agentry/<version>`.
    pub fn new() -> HttpBrowser {
        HttpBrowser {
            user_agent: concat!("agentry/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }

    /// The `User-Agent` header of every request.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> HttpBrowser {
        self.user_agent = user_agent.into();
        self
    }
}

impl Default for HttpBrowser {
    fn default() -> Self {
        HttpBrowser::new()
    }
}

impl Browser for HttpBrowser {
    fn open_tab(&self) -> Result<Box<dyn Tab>> {
        let agent = ureq::Agent::config_builder()
            .user_agent(self.user_agent.as_str())
            // A page loads whatever its status, as in a browser.
            .http_status_as_error(false)
            .build()
            .new_agent();
        Ok(Box::new(HttpTab {
            agent,
            html: String::new(),
        }))
    }
}

/// One session: its agent keeps the cookie jar and the connections.
struct HttpTab {
    agent: ureq::Agent,
    html: String,
}

impl Tab for HttpTab {
    fn navigate(&mut self, url: &str, timeout: Duration) -> Result<()> {
        self.html.clear();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::Navigation {
                url: url.to_owned(),
                reason: "the http backend fetches http:// and https:// urls only".into(),
            });
        }
        let failed = |error: ureq::Error| match error {
            ureq::Error::Timeout(_) => Error::NavigationTimeout {
                url: url.to_owned(),
                timeout,
            },
            other => Error::Navigation {
                url: url.to_owned(),
                reason: other.to_string(),
            },
        };
        let mut response = self
            .agent
            .get(url)
            .config()
            .timeout_global(Some(timeout.min(LONGEST_TIMEOUT)))
            .build()
            .call()
            .map_err(failed)?;
        self.html = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .lossy_utf8(true)
            .read_to_string()
            .map_err(failed)?;
        Ok(())
    }

    fn html(&mut self) -> Result<String> {
        Ok(self.html.clone())
    }

    fn evaluate(&mut self, _script: &str) -> Result<String> {
        Err(Error::Unsupported {
            backend: "http",
            operation: "evaluate scripts",
        })
    }

    fn screenshot(&mut self) -> Result<Vec<u8>> {
        Err(Error::Unsupported {
            backend: "http",
            operation: "take screenshots",
        })
    }
}

impl fmt::Debug for HttpTab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTab")
            .field("html_bytes", &self.html.len())
            .finish_non_exhaustive()
    }
}
