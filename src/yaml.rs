//! The one YAML loader for everything read from a repository (`release.yaml` and intent files).
//!
//! Built on `serde-saphyr` (maintained, with budgets for events, nodes, depth, anchors and alias
//! replay; `serde_yaml` is archived). One document per file, duplicate keys refused, string keys only,
//! and every bound from [`Limits`] applied *while* parsing, so an alias bomb stops at the budget rather
//! than after it has filled memory.

use crate::limits::Limits;

/// Why a YAML file was refused. Every message names the file.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum YamlError {
    /// Over [`Limits::max_file_bytes`].
    #[error("{file}: {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// The file.
        file: String,
        /// Its size.
        size: usize,
        /// The limit.
        limit: u64,
    },
    /// Not UTF-8.
    #[error("{file}: not valid UTF-8 (at byte {offset})")]
    NotUtf8 {
        /// The file.
        file: String,
        /// The first invalid byte.
        offset: usize,
    },
    /// More than one YAML document.
    #[error("{file}: holds more than one YAML document; put one object per file")]
    MultipleDocuments {
        /// The file.
        file: String,
    },
    /// No document at all.
    #[error("{file}: is empty")]
    Empty {
        /// The file.
        file: String,
    },
    /// A parse error or a budget breach (depth, nodes, aliases), as the parser reports it, with
    /// line and column.
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: String,
        /// The parser's message.
        message: String,
    },
    /// Nested deeper than [`Limits::max_yaml_depth`] (checked on the parsed value too).
    #[error("{file}: nested deeper than {limit} levels")]
    TooDeep {
        /// The file.
        file: String,
        /// The limit.
        limit: usize,
    },
}

fn options(limits: &Limits) -> serde_saphyr::Options {
    let file_bytes = usize::try_from(limits.max_file_bytes).unwrap_or(usize::MAX);
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = limits.max_yaml_depth;
    budget.max_nodes = limits.max_yaml_nodes;
    budget.max_aliases = limits.max_yaml_aliases;
    budget.max_anchors = limits.max_yaml_aliases.max(1);
    budget.max_events = limits.max_yaml_nodes.saturating_mul(4);
    // Two, so that a second document is reported as such rather than as a budget breach.
    budget.max_documents = 2;
    budget.max_reader_input_bytes = Some(file_bytes);
    budget.max_total_scalar_bytes = file_bytes.saturating_mul(4);
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    // YAML 1.2 booleans only: `y`, `no`, `on` stay strings (the "Norway problem").
    options.strict_booleans = true;
    // Alias replay is what an alias bomb multiplies: bound it by the node budget.
    let mut alias_limits = serde_saphyr::options::AliasLimits::default();
    alias_limits.max_total_replayed_events = limits.max_yaml_nodes;
    alias_limits.max_replay_stack_depth = limits.max_yaml_depth;
    alias_limits.max_alias_expansions_per_anchor = limits.max_yaml_aliases.max(1);
    options.alias_limits = alias_limits;
    options
}

fn depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Parses one YAML document into a JSON value, refusing everything the repository rules refuse.
pub fn parse_document(
    bytes: &[u8],
    file: &str,
    limits: &Limits,
) -> Result<serde_json::Value, YamlError> {
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(YamlError::TooLarge {
            file: file.to_owned(),
            size: bytes.len(),
            limit: limits.max_file_bytes,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| YamlError::NotUtf8 {
        file: file.to_owned(),
        offset: e.valid_up_to(),
    })?;
    let parse_error = |e: serde_saphyr::Error| YamlError::Parse {
        file: file.to_owned(),
        message: e
            .to_string()
            .lines()
            .next()
            .unwrap_or("invalid YAML")
            .to_owned(),
    };
    let documents: Vec<serde_json::Value> =
        serde_saphyr::from_str_multiple_with_options(text, options(limits)).map_err(parse_error)?;
    let mut documents = documents.into_iter();
    let value = match (documents.next(), documents.next()) {
        (Some(value), None) => value,
        (None, _) => {
            return Err(YamlError::Empty {
                file: file.to_owned(),
            });
        }
        (Some(_), Some(_)) => {
            return Err(YamlError::MultipleDocuments {
                file: file.to_owned(),
            });
        }
    };
    if depth(&value) > limits.max_yaml_depth {
        return Err(YamlError::TooDeep {
            file: file.to_owned(),
            limit: limits.max_yaml_depth,
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<serde_json::Value, YamlError> {
        parse_document(text.as_bytes(), "f.yaml", &Limits::default())
    }

    #[test]
    fn one_document() {
        assert_eq!(
            parse("a: 1\nb: [x, y]\n").expect("ok"),
            serde_json::json!({"a": 1, "b": ["x", "y"]})
        );
        assert_eq!(
            parse("---\na: 1\n").expect("leading marker"),
            serde_json::json!({"a": 1})
        );
        assert!(matches!(
            parse("a: 1\n---\nb: 2\n"),
            Err(YamlError::MultipleDocuments { .. })
        ));
        assert!(matches!(parse(""), Err(YamlError::Empty { .. })));
    }

    #[test]
    fn duplicate_keys_refused() {
        let err = parse("a: 1\na: 2\n").expect_err("dup");
        assert!(matches!(err, YamlError::Parse { .. }), "{err}");
        assert!(err.to_string().starts_with("f.yaml:"), "{err}");
        let err = parse("x:\n  a: 1\n  b: 2\n  a: 3\n").expect_err("nested dup");
        assert!(matches!(err, YamlError::Parse { .. }), "{err}");
    }

    #[test]
    fn alias_bomb_stops_at_the_budget() {
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        let mut prev = 'a';
        for name in ['b', 'c', 'd', 'e', 'f', 'g', 'h', 'i'] {
            bomb.push_str(&format!("{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
            prev = name;
        }
        let err = parse(&bomb).expect_err("bomb");
        assert!(matches!(err, YamlError::Parse { .. }), "{err}");
    }

    #[test]
    fn depth_size_utf8_and_keys() {
        let deep = format!("{}x{}", "[".repeat(100), "]".repeat(100));
        assert!(matches!(
            parse(&deep),
            Err(YamlError::Parse { .. } | YamlError::TooDeep { .. })
        ));
        let limits = Limits {
            max_file_bytes: 10,
            ..Limits::default()
        };
        assert!(matches!(
            parse_document(b"a: 12345678901", "f", &limits),
            Err(YamlError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_document(b"a: \xff", "f", &Limits::default()),
            Err(YamlError::NotUtf8 { offset: 3, .. })
        ));
        // Scalar keys become strings, as Kubernetes' YAML-to-JSON conversion does.
        assert_eq!(
            parse("1: a\n").expect("int key"),
            serde_json::json!({"1": "a"})
        );
        assert_eq!(
            parse("c: no\n").expect("norway"),
            serde_json::json!({"c": "no"})
        );
        assert!(parse("? [a, b]\n: c\n").is_err(), "complex keys refused");
    }
}
