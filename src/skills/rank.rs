//! Lookup ranking: relevance to a query times a smoothed success rate.

use std::collections::BTreeSet;

use super::skill::Skill;

/// The lower-case alphanumeric words of `text`.
pub(super) fn words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// How well `skill` matches the query's words, in (0, 1]: a query word
/// among the tags counts 2, one in the name or description 1 (a word in
/// both counts 3), plus 1 so that a skill of the right kind matching no word
/// still ranks by its record; 1 for an empty query.
pub(super) fn relevance(skill: &Skill, query: &BTreeSet<String>) -> f64 {
    if query.is_empty() {
        return 1.0;
    }
    let tags: BTreeSet<String> = skill.tags.iter().flat_map(|t| words(t)).collect();
    let text = words(&format!("{} {}", skill.name, skill.description));
    let tag_hits = query.iter().filter(|w| tags.contains(*w)).count();
    let word_hits = query.iter().filter(|w| text.contains(*w)).count();
    (1 + 2 * tag_hits + word_hits) as f64 / (1 + 3 * query.len()) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_weigh_twice_description_words() {
        let query = words("E-mail scraping");
        assert_eq!(
            query,
            BTreeSet::from(["e".into(), "mail".into(), "scraping".into()])
        );
        let tagged = Skill::new("a", "k").with_tag("scraping");
        let described = Skill::new("b", "k").with_description("scraping pages");
        assert!(relevance(&tagged, &query) > relevance(&described, &query));
        assert_eq!(relevance(&Skill::new("c", "k"), &words("")), 1.0);
    }
}
