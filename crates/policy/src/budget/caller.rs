//! Who a budget table's entries are charged to, so that a full table is
//! shared fairly: one caller filling its share cannot lock others out.
//!
//! A caller is the verified subject of the caller's token when identity is
//! on, else the MCP session the upstream issued, else nobody in particular:
//! every call with neither is the one anonymous caller. A caller is kept as
//! a digest, so however long a subject or session id is, a table holds 16
//! bytes of it.

use super::digest::digest;

/// A caller, as a digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallerKey([u8; 16]);

impl CallerKey {
    /// Every call with neither a subject nor a session.
    pub const ANONYMOUS: CallerKey = CallerKey([0; 16]);

    /// The subject if there is one, else the session, else
    /// [`ANONYMOUS`](Self::ANONYMOUS).
    pub fn new(subject: Option<&str>, session: Option<&str>) -> CallerKey {
        let (kind, name): (&[u8], &str) = match (subject, session) {
            (Some(subject), _) => (b"subject", subject),
            (None, Some(session)) => (b"session", session),
            (None, None) => return CallerKey::ANONYMOUS,
        };
        CallerKey(digest([kind, name.as_bytes()]))
    }
}

/// How full a budget table is, and how often a new entry found no room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Entries held now.
    pub entries: usize,
    /// New entries refused because their caller held its whole share.
    pub refused_caller: u64,
    /// New entries refused because the table itself was full.
    pub refused_total: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subject_decides_then_the_session() {
        let a = CallerKey::new(Some("alice"), Some("s1"));
        assert_eq!(a, CallerKey::new(Some("alice"), Some("s2")));
        assert_ne!(a, CallerKey::new(None, Some("s1")));
        // A session named like a subject is another caller.
        assert_ne!(a, CallerKey::new(None, Some("alice")));
        assert_eq!(CallerKey::new(None, None), CallerKey::ANONYMOUS);
        assert_ne!(CallerKey::new(None, Some("")), CallerKey::ANONYMOUS);
    }
}
