//! DNS labels from Mesos names, formed exactly as Mesos-DNS forms them, so that every name a
//! user resolves today resolves the same under dcnet.
//!
//! - [`LabelSpec::label`]: one label. Lower-case; `-`, `.` and `_` become `-`; every other
//!   character outside `[a-z0-9]` is dropped; leading characters that may not start a label are
//!   trimmed; the result is cut to the maximum length, and trailing `-` at the cut are replaced by
//!   the characters that follow (Mesos-DNS's `trimCut`).
//! - [`domain_fragment`]: a framework name, split on `.`, each part a label, empty parts dropped.
//! - [`task_hash`]: the 5-character z-base-32 SHA-1 of a task id, in canonical task names.
//! - [`agent_id_tail`]: the last `-`-separated field of an agent id, lower-cased.

use sha1::{Digest, Sha1};

/// Which host-name rules labels follow (`EnforceRFC952` in Mesos-DNS's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LabelSpec {
    /// RFC 1123: up to 63 characters, may start with a digit. The default.
    #[default]
    Rfc1123,
    /// RFC 952: up to 24 characters, must start with a letter.
    Rfc952,
}

impl LabelSpec {
    /// The label `name` becomes; empty if nothing of it is usable.
    pub fn label(self, name: &str) -> String {
        let (max_len, left_cut): (usize, &[u8]) = match self {
            LabelSpec::Rfc1123 => (63, b"-"),
            LabelSpec::Rfc952 => (24, b"-0123456789"),
        };
        let mapped: Vec<u8> = name
            .chars()
            .filter_map(|c| match c {
                'A'..='Z' => Some(c.to_ascii_lowercase() as u8),
                'a'..='z' | '0'..='9' => Some(c as u8),
                '-' | '.' | '_' => Some(b'-'),
                _ => None,
            })
            .collect();
        let start = mapped
            .iter()
            .position(|b| !left_cut.contains(b))
            .unwrap_or(mapped.len());
        let trimmed = &mapped[start..];
        let size = trimmed.len().min(max_len);
        let head_len = trimmed[..size]
            .iter()
            .rposition(|&b| b != b'-')
            .map_or(0, |i| i + 1);
        let mut label = trimmed[..head_len].to_vec();
        if head_len < size {
            // Dashes at the cut were dropped: refill from what follows the cut, minus its own
            // leading dashes, up to the maximum length.
            let rest = &trimmed[size..];
            let rest = &rest[rest.iter().position(|&b| b != b'-').unwrap_or(rest.len())..];
            label.extend_from_slice(&rest[..rest.len().min(size - head_len)]);
        }
        // Only ASCII bytes were kept.
        String::from_utf8(label).expect("ASCII")
    }
}

/// A framework name as a domain fragment: each `.`-separated part a label, empty ones dropped.
pub fn domain_fragment(name: &str, spec: LabelSpec) -> String {
    name.split('.')
        .map(|part| spec.label(part))
        .filter(|label| !label.is_empty())
        .collect::<Vec<_>>()
        .join(".")
}

/// The 5-character hash in canonical task names: z-base-32 of SHA-1(task id).
pub fn task_hash(task_id: &str) -> String {
    let digest = Sha1::digest(task_id.as_bytes());
    let mut encoded = zbase32().encode(&digest);
    encoded.truncate(5);
    encoded
}

/// The last `-`-separated field of an agent (slave) id, lower-cased.
pub fn agent_id_tail(agent_id: &str) -> String {
    agent_id
        .rsplit('-')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// z-base-32 (Zimmermann's human-oriented base 32): the bit order of RFC 4648 base32, its own
/// alphabet, no padding.
fn zbase32() -> data_encoding::Encoding {
    let mut spec = data_encoding::Specification::new();
    spec.symbols.push_str("ybndrfg8ejkmcpqxot1uwisza345h769");
    spec.encoding().expect("a valid base32 alphabet")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1123_labels() {
        // (input, expected)
        let cases = [
            ("toy-store", "toy-store"),
            ("Toy_Store.v2", "toy-store-v2"),
            (
                "chronos with a space AND MIXED CASE-2",
                "chronoswithaspaceandmixedcase-2",
            ),
            ("--leading", "leading"),
            ("9lives", "9lives"),
            ("trailing---", "trailing"),
            ("ünïcödé", "ncd"),
            ("!!!", ""),
            ("", ""),
            (&"a".repeat(70), &"a".repeat(63)),
        ];
        for (input, expected) in cases {
            assert_eq!(LabelSpec::Rfc1123.label(input), expected, "{input:?}");
        }
    }

    #[test]
    fn rfc952_labels_start_with_a_letter_and_stop_at_24() {
        let cases = [
            ("9lives", "lives"),
            ("-1-2-abc", "abc"),
            ("abcdefghijklmnopqrstuvwxyz", "abcdefghijklmnopqrstuvwx"),
            ("123", ""),
        ];
        for (input, expected) in cases {
            assert_eq!(LabelSpec::Rfc952.label(input), expected, "{input:?}");
        }
    }

    #[test]
    fn dashes_at_the_cut_are_refilled_from_what_follows() {
        // 22 letters, 3 dashes, then more: the cut at 24 falls inside the dashes.
        let name = format!("{}---xyz", "a".repeat(22));
        assert_eq!(
            LabelSpec::Rfc952.label(&name),
            format!("{}xy", "a".repeat(22))
        );
        let name = format!("{}-", "b".repeat(63));
        assert_eq!(LabelSpec::Rfc1123.label(&name), "b".repeat(63));
    }

    #[test]
    fn framework_names_become_domain_fragments() {
        let cases = [
            ("marathon", "marathon"),
            (
                "chronos with a space AND MIXED CASE-2.0.1",
                "chronoswithaspaceandmixedcase-2.0.1",
            ),
            ("a..b.", "a.b"),
            ("Cluster.Prod_1", "cluster.prod-1"),
            ("...", ""),
        ];
        for (input, expected) in cases {
            assert_eq!(
                domain_fragment(input, LabelSpec::Rfc1123),
                expected,
                "{input:?}"
            );
        }
        assert_eq!(domain_fragment("2048.game", LabelSpec::Rfc952), "game");
    }

    #[test]
    fn task_hash_matches_mesos_dns() {
        assert_eq!(task_hash("test"), "iffe9");
        assert_eq!(task_hash("test").len(), 5);
    }

    #[test]
    fn agent_id_tail_is_the_last_field() {
        assert_eq!(
            agent_id_tail("20140803-194712-3041283216-5050-2116-S3"),
            "s3"
        );
        assert_eq!(agent_id_tail("plain"), "plain");
        assert_eq!(agent_id_tail(""), "");
    }
}
