//! Which site a url belongs to, for the per-site limit.

use url::Url;

use crate::error::{Error, Result};

/// A parsed url and its site: the host, lower-cased, without scheme or
/// port (`http://Acme.example:8080/a` is on `acme.example`). A url without
/// a host (`about:blank`, `data:...`) is on no site.
pub(crate) struct Target {
    pub(crate) url: Url,
    pub(crate) site: Option<String>,
}

pub(crate) fn parse(url: &str) -> Result<Target> {
    let parsed =
        Url::parse(url).map_err(|e| Error::InvalidInput(format!("malformed url {url:?}: {e}")))?;
    let site = parsed.host_str().map(|h| h.to_ascii_lowercase());
    Ok(Target { url: parsed, site })
}

/// The site of `url`, which must have one (for a site-aware lease).
pub(crate) fn site_of(url: &str) -> Result<String> {
    parse(url)?
        .site
        .ok_or_else(|| Error::InvalidInput(format!("url {url:?} has no host to lease a site for")))
}
