//! VM names: `{class-slug}-student-{index}-{vmid}`, a DNS label (lowercase letters, digits and
//! hyphens, at most 63 characters). When too long, the slug is shortened — never the index or
//! the VMID, which are what make the name unique and findable.

/// Longest DNS label, and so longest VM name.
pub const MAX_NAME: usize = 63;

/// "Biology Lab 101" → `biology-lab-101`: ASCII letters and digits kept (lowercased), every
/// other run of characters one hyphen, no hyphen at either end. May be empty.
pub fn slugify(name: &str) -> String {
    let mut slug = String::with_capacity(name.len());
    let mut pending_hyphen = false;
    for ch in name.chars() {
        if ch.is_ascii_alphanumeric() {
            if pending_hyphen && !slug.is_empty() {
                slug.push('-');
            }
            pending_hyphen = false;
            slug.push(ch.to_ascii_lowercase());
        } else {
            pending_hyphen = true;
        }
    }
    slug.truncate(MAX_NAME);
    slug.trim_end_matches('-').to_string()
}

/// The name of a class's VM.
pub fn vm_name(slug: &str, index: u32, vmid: u32) -> String {
    let tail = format!("student-{index}-{vmid}");
    let room = MAX_NAME.saturating_sub(tail.len() + 1);
    let mut short: String = slug.chars().take(room).collect();
    while short.ends_with('-') {
        short.pop();
    }
    if short.is_empty() {
        tail
    } else {
        format!("{short}-{tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_keeps_letters_and_digits_and_joins_the_rest_with_single_hyphens() {
        assert_eq!(slugify("Biology Lab 101"), "biology-lab-101");
        assert_eq!(slugify("  C++ / Rust: Intro!! "), "c-rust-intro");
        assert_eq!(slugify("Ünïcode Ökonomie"), "n-code-konomie");
        assert_eq!(slugify("!!!"), "");
    }

    #[test]
    fn names_follow_the_seed_pattern() {
        assert_eq!(
            vm_name("biology-lab-101", 3, 10042),
            "biology-lab-101-student-3-10042"
        );
    }

    #[test]
    fn long_slugs_are_shortened_never_the_index_or_vmid() {
        let slug = slugify(&"Advanced Topics in Distributed Systems Engineering ".repeat(3));
        let name = vm_name(&slug, 1999, 999_999_999);
        assert!(name.len() <= MAX_NAME, "{name} is {} long", name.len());
        assert!(name.ends_with("-student-1999-999999999"), "{name}");
        assert!(!name.contains("--"), "{name}");
        assert!(name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
    }

    #[test]
    fn an_empty_slug_leaves_a_valid_name() {
        assert_eq!(vm_name("", 1, 100), "student-1-100");
    }
}
