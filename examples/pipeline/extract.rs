//! The Extractor's reading of a page: contact candidates, each with the
//! strategy that found it. Nothing is judged here (the Validator does).
//!
//! What is read, and what is not:
//! * A page is cut into units: person cards (an element of class `person`,
//!   `member` or `vcard`, or a schema.org `Person`), rows of team
//!   tables (a table whose header row has a "Name" column), postal
//!   addresses (`<address>`, class `adr`, `itemprop="address"`), and the
//!   remaining prose, line by line, with its `mailto:` and `tel:` links.
//! * E-mail addresses: `mailto:` links, words holding an `@` in prose
//!   (`&#64;`-style entities are decoded first), and addresses written
//!   `name [at] domain [dot] org` with `[]`, `()` or `{}`.
//! * Phone numbers: `tel:` links, numbers after a label (phone, telephone,
//!   tel, call, mobile, and their French and German forms), numbers written
//!   with a leading `+`, and the phone column of a team table. A bare
//!   number without a label is a date, a price or an order number, never a
//!   phone; fax numbers are not contacts.
//! * Never read: `<script>`, `<style>`, comments, attribute values other
//!   than `href`, and text that is not prose (`<code>`, `<pre>`,
//!   `<template>`, form controls): an address in a code sample or a
//!   placeholder is an example, not a contact.
//!
//! Large pages (see [`PARALLEL_FROM`]) have their units read in parallel on
//! the orchestrator's rayon pool.

use std::collections::BTreeMap;

use agentry::ParallelPool;
use serde::{Deserialize, Serialize};

use crate::html::{self, Element};

/// Pages at least this large (bytes of HTML) are read in parallel.
pub const PARALLEL_FROM: usize = 4096;

/// The ways a candidate is found: each is a skill in the library.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Strategy {
    MailtoLink,
    TelLink,
    TextEmail,
    DeobfuscatedEmail,
    LabelledPhone,
    InternationalPhone,
    TableCell,
    PersonCard,
    TeamTable,
    AddressElement,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::MailtoLink => "mailto-link",
            Strategy::TelLink => "tel-link",
            Strategy::TextEmail => "text-email",
            Strategy::DeobfuscatedEmail => "deobfuscated-email",
            Strategy::LabelledPhone => "labelled-phone",
            Strategy::InternationalPhone => "international-phone",
            Strategy::TableCell => "table-cell-phone",
            Strategy::PersonCard => "person-card",
            Strategy::TeamTable => "team-table",
            Strategy::AddressElement => "address-element",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Strategy::MailtoLink => "e-mail address from a mailto: link",
            Strategy::TelLink => "phone number from a tel: link",
            Strategy::TextEmail => "e-mail address written in prose",
            Strategy::DeobfuscatedEmail => "e-mail address written name [at] domain [dot] org",
            Strategy::LabelledPhone => "phone number after a label such as Phone: or Tel.",
            Strategy::InternationalPhone => "phone number written with a leading +",
            Strategy::TableCell => "phone number in the phone column of a team table",
            Strategy::PersonCard => "person card with a name, a role and contact details",
            Strategy::TeamTable => "team table with a Name column",
            Strategy::AddressElement => "postal address in an address element",
        }
    }
}

/// What a candidate is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    Email,
    Phone,
}

/// A raw e-mail address or phone number, as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub kind: Kind,
    pub raw: String,
    pub strategy: Strategy,
}

/// A person found on a page, with what was written near them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonCandidate {
    pub name: Option<String>,
    pub role: Option<String>,
    pub items: Vec<Candidate>,
}

/// Everything read from one page.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageExtraction {
    /// The region of the page's language (`GB` for `lang="en-GB"`): where
    /// numbers written without a country code are.
    pub region: Option<String>,
    pub people: Vec<PersonCandidate>,
    /// Candidates that belong to no person.
    pub loose: Vec<Candidate>,
    pub addresses: Vec<String>,
    /// How many candidates each strategy found.
    pub strategies: BTreeMap<Strategy, u32>,
    /// Units the page was cut into, and whether they were read in parallel.
    pub units: usize,
    pub parallel: bool,
}

/// A part of a page read on its own.
enum Unit<'a> {
    Person(&'a Element),
    Row {
        columns: &'a [Column],
        row: &'a Element,
    },
    Address(&'a Element),
    Line(String),
    Link(String),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Column {
    Name,
    Role,
    Email,
    Phone,
    Other,
}

/// What one unit yields.
#[derive(Default)]
struct Found {
    people: Vec<PersonCandidate>,
    loose: Vec<Candidate>,
    addresses: Vec<String>,
}

/// Reads `page`; large pages are read on `pool` when there is one.
///
/// # Errors
/// Only those of the pool ([`agentry::Error::Panicked`] if reading panicked).
pub fn extract(page: &str, pool: Option<&ParallelPool>) -> agentry::Result<PageExtraction> {
    let root = html::parse(page);
    let region = root
        .find(&|e| e.name == "html")
        .and_then(|e| e.attr("lang"))
        .and_then(|lang| lang.split(['-', '_']).nth(1))
        .map(str::to_ascii_uppercase);
    let tables: Vec<(&Element, Vec<Column>)> = team_tables(&root);
    let mut units = Vec::new();
    cut(&root, &tables, &mut units);
    let special = |e: &Element| is_person(e) || is_address(e) || is_team_table(e, &tables);
    units.extend(root.lines(&special).into_iter().map(Unit::Line));
    let pool = pool.filter(|_| page.len() >= PARALLEL_FROM);
    let parallel = pool.is_some();
    let found: Vec<Found> = match pool {
        Some(pool) => pool.map(&units, read_unit)?,
        None => units.iter().map(read_unit).collect(),
    };
    let mut extraction = PageExtraction {
        region,
        units: units.len(),
        parallel,
        ..PageExtraction::default()
    };
    for unit in found {
        extraction.people.extend(unit.people);
        extraction.loose.extend(unit.loose);
        extraction.addresses.extend(unit.addresses);
    }
    let mut count = |s: Strategy| *extraction.strategies.entry(s).or_default() += 1;
    for person in &extraction.people {
        for item in &person.items {
            count(item.strategy);
        }
    }
    for item in &extraction.loose {
        count(item.strategy);
    }
    let (people, rows, addresses) = units.iter().fold((0, 0, 0), |(p, r, a), u| match u {
        Unit::Person(_) => (p + 1, r, a),
        Unit::Row { .. } => (p, r + 1, a),
        Unit::Address(_) => (p, r, a + 1),
        _ => (p, r, a),
    });
    for (strategy, n) in [
        (Strategy::PersonCard, people),
        (Strategy::TeamTable, rows),
        (Strategy::AddressElement, addresses),
    ] {
        if n > 0 {
            extraction.strategies.insert(strategy, n);
        }
    }
    Ok(extraction)
}

fn is_person(e: &Element) -> bool {
    ["person", "member", "vcard"].iter().any(|c| e.has_class(c))
        || e.attr("itemtype").is_some_and(|t| t.ends_with("/Person"))
}

fn is_address(e: &Element) -> bool {
    e.name == "address" || e.has_class("adr") || e.attr("itemprop") == Some("address")
}

fn is_team_table(e: &Element, tables: &[(&Element, Vec<Column>)]) -> bool {
    tables.iter().any(|(t, _)| std::ptr::eq(*t, e))
}

/// The page's team tables with the meaning of each column.
fn team_tables(root: &Element) -> Vec<(&Element, Vec<Column>)> {
    let mut found = Vec::new();
    let mut stack = vec![root];
    while let Some(e) = stack.pop() {
        if html::NOT_PROSE.contains(&e.name.as_str()) {
            continue;
        }
        if e.name == "table" {
            let header = rows(e)
                .into_iter()
                .next()
                .filter(|r| r.elements().any(|c| c.name == "th"));
            if let Some(header) = header {
                let columns: Vec<Column> = header.elements().map(|c| column(&c.text())).collect();
                if columns.contains(&Column::Name) {
                    found.push((e, columns));
                    continue;
                }
            }
        }
        stack.extend(e.elements());
    }
    found
}

fn column(header: &str) -> Column {
    let h = header.to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| h.contains(w));
    if has(&["name"]) {
        Column::Name
    } else if has(&["mail"]) {
        Column::Email
    } else if has(&["phone", "tel", "line", "mobile"]) {
        Column::Phone
    } else if has(&["role", "position", "title", "job", "department"]) {
        Column::Role
    } else {
        Column::Other
    }
}

/// The rows of a table, in `<thead>`, `<tbody>` or directly under it.
fn rows(table: &Element) -> Vec<&Element> {
    let mut rows = Vec::new();
    for child in table.elements() {
        match child.name.as_str() {
            "tr" => rows.push(child),
            "thead" | "tbody" | "tfoot" => rows.extend(child.elements().filter(|r| r.name == "tr")),
            _ => {}
        }
    }
    rows
}

/// Cuts the subtree into units: person cards, team-table rows, addresses
/// and the links of the prose around them (the prose's lines are added by
/// the caller).
fn cut<'a>(e: &'a Element, tables: &'a [(&'a Element, Vec<Column>)], units: &mut Vec<Unit<'a>>) {
    if html::NOT_PROSE.contains(&e.name.as_str()) {
        return;
    }
    if is_person(e) {
        units.push(Unit::Person(e));
        return;
    }
    if is_address(e) {
        units.push(Unit::Address(e));
        return;
    }
    if let Some((_, columns)) = tables.iter().find(|(t, _)| std::ptr::eq(*t, e)) {
        for row in rows(e).into_iter().skip(1) {
            units.push(Unit::Row { columns, row });
        }
        return;
    }
    if e.name == "a"
        && let Some(href) = e.attr("href")
    {
        units.push(Unit::Link(href.to_owned()));
    }
    for child in e.elements() {
        cut(child, tables, units);
    }
}

fn read_unit(unit: &Unit<'_>) -> Found {
    let mut found = Found::default();
    match unit {
        Unit::Line(line) => found.loose = in_text(line),
        Unit::Link(href) => found.loose.extend(in_link(href)),
        Unit::Address(e) => {
            let address = e.lines(&|_| false).join(", ");
            let address = address.trim_matches([',', ' ']).replace(",,", ",");
            if !address.is_empty() {
                found.addresses.push(address);
            }
        }
        Unit::Person(e) => {
            let by = |props: &[&str], classes: &[&str]| {
                e.find(&|x| {
                    x.attr("itemprop").is_some_and(|p| props.contains(&p))
                        || classes.iter().any(|c| x.has_class(c))
                })
                .map(Element::text)
                .filter(|t| !t.is_empty())
            };
            let name = by(&["name"], &["fn", "name"]).or_else(|| {
                e.find(&|x| {
                    matches!(
                        x.name.as_str(),
                        "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "strong"
                    )
                })
                .map(Element::text)
            });
            let role = by(&["jobTitle"], &["role", "title", "job-title", "position"]);
            let mut items: Vec<Candidate> = e
                .lines(&|_| false)
                .iter()
                .flat_map(|l| in_text(l))
                .collect();
            items.extend(links(e).iter().filter_map(|href| in_link(href)));
            person(&mut found, name, role, items);
        }
        Unit::Row { columns, row } => {
            let mut name = None;
            let mut role = None;
            let mut items = Vec::new();
            for (cell, column) in row.elements().zip(columns.iter()) {
                let text = cell.text();
                match column {
                    Column::Name => name = Some(text),
                    Column::Role => role = Some(text),
                    Column::Email => {
                        items.extend(in_text(&text).into_iter().filter(|c| c.kind == Kind::Email));
                        items.extend(links(cell).iter().filter_map(|h| in_link(h)));
                    }
                    Column::Phone => {
                        let linked: Vec<Candidate> =
                            links(cell).iter().filter_map(|h| in_link(h)).collect();
                        if linked.is_empty() && text.chars().any(|c| c.is_ascii_digit()) {
                            items.push(Candidate {
                                kind: Kind::Phone,
                                raw: text,
                                strategy: Strategy::TableCell,
                            });
                        }
                        items.extend(linked);
                    }
                    Column::Other => items.extend(in_text(&text)),
                }
            }
            person(&mut found, name, role, items);
        }
    }
    found
}

/// A person with a name; without one, what was found near them belongs to
/// nobody.
fn person(found: &mut Found, name: Option<String>, role: Option<String>, items: Vec<Candidate>) {
    let clean = |s: Option<String>| s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    match clean(name) {
        Some(name) => found.people.push(PersonCandidate {
            name: Some(name),
            role: clean(role),
            items,
        }),
        None => found.loose.extend(items),
    }
}

fn links(e: &Element) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![e];
    while let Some(x) = stack.pop() {
        if x.name == "a"
            && let Some(href) = x.attr("href")
        {
            out.push(href.to_owned());
        }
        stack.extend(x.elements());
    }
    out
}

/// A `mailto:` or `tel:` link's address or number.
fn in_link(href: &str) -> Option<Candidate> {
    let href = href.trim();
    let (kind, strategy, rest) = if let Some(rest) = strip_prefix_ci(href, "mailto:") {
        (Kind::Email, Strategy::MailtoLink, rest)
    } else if let Some(rest) = strip_prefix_ci(href, "tel:") {
        (Kind::Phone, Strategy::TelLink, rest)
    } else {
        return None;
    };
    let raw = rest
        .split('?')
        .next()
        .unwrap_or("")
        .replace("%40", "@")
        .replace("%20", " ");
    (!raw.is_empty()).then_some(Candidate {
        kind,
        raw,
        strategy,
    })
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    s.get(..prefix.len())
        .filter(|p| p.eq_ignore_ascii_case(prefix))
        .map(|_| &s[prefix.len()..])
}

/// Every candidate in one line of prose.
pub fn in_text(line: &str) -> Vec<Candidate> {
    let mut found = emails_in(line, Strategy::TextEmail);
    let plain = line.replace('\u{a0}', " ");
    let deobfuscated = deobfuscate(&plain);
    if deobfuscated != plain {
        for c in emails_in(&deobfuscated, Strategy::DeobfuscatedEmail) {
            if !found.iter().any(|f| f.raw == c.raw) {
                found.push(c);
            }
        }
    }
    found.extend(phones_in(line));
    found
}

fn is_email_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._%+-@".contains(c)
}

/// Words holding an `@` with something on both sides.
fn emails_in(line: &str, strategy: Strategy) -> Vec<Candidate> {
    line.split(|c: char| !is_email_char(c))
        .map(|w| w.trim_matches(|c: char| ".-".contains(c)))
        .filter(|w| w.find('@').is_some_and(|at| at > 0 && at + 1 < w.len()))
        .map(|w| Candidate {
            kind: Kind::Email,
            raw: w.to_owned(),
            strategy,
        })
        .collect()
}

/// `name [at] domain [dot] org` (also with `()` or `{}`) written as an
/// address.
fn deobfuscate(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < chars.len() {
        let close = match chars[i] {
            '[' => Some(']'),
            '(' => Some(')'),
            '{' => Some('}'),
            _ => None,
        };
        if let Some(close) = close {
            let mut j = i + 1;
            while chars.get(j) == Some(&' ') {
                j += 1;
            }
            let word: String = chars[j..]
                .iter()
                .take_while(|c| c.is_alphabetic())
                .collect::<String>()
                .to_lowercase();
            let mut k = j + word.chars().count();
            while chars.get(k) == Some(&' ') {
                k += 1;
            }
            let symbol = match word.as_str() {
                "at" => Some('@'),
                "dot" => Some('.'),
                _ => None,
            };
            if let Some(symbol) = symbol
                && chars.get(k) == Some(&close)
            {
                while out.ends_with(' ') {
                    out.pop();
                }
                out.push(symbol);
                i = k + 1;
                while chars.get(i) == Some(&' ') {
                    i += 1;
                }
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// Words that announce a phone number (lower case).
const PHONE_LABELS: &[&str] = &[
    "phone",
    "telephone",
    "tel",
    "call",
    "mobile",
    "téléphone",
    "tél",
    "telefon",
];

fn is_phone_char(c: char) -> bool {
    c.is_ascii_digit() || " -.()/+\u{a0}".contains(c)
}

/// Phone numbers after a label, or written with a leading `+`.
fn phones_in(line: &str) -> Vec<Candidate> {
    let chars: Vec<char> = line.chars().collect();
    let lower: Vec<char> = line.chars().flat_map(char::to_lowercase).collect();
    if lower.len() != chars.len() {
        // A character whose lower case is longer would shift positions: read
        // the line as written.
        return phones_at(&chars, &chars);
    }
    phones_at(&chars, &lower)
}

fn phones_at(chars: &[char], lower: &[char]) -> Vec<Candidate> {
    let mut starts: Vec<(usize, Strategy)> = Vec::new();
    for label in PHONE_LABELS {
        let label: Vec<char> = label.chars().collect();
        for at in 0..lower.len().saturating_sub(label.len() - 1) {
            let end = at + label.len();
            let bounded = (at == 0 || !lower[at - 1].is_alphanumeric())
                && lower.get(end).is_none_or(|c| !c.is_alphabetic());
            if !bounded || lower[at..end] != label[..] {
                continue;
            }
            // The number follows within a few characters ("Phone (toll
            // free): 1-800...", "Tél. : 01 ...").
            let start = (end..lower.len().min(end + 24)).find(|&i| {
                chars[i].is_ascii_digit()
                    || chars[i] == '+'
                    || (chars[i] == '(' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
            });
            if let Some(start) = start
                && !starts.iter().any(|&(s, _)| s == start)
            {
                starts.push((start, Strategy::LabelledPhone));
            }
        }
    }
    for at in 0..chars.len() {
        let international = chars[at] == '+'
            && chars.get(at + 1).is_some_and(char::is_ascii_digit)
            && (at == 0 || !chars[at - 1].is_alphanumeric());
        if international && !starts.iter().any(|&(s, _)| s == at) {
            starts.push((at, Strategy::InternationalPhone));
        }
    }
    starts.sort();
    starts
        .into_iter()
        .filter_map(|(start, strategy)| {
            let mut digits = 0;
            let run: String = chars[start..]
                .iter()
                .take_while(|&&c| {
                    digits += usize::from(c.is_ascii_digit());
                    // "(0)20" and "+1 (705)" belong to the number; "(9-5)"
                    // after a whole number does not.
                    is_phone_char(c) && !(c == '(' && digits >= 6)
                })
                .collect();
            let raw = run
                .trim_end_matches(|c: char| !c.is_ascii_digit())
                .trim()
                .replace('\u{a0}', " ");
            raw.chars()
                .any(|c| c.is_ascii_digit())
                .then_some(Candidate {
                    kind: Kind::Phone,
                    raw,
                    strategy,
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(found: &[Candidate]) -> Vec<(&str, Strategy)> {
        found.iter().map(|c| (c.raw.as_str(), c.strategy)).collect()
    }

    #[test]
    fn prose_yields_emails_obfuscated_or_not_and_labelled_or_international_phones() {
        let found = in_text(
            "Mail ann@a.test, bo [at] a [dot] test or CY (AT) a (DOT) test. Tel.: (020) 7946 0000 (9-5), from abroad +44 20 7946 0001",
        );
        assert_eq!(
            raw(&found),
            [
                ("ann@a.test", Strategy::TextEmail),
                ("bo@a.test", Strategy::DeobfuscatedEmail),
                ("CY@a.test", Strategy::DeobfuscatedEmail),
                ("(020) 7946 0000", Strategy::LabelledPhone),
                ("+44 20 7946 0001", Strategy::InternationalPhone),
            ]
        );
    }

    #[test]
    fn look_alikes_are_not_candidates() {
        let found = in_text(
            "Follow @acme; 2026-03-14; C++ 20; 5+ years; cellphone 12; callback 3; (at) noon",
        );
        assert_eq!(raw(&found), []);
    }

    #[test]
    fn cards_tables_and_addresses_are_read_as_units() {
        let page = r#"<html lang="en-US"><body>
            <div class="person"><h3>Ann Lee</h3><p class="role">Chair</p><a href="mailto:ann@a.test">mail</a></div>
            <table><tr><th>Name</th><th>Phone</th></tr><tr><td>Bo Ng</td><td>555 0100 222</td></tr></table>
            <address>1 High St<br>Town</address>
            <p>Call <a href="tel:+15550100">us</a></p>
            <pre>x@y.test</pre></body></html>"#;
        let e = extract(page, None).unwrap();
        assert_eq!(e.region.as_deref(), Some("US"));
        assert_eq!(e.people.len(), 2);
        assert_eq!(e.people[0].name.as_deref(), Some("Ann Lee"));
        assert_eq!(e.people[0].role.as_deref(), Some("Chair"));
        assert_eq!(
            raw(&e.people[1].items),
            [("555 0100 222", Strategy::TableCell)]
        );
        assert_eq!(e.addresses, ["1 High St, Town"]);
        assert_eq!(raw(&e.loose), [("+15550100", Strategy::TelLink)]);
    }
}
