//! Parts of Kubernetes object names made from arbitrary text (a pod
//! identity, a tool name): lowercase ASCII letters and digits, everything
//! else `-`, trimmed of leading and trailing `-`, at most `max` characters.

/// `text` as a part of an object name (RFC 1123 label characters); may be
/// empty when `text` has no letter or digit.
pub fn dns_part(text: &str, max: usize) -> String {
    let clean: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(max)
        .collect();
    clean.trim_matches('-').to_owned()
}

#[cfg(test)]
mod tests {
    use super::dns_part;

    #[test]
    fn anything_becomes_name_characters() {
        assert_eq!(dns_part("vm_clone", 40), "vm-clone");
        assert_eq!(dns_part("Über/Tool", 40), "ber-tool");
        assert_eq!(dns_part("___", 40), "");
        assert_eq!(dns_part("abcdef", 3), "abc");
    }
}
