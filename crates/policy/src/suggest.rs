//! "Did you mean ...?": the nearest of some known words to a misspelt one,
//! for field names, enum values and tool names.

/// The candidate `word` most likely meant, if one is close: the same word
/// in another case first, then the nearest by edit distance (at most 2, and
/// at most a third of the word's length, so short words do not match
/// everything).
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let candidates: Vec<&str> = candidates.into_iter().collect();
    if let Some(same) = candidates
        .iter()
        .find(|c| c.eq_ignore_ascii_case(word) && **c != word)
    {
        return Some(same);
    }
    let limit = (word.chars().count() / 3).clamp(1, 2);
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| (distance(&word.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_names_are_suggested_and_far_ones_are_not() {
        let fields = ["arguments", "rateLimits", "tools", "action"];
        assert_eq!(nearest("argument", fields), Some("arguments"));
        assert_eq!(nearest("rateLimit", fields), Some("rateLimits"));
        assert_eq!(nearest("ratelimits", fields), Some("rateLimits"));
        assert_eq!(nearest("tool", fields), Some("tools"));
        assert_eq!(nearest("extra", fields), None);
        assert_eq!(nearest("deny", ["Allow", "Deny"]), Some("Deny"));
        assert_eq!(nearest("Permit", ["Allow", "Deny"]), None);
        assert_eq!(
            nearest("vm_clonee", ["vm_clone", "vm_create"]),
            Some("vm_clone")
        );
        assert_eq!(nearest("ab", ["xy"]), None);
    }
}
