//! A full commit id, parsed once where it enters (a flag, a manifest field, a commit object) instead
//! of checked for "40 hex digits" wherever it is used.

use std::fmt;

/// A full SHA-1 commit id: 40 hex digits, held lowercase (as git prints it). Abbreviations and
/// revisions (`HEAD~5`, `v1.2`) are not commit ids; resolve them first.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommitId(String);

/// A text that is not a full commit id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a full commit id (40 hex digits), found {0:?}")]
pub struct InvalidCommitId(pub String);

impl CommitId {
    /// Parses 40 hex digits (either case).
    pub fn parse(text: &str) -> Result<CommitId, InvalidCommitId> {
        if text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(CommitId(text.to_ascii_lowercase()))
        } else {
            // Bounded: the text comes from a flag or a file and ends up in a message.
            Err(InvalidCommitId(text.chars().take(80).collect()))
        }
    }

    /// The id as lowercase hex.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for CommitId {
    type Err = InvalidCommitId;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        CommitId::parse(text)
    }
}

impl std::ops::Deref for CommitId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for CommitId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommitId({})", self.0)
    }
}

impl PartialEq<str> for CommitId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for CommitId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for CommitId {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl serde::Serialize for CommitId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl From<CommitId> for String {
    fn from(id: CommitId) -> String {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_full_hex_ids_parse_and_are_held_lowercase() {
        let upper = "3F1C".repeat(10);
        let id = CommitId::parse(&upper).expect("40 hex digits");
        assert_eq!(id, upper.to_ascii_lowercase());
        for bad in [
            "",
            "3f1c",
            &"g".repeat(40),
            &"a".repeat(41),
            "HEAD~5",
            &format!("{} ", "a".repeat(39)),
        ] {
            assert_eq!(
                CommitId::parse(bad),
                Err(InvalidCommitId(bad.to_owned())),
                "{bad:?}"
            );
        }
        assert_eq!(InvalidCommitId("x".repeat(200)).0.len(), 200);
        assert_eq!(
            CommitId::parse(&"x".repeat(200)).expect_err("long").0.len(),
            80
        );
    }
}
