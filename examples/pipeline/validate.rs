//! The Validator's judgement: which candidates are contacts, in which
//! normal form, how sure we are, and why the others are not.
//!
//! Rules:
//! * E-mail: one `@`; a local part of letters, digits and `.!#$%&'*+/=?^_`
//!   `{|}~-` without a leading, trailing or doubled dot; a domain of at
//!   least two dot-separated labels (letters, digits, inner hyphens) ending
//!   in an alphabetic top-level domain. Stored in lower case. Addresses
//!   nobody reads (`noreply@`, `no-reply@`, `donotreply@`, ...) are
//!   refused.
//! * Phone: normalised to E.164 (`+` country code, then digits). A number
//!   starting with `+` or `00` carries its country code (a `(0)` after it
//!   is dropped); a national one takes the code of the region of the page's
//!   language (`lang="en-GB"`: +44) and loses its trunk prefix (`0`, or
//!   `1` in North America). 8 to 15 digits; a national number on a page
//!   with no region is refused.
//! * People are matched across pages by e-mail, phone or name; a person
//!   with neither e-mail nor phone is no contact.
//! * Confidence: by the surest strategy that found a value, plus 0.05 for
//!   every further page that confirms it, at most 1.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::extract::{Candidate, Kind, PageExtraction, Strategy};

/// A valid value, in normal form, with the strategies that found it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub value: String,
    pub strategies: BTreeSet<Strategy>,
}

/// A person as one page shows them, validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PagePerson {
    pub name: String,
    pub role: Option<String>,
    pub emails: Vec<Item>,
    pub phones: Vec<Item>,
}

/// Why a candidate is no contact.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Rejection {
    /// What was written.
    pub value: String,
    /// A short code: `email-syntax`, `no-reply`, `phone-digits`,
    /// `phone-no-country`, `no-channel`.
    pub reason: String,
    /// The reason in words.
    pub message: String,
    /// The strategy that found it.
    pub strategy: Strategy,
}

/// One page's validated findings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageFindings {
    pub people: Vec<PagePerson>,
    pub emails: Vec<Item>,
    pub phones: Vec<Item>,
    pub addresses: Vec<String>,
    pub rejected: Vec<Rejection>,
}

/// Validates what was read on one page.
pub fn validate_page(extraction: &PageExtraction) -> PageFindings {
    let region = extraction.region.as_deref();
    let mut findings = PageFindings::default();
    let sort = |items: &[Candidate],
                emails: &mut Vec<Item>,
                phones: &mut Vec<Item>,
                rejected: &mut Vec<Rejection>| {
        for c in items {
            let (checked, into) = match c.kind {
                Kind::Email => (check_email(&c.raw), &mut *emails),
                Kind::Phone => (normalise_phone(&c.raw, region), &mut *phones),
            };
            match checked {
                Ok(value) => add(into, value, c.strategy),
                Err((reason, message)) => rejected.push(Rejection {
                    value: c.raw.clone(),
                    reason: reason.into(),
                    message,
                    strategy: c.strategy,
                }),
            }
        }
    };
    for p in &extraction.people {
        let mut person = PagePerson {
            name: p.name.clone().unwrap_or_default(),
            role: p.role.clone(),
            emails: Vec::new(),
            phones: Vec::new(),
        };
        sort(
            &p.items,
            &mut person.emails,
            &mut person.phones,
            &mut findings.rejected,
        );
        findings.people.push(person);
    }
    sort(
        &extraction.loose,
        &mut findings.emails,
        &mut findings.phones,
        &mut findings.rejected,
    );
    findings.addresses = extraction.addresses.clone();
    findings.rejected.sort();
    findings.rejected.dedup();
    findings
}

fn add(items: &mut Vec<Item>, value: String, strategy: Strategy) {
    match items.iter_mut().find(|i| i.value == value) {
        Some(item) => {
            item.strategies.insert(strategy);
        }
        None => items.push(Item {
            value,
            strategies: BTreeSet::from([strategy]),
        }),
    }
}

type Checked = Result<String, (&'static str, String)>;

/// The address in lower case, or why it is none.
pub fn check_email(raw: &str) -> Checked {
    let bad = |why: &str| {
        Err((
            "email-syntax",
            format!("{raw:?} is not an e-mail address: {why}"),
        ))
    };
    let address = raw.to_lowercase();
    let Some((local, domain)) = address.split_once('@') else {
        return bad("no @");
    };
    if domain.contains('@') {
        return bad("more than one @");
    }
    if local.is_empty() || local.len() > 64 {
        return bad("the part before @ is empty or longer than 64 characters");
    }
    if !local
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c))
    {
        return bad("a character not allowed before @");
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return bad("a dot at the start or end of the name, or two in a row");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return bad("the domain has no dot");
    }
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !labels.iter().all(label_ok) {
        return bad("an empty or malformed part in the domain");
    }
    let tld = labels[labels.len() - 1];
    if tld.len() < 2 || !tld.chars().all(|c| c.is_ascii_alphabetic()) {
        return bad("the top-level domain is not a word");
    }
    let unread = [
        "noreply",
        "no-reply",
        "donotreply",
        "do-not-reply",
        "no_reply",
    ];
    if unread.contains(&local) {
        return Err((
            "no-reply",
            format!("{address} is a no-reply address: nobody reads it"),
        ));
    }
    Ok(address)
}

/// Country calling codes of the regions the bundled sites use, and of
/// their neighbours.
fn calling_code(region: &str) -> Option<&'static str> {
    Some(match region {
        "US" | "CA" => "1",
        "GB" => "44",
        "IE" => "353",
        "DE" => "49",
        "AT" => "43",
        "CH" => "41",
        "FR" => "33",
        "BE" => "32",
        "NL" => "31",
        "ES" => "34",
        "IT" => "39",
        "SE" => "46",
        "DK" => "45",
        "NO" => "47",
        "AU" => "61",
        "NZ" => "64",
        _ => return None,
    })
}

/// The number in E.164 form, or why it has none.
pub fn normalise_phone(raw: &str, region: Option<&str>) -> Checked {
    let written = raw.trim();
    let international = written.starts_with('+') || written.starts_with("00");
    let without_trunk = if international {
        written.replacen("(0)", "", 1)
    } else {
        written.to_owned()
    };
    let mut digits: String = without_trunk.chars().filter(char::is_ascii_digit).collect();
    if written.starts_with("00") {
        digits.drain(..2);
    }
    if !international {
        let Some(code) = region.and_then(calling_code) else {
            return Err((
                "phone-no-country",
                format!(
                    "{written:?} is written without a country code, and the page does not say which country it is in"
                ),
            ));
        };
        let national = if code == "1" {
            digits
                .strip_prefix('1')
                .filter(|_| digits.len() == 11)
                .unwrap_or(&digits)
        } else {
            digits.strip_prefix('0').unwrap_or(&digits)
        };
        digits = format!("{code}{national}");
    }
    if !(8..=15).contains(&digits.len()) {
        return Err((
            "phone-digits",
            format!(
                "{written:?} has {} digits with its country code; a phone number has 8 to 15",
                digits.len()
            ),
        ));
    }
    if digits.starts_with('1') && digits.len() != 11 {
        return Err((
            "phone-digits",
            format!("{written:?} is a North American number without the 10 digits it needs"),
        ));
    }
    Ok(format!("+{digits}"))
}

/// The confidence a strategy gives on its own.
fn base_confidence(strategy: Strategy) -> f64 {
    match strategy {
        Strategy::MailtoLink | Strategy::TelLink => 0.95,
        Strategy::AddressElement => 0.9,
        Strategy::TableCell | Strategy::TeamTable | Strategy::PersonCard => 0.85,
        Strategy::TextEmail | Strategy::LabelledPhone => 0.8,
        Strategy::InternationalPhone => 0.75,
        Strategy::DeobfuscatedEmail => 0.7,
    }
}

/// A contact detail of an organisation, merged over its pages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    pub value: String,
    pub confidence: f64,
    pub pages: Vec<String>,
}

/// A person of an organisation, merged over its pages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Person {
    pub name: String,
    pub role: Option<String>,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
    pub confidence: f64,
    pub pages: Vec<String>,
}

/// A refused candidate with the pages that showed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flagged {
    pub value: String,
    pub reason: String,
    pub message: String,
    pub pages: Vec<String>,
}

/// The validated contacts of one organisation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OrgContacts {
    pub people: Vec<Person>,
    pub emails: Vec<Contact>,
    pub phones: Vec<Contact>,
    pub addresses: Vec<Contact>,
    pub rejected: Vec<Flagged>,
}

impl OrgContacts {
    pub fn count(&self) -> usize {
        self.people.len() + self.emails.len() + self.phones.len() + self.addresses.len()
    }
}

/// Strategies and pages behind one value.
#[derive(Default)]
struct Seen {
    strategies: BTreeSet<Strategy>,
    pages: BTreeSet<String>,
}

impl Seen {
    fn confidence(&self) -> f64 {
        let best = self
            .strategies
            .iter()
            .map(|&s| base_confidence(s))
            .fold(0.0, f64::max);
        let confirmations = self.pages.len().saturating_sub(1) as f64;
        (best + 0.05 * confirmations).min(1.0)
    }
}

/// Merges the findings of every page of an organisation into its contacts.
/// The result depends only on the findings, not on the order in which the
/// pages were validated.
pub fn merge(pages: &BTreeMap<String, PageFindings>) -> OrgContacts {
    let mut seen: BTreeMap<(Kind, String), Seen> = BTreeMap::new();
    let mut note = |kind: Kind, item: &Item, page: &str| {
        let s = seen.entry((kind, item.value.clone())).or_default();
        s.strategies.extend(item.strategies.iter().copied());
        s.pages.insert(page.to_owned());
    };
    // People, matched by e-mail, phone or name, in page order.
    struct Merged {
        name: String,
        role: Option<String>,
        emails: BTreeSet<String>,
        phones: BTreeSet<String>,
        pages: BTreeSet<String>,
    }
    let mut people: Vec<Merged> = Vec::new();
    for (page, findings) in pages {
        for p in &findings.people {
            for e in &p.emails {
                note(Kind::Email, e, page);
            }
            for t in &p.phones {
                note(Kind::Phone, t, page);
            }
            let mut person = Merged {
                name: p.name.clone(),
                role: p.role.clone(),
                emails: p.emails.iter().map(|i| i.value.clone()).collect(),
                phones: p.phones.iter().map(|i| i.value.clone()).collect(),
                pages: BTreeSet::from([page.clone()]),
            };
            let key = name_key(&person.name);
            let mut i = 0;
            while i < people.len() {
                let other = &people[i];
                let same = name_key(&other.name) == key
                    || !other.emails.is_disjoint(&person.emails)
                    || !other.phones.is_disjoint(&person.phones);
                if same {
                    let other = people.remove(i);
                    person.role = other.role.or(person.role);
                    person.name = other.name;
                    person.emails.extend(other.emails);
                    person.phones.extend(other.phones);
                    person.pages.extend(other.pages);
                } else {
                    i += 1;
                }
            }
            people.push(person);
        }
        for e in &findings.emails {
            note(Kind::Email, e, page);
        }
        for t in &findings.phones {
            note(Kind::Phone, t, page);
        }
    }
    let mut contacts = OrgContacts::default();
    let mut claimed: BTreeSet<(Kind, String)> = BTreeSet::new();
    let mut flagged: BTreeMap<(String, String), Flagged> = BTreeMap::new();
    for person in people {
        if person.emails.is_empty() && person.phones.is_empty() {
            let f = flagged
                .entry((person.name.clone(), "no-channel".into()))
                .or_insert_with(|| Flagged {
                    value: person.name.clone(),
                    reason: "no-channel".into(),
                    message: format!(
                        "{} has neither an e-mail address nor a phone number",
                        person.name
                    ),
                    pages: Vec::new(),
                });
            f.pages.extend(person.pages.iter().cloned());
            continue;
        }
        let channels = person
            .emails
            .iter()
            .map(|e| (Kind::Email, e.clone()))
            .chain(person.phones.iter().map(|p| (Kind::Phone, p.clone())));
        let mut confidence: f64 = 0.0;
        for channel in channels {
            confidence = confidence.max(seen.get(&channel).map_or(0.0, Seen::confidence));
            claimed.insert(channel);
        }
        if person.role.is_some() {
            confidence = (confidence + 0.05).min(1.0);
        }
        contacts.people.push(Person {
            name: person.name,
            role: person.role,
            emails: person.emails.into_iter().collect(),
            phones: person.phones.into_iter().collect(),
            confidence: round(confidence),
            pages: person.pages.into_iter().collect(),
        });
    }
    contacts.people.sort_by(|a, b| a.name.cmp(&b.name));
    for ((kind, value), s) in &seen {
        if claimed.contains(&(*kind, value.clone())) {
            continue;
        }
        let contact = Contact {
            value: value.clone(),
            confidence: round(s.confidence()),
            pages: s.pages.iter().cloned().collect(),
        };
        match kind {
            Kind::Email => contacts.emails.push(contact),
            Kind::Phone => contacts.phones.push(contact),
        }
    }
    let mut addresses: BTreeMap<String, (String, Seen)> = BTreeMap::new();
    for (page, findings) in pages {
        for address in &findings.addresses {
            let (_, s) = addresses
                .entry(address_key(address))
                .or_insert_with(|| (address.clone(), Seen::default()));
            s.strategies.insert(Strategy::AddressElement);
            s.pages.insert(page.clone());
        }
        for r in &findings.rejected {
            let f = flagged
                .entry((r.value.clone(), r.reason.clone()))
                .or_insert_with(|| Flagged {
                    value: r.value.clone(),
                    reason: r.reason.clone(),
                    message: r.message.clone(),
                    pages: Vec::new(),
                });
            f.pages.push(page.clone());
        }
    }
    contacts.addresses = addresses
        .into_values()
        .map(|(value, s)| Contact {
            value,
            confidence: round(s.confidence()),
            pages: s.pages.into_iter().collect(),
        })
        .collect();
    contacts.rejected = flagged.into_values().collect();
    for f in &mut contacts.rejected {
        f.pages.sort();
        f.pages.dedup();
    }
    contacts
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn name_key(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn address_key(address: &str) -> String {
    address
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_normalised_to_e164() {
        let cases = [
            ("(312) 555-0142", Some("US"), "+13125550142"),
            ("1-800-555-0199", Some("US"), "+18005550199"),
            ("+44 (0)20 7946 0321", None, "+442079460321"),
            ("020 7946 0321", Some("GB"), "+442079460321"),
            ("0049 30 5550 9999", None, "+493055509999"),
            ("(02) 5550 1234", Some("AU"), "+61255501234"),
        ];
        for (raw, region, e164) in cases {
            assert_eq!(normalise_phone(raw, region).as_deref(), Ok(e164), "{raw}");
        }
        for (raw, region, reason) in [
            ("12 34", Some("FR"), "phone-digits"),
            ("0161 496 0000", None, "phone-no-country"),
            ("+1 555 0100", None, "phone-digits"),
        ] {
            assert_eq!(normalise_phone(raw, region).unwrap_err().0, reason, "{raw}");
        }
    }

    #[test]
    fn emails_are_checked_and_lower_cased() {
        assert_eq!(
            check_email("Ann.Lee@Acme.Example").as_deref(),
            Ok("ann.lee@acme.example")
        );
        for (raw, reason) in [
            ("a@@b.test", "email-syntax"),
            ("a@b", "email-syntax"),
            ("a@b..test", "email-syntax"),
            (".a@b.test", "email-syntax"),
            ("a@b.t3st", "email-syntax"),
            ("a@-b.test", "email-syntax"),
            ("noreply@b.test", "no-reply"),
        ] {
            assert_eq!(check_email(raw).unwrap_err().0, reason, "{raw}");
        }
    }

    fn item(value: &str, strategy: Strategy) -> Item {
        Item {
            value: value.into(),
            strategies: BTreeSet::from([strategy]),
        }
    }

    #[test]
    fn people_merge_across_pages_and_claim_their_channels() {
        let team = PageFindings {
            people: vec![
                PagePerson {
                    name: "Ann Lee".into(),
                    role: Some("Chair".into()),
                    emails: vec![item("ann@a.test", Strategy::MailtoLink)],
                    phones: vec![],
                },
                PagePerson {
                    name: "Bo Ng".into(),
                    role: None,
                    emails: vec![],
                    phones: vec![],
                },
            ],
            ..PageFindings::default()
        };
        let contact = PageFindings {
            people: vec![PagePerson {
                name: "Ann  lee".into(),
                role: None,
                emails: vec![],
                phones: vec![item("+442079460000", Strategy::LabelledPhone)],
            }],
            emails: vec![
                item("ann@a.test", Strategy::TextEmail),
                item("info@a.test", Strategy::TextEmail),
            ],
            ..PageFindings::default()
        };
        let pages = BTreeMap::from([("contact".to_owned(), contact), ("team".to_owned(), team)]);
        let merged = merge(&pages);
        assert_eq!(merged.people.len(), 1);
        let ann = &merged.people[0];
        assert_eq!(
            (ann.role.as_deref(), &ann.emails[..], &ann.phones[..]),
            (
                Some("Chair"),
                &["ann@a.test".to_owned()][..],
                &["+442079460000".to_owned()][..]
            )
        );
        assert_eq!(ann.pages, ["contact", "team"]);
        // Seen on two pages, the first time by a mailto: link.
        assert_eq!(ann.confidence, 1.0);
        assert_eq!(
            merged.emails.len(),
            1,
            "ann@ is Ann's, info@ the organisation's"
        );
        assert_eq!(merged.rejected[0].reason, "no-channel");
    }
}
