//! Unit tests of the site rules.

use super::site;

#[test]
fn site_is_the_lower_case_host_without_port() {
    let target = site::parse("http://Acme.Example:8080/a?b").unwrap();
    assert_eq!(target.site.as_deref(), Some("acme.example"));
    assert_eq!(
        site::site_of("https://acme.example/").unwrap(),
        "acme.example"
    );
}

#[test]
fn urls_without_a_host_are_on_no_site() {
    assert_eq!(site::parse("about:blank").unwrap().site, None);
    assert!(site::site_of("data:text/html,hi").is_err());
}

#[test]
fn malformed_urls_are_invalid_input() {
    for url in ["", "not a url", "http://", "://x"] {
        assert!(
            matches!(site::parse(url), Err(crate::Error::InvalidInput(_))),
            "{url:?} was accepted"
        );
    }
}
