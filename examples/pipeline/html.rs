//! A small HTML reader: enough of HTML's syntax to walk the pages the
//! pipeline meets (elements, attributes, text, entities, comments, raw
//! `<script>`/`<style>`), forgiving like a browser: it never fails and never
//! panics, whatever the input. A stray end tag is ignored, an unclosed
//! element ends with its parent, `<p>`, `<li>`, `<tr>`, `<td>` close their
//! open sibling.

/// One node of the tree.
#[derive(Debug)]
pub enum Node {
    Element(Element),
    Text(String),
}

/// An element: its lower-case name, its attributes (values decoded) and
/// its children.
#[derive(Debug, Default)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
}

/// Elements without content.
const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
    "wbr",
];

/// Elements whose content is raw text, never markup; we drop it.
const RAW: &[&str] = &["script", "style", "textarea", "title"];

/// Elements whose text starts a new line.
const BLOCK: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "body",
    "br",
    "dd",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "li",
    "main",
    "nav",
    "ol",
    "p",
    "section",
    "table",
    "tbody",
    "td",
    "tfoot",
    "th",
    "thead",
    "tr",
    "ul",
];

/// Elements whose text is not prose: code samples, templates, form
/// controls. Their text is never read for contacts.
pub const NOT_PROSE: &[&str] = &[
    "code", "pre", "template", "noscript", "select", "button", "head", "kbd", "samp",
];

impl Element {
    /// The value of attribute `name`, if present.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the `class` attribute holds the word `class`.
    pub fn has_class(&self, class: &str) -> bool {
        self.attr("class")
            .is_some_and(|c| c.split_whitespace().any(|w| w.eq_ignore_ascii_case(class)))
    }

    /// The child elements.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The first element of the subtree (this one included) for which
    /// `pred` holds, depth first.
    pub fn find(&self, pred: &dyn Fn(&Element) -> bool) -> Option<&Element> {
        if pred(self) {
            return Some(self);
        }
        self.elements().find_map(|e| e.find(pred))
    }

    /// The text of the subtree on one line, whitespace collapsed.
    pub fn text(&self) -> String {
        self.lines(&|_| false).join(" ")
    }

    /// The text of the subtree split into lines at block elements and
    /// `<br>`, whitespace collapsed, empty lines left out. Subtrees that are
    /// not prose, and those for which `stop` holds (the root excepted), are
    /// left out and end the line.
    pub fn lines(&self, stop: &dyn Fn(&Element) -> bool) -> Vec<String> {
        let mut lines = vec![String::new()];
        self.collect_lines(stop, &mut lines, true);
        lines
            .into_iter()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|l| !l.is_empty())
            .collect()
    }

    fn collect_lines(&self, stop: &dyn Fn(&Element) -> bool, lines: &mut Vec<String>, root: bool) {
        let block = BLOCK.contains(&self.name.as_str());
        if !root && (stop(self) || NOT_PROSE.contains(&self.name.as_str())) {
            lines.push(String::new());
            return;
        }
        if block {
            lines.push(String::new());
        }
        for child in &self.children {
            match child {
                Node::Text(t) => {
                    let line = lines.last_mut().expect("lines start non-empty");
                    line.push_str(t);
                }
                Node::Element(e) => e.collect_lines(stop, lines, false),
            }
        }
        if block {
            lines.push(String::new());
        }
    }
}

/// Parses `html` into a tree under a root element named `#document`.
pub fn parse(html: &str) -> Element {
    let mut stack = vec![Element {
        name: "#document".into(),
        ..Element::default()
    }];
    let mut rest = html;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |end| &after[end + 3..]);
        } else if rest.starts_with("<!") || rest.starts_with("<?") {
            rest = rest.find('>').map_or("", |end| &rest[end + 1..]);
        } else if let Some(after) = rest.strip_prefix("</") {
            let end = after.find('>').unwrap_or(after.len());
            let name = after[..end].trim().to_ascii_lowercase();
            close(&mut stack, &name);
            rest = after.get(end + 1..).unwrap_or("");
        } else if rest.starts_with('<') && rest[1..].starts_with(|c: char| c.is_ascii_alphabetic())
        {
            let (element, self_closing, after) = start_tag(&rest[1..]);
            rest = after;
            let name = element.name.clone();
            if RAW.contains(&name.as_str()) {
                rest = skip_raw(rest, &name);
                attach(&mut stack, element);
            } else if VOID.contains(&name.as_str()) || self_closing {
                attach(&mut stack, element);
            } else {
                close_implied(&mut stack, &name);
                stack.push(element);
            }
        } else {
            // Text up to the next tag; a `<` that starts no tag is text.
            let first = rest.chars().next().map_or(1, char::len_utf8);
            let end = rest[first..].find('<').map_or(rest.len(), |i| i + first);
            let text = decode_entities(&rest[..end]);
            let top = stack.last_mut().expect("the root is never popped");
            match top.children.last_mut() {
                Some(Node::Text(t)) => t.push_str(&text),
                _ => top.children.push(Node::Text(text)),
            }
            rest = &rest[end..];
        }
    }
    while stack.len() > 1 {
        let element = stack.pop().expect("checked above");
        attach(&mut stack, element);
    }
    stack.pop().expect("the root")
}

fn attach(stack: &mut [Element], element: Element) {
    let top = stack.last_mut().expect("the root is never popped");
    top.children.push(Node::Element(element));
}

/// Closes the innermost open element named `name` and everything opened
/// inside it; an end tag nothing matches is ignored.
fn close(stack: &mut Vec<Element>, name: &str) {
    if let Some(at) = stack.iter().rposition(|e| e.name == name)
        && at > 0
    {
        while stack.len() > at {
            let element = stack.pop().expect("len > at >= 1");
            attach(stack, element);
        }
    }
}

/// A new `<p>`, `<li>`, `<tr>`, `<td>` or `<th>` closes an open one that
/// HTML lets authors leave unclosed.
fn close_implied(stack: &mut Vec<Element>, name: &str) {
    let closes: &[&str] = match name {
        "p" => &["p"],
        "li" => &["li"],
        "td" | "th" => &["td", "th"],
        "tr" => &["td", "th", "tr"],
        _ => return,
    };
    while stack.len() > 1 && closes.contains(&stack.last().expect("len > 1").name.as_str()) {
        let element = stack.pop().expect("len > 1");
        attach(stack, element);
    }
}

/// Reads a start tag after its `<`: the element, whether it ended with
/// `/>`, and the input after the tag.
fn start_tag(input: &str) -> (Element, bool, &str) {
    let name_end = input
        .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
        .unwrap_or(input.len());
    let mut element = Element {
        name: input[..name_end].to_ascii_lowercase(),
        ..Element::default()
    };
    let mut rest = &input[name_end..];
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("/>") {
            return (element, true, after);
        }
        if let Some(after) = rest.strip_prefix('>') {
            return (element, false, after);
        }
        if rest.is_empty() {
            return (element, false, rest);
        }
        if let Some(after) = rest.strip_prefix('/') {
            rest = after;
            continue;
        }
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '=' || c == '>' || c == '/')
            .unwrap_or(rest.len())
            .max(1);
        let name = rest[..end].to_ascii_lowercase();
        rest = rest[end..].trim_start();
        let mut value = String::new();
        if let Some(after) = rest.strip_prefix('=') {
            let after = after.trim_start();
            let (raw, next) = match after.chars().next() {
                Some(q @ ('"' | '\'')) => {
                    let body = &after[1..];
                    let close = body.find(q).unwrap_or(body.len());
                    (&body[..close], body.get(close + 1..).unwrap_or(""))
                }
                _ => {
                    let close = after
                        .find(|c: char| c.is_whitespace() || c == '>')
                        .unwrap_or(after.len());
                    (&after[..close], &after[close..])
                }
            };
            value = decode_entities(raw);
            rest = next;
        }
        element.attrs.push((name, value));
    }
}

/// Skips the raw content of `<name>` up to and past its end tag.
fn skip_raw<'a>(input: &'a str, name: &str) -> &'a str {
    let closing = format!("</{name}");
    let lower = input.to_ascii_lowercase();
    match lower.find(&closing) {
        Some(at) => input[at..]
            .find('>')
            .map_or("", |end| &input[at + end + 1..]),
        None => "",
    }
}

/// Decodes character references: `&#64;`, `&#x40;` and the named ones
/// that the pages of Western European sites use; others stay as written.
pub fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        // A reference is short: look for its `;` in the next few characters.
        let decoded = rest[1..]
            .char_indices()
            .take(12)
            .find(|&(_, c)| c == ';')
            .and_then(|(end, _)| entity(&rest[1..=end]).map(|c| (c, end + 2)));
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn entity(name: &str) -> Option<char> {
    if let Some(number) = name.strip_prefix('#') {
        let code = match number.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => number.parse().ok()?,
        };
        return char::from_u32(code);
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" | "rsquo" => '\'',
        "lsquo" => '\u{2018}',
        "ldquo" => '\u{201c}',
        "rdquo" => '\u{201d}',
        "nbsp" => '\u{a0}',
        "commat" => '@',
        "period" => '.',
        "ndash" => '\u{2013}',
        "mdash" => '\u{2014}',
        "middot" => '\u{b7}',
        "hellip" => '\u{2026}',
        "copy" => '\u{a9}',
        "reg" => '\u{ae}',
        "pound" => '\u{a3}',
        "euro" => '\u{20ac}',
        "szlig" => 'ß',
        "auml" => 'ä',
        "ouml" => 'ö',
        "uuml" => 'ü',
        "Auml" => 'Ä',
        "Ouml" => 'Ö',
        "Uuml" => 'Ü',
        "eacute" => 'é',
        "Eacute" => 'É',
        "egrave" => 'è',
        "ecirc" => 'ê',
        "agrave" => 'à',
        "acirc" => 'â',
        "ccedil" => 'ç',
        "ocirc" => 'ô',
        "oelig" => 'œ',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lines_break_at_blocks_and_skip_what_is_not_prose() {
        let root = parse(
            "<html lang=en-GB><head><title>t@x.test</title><script>var a = '</p>';</script></head>\
             <body><p>one <b>two</b><br>three</p><!-- four --><pre>five</pre><li>six<li>seven</body>",
        );
        assert_eq!(root.lines(&|_| false), ["one two", "three", "six", "seven"]);
        let html = root.find(&|e| e.name == "html").unwrap();
        assert_eq!(html.attr("lang"), Some("en-GB"));
    }

    #[test]
    fn entities_are_decoded_in_text_and_attributes() {
        let root =
            parse("<a href='mailto:a&#64;b.test' class=\"x  y\">&eacute;&#x40;&amp;&bogus;&</a>");
        let a = root.find(&|e| e.name == "a").unwrap();
        assert_eq!(a.attr("href"), Some("mailto:a@b.test"));
        assert!(a.has_class("y"));
        assert_eq!(a.text(), "é@&&bogus;&");
    }

    proptest! {
        #[test]
        fn any_input_parses_without_panicking(input in ".{0,200}") {
            let _ = parse(&input).lines(&|_| false);
        }

        #[test]
        fn tag_soup_parses_without_panicking(parts in prop::collection::vec(
            prop::sample::select(vec!["<p>", "</p>", "<div class='a'>", "</div>", "<br/>", "<!--", "-->",
                "<script>", "</script>", "&#64;", "&", "é", "<", ">", "text", "<a href=x>", "</b>"]), 0..40)) {
            let _ = parse(&parts.concat()).lines(&|_| false);
        }
    }
}
