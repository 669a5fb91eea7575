//! The one YAML loader for everything read from a repository (`release.yaml` and intent files).
//!
//! Built on `serde-saphyr` (maintained, with budgets for events, nodes, depth, anchors and alias
//! replay; `serde_yaml` is archived). What each rule rests on:
//!
//! | rule | enforced by |
//! |---|---|
//! | file size | this module, before parsing (and the parser's input-byte budget) |
//! | UTF-8 | this module, before parsing |
//! | one document | the parser's single-document entry point (a trailing `---` counts as a second) |
//! | duplicate keys | the parser ([`serde_saphyr::DuplicateKeyPolicy::Error`]) |
//! | depth | the parser's depth budget, which also counts alias replay |
//! | alias bombs | the parser's alias, anchor and replay budgets, checked *while* parsing |
//! | nodes | the parser's node and event budgets |
//! | string keys only | this module's value builder (the parser would stringify `1:` or `true:`) |
//! | application tags (`!foo`) | the parser ([`serde_saphyr::Options::reject_unsupported_tags`]) |
//!
//! Scalars resolve as YAML 1.2: only `true`/`false` are booleans (`yes`, `no`, `on` stay strings),
//! numbers with a leading zero (`0755`) stay strings, `!!binary` values stay the base64 text the
//! reviewer saw (as in Kubernetes' own YAML-to-JSON conversion), NaN and infinities are refused.

use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_saphyr::budget::BudgetBreach;

use crate::limits::Limits;

/// A place in a file (1-based), when the parser knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line, from 1.
    pub line: u64,
    /// Column, from 1.
    pub column: u64,
}

impl Position {
    fn of(error: &serde_saphyr::Error) -> Option<Position> {
        error.location().filter(|l| l.line() > 0).map(|l| Position {
            line: l.line(),
            column: l.column(),
        })
    }
}

/// ` at line L, column C`, or nothing when the position is unknown.
struct At<'a>(&'a Option<Position>);

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(p) => write!(f, " at line {}, column {}", p.line, p.column),
            None => Ok(()),
        }
    }
}

/// Why a YAML file was refused. Every message starts with the file, then `: `.
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
    /// No document at all (empty, only comments, or only `---`).
    #[error("{file}: is empty")]
    Empty {
        /// The file.
        file: String,
    },
    /// More than one YAML document (a `---` after the first document, even before nothing).
    #[error("{file}: holds more than one YAML document{}; put one object per file", At(.at))]
    MultipleDocuments {
        /// The file.
        file: String,
        /// Where the second document starts.
        at: Option<Position>,
    },
    /// A key appears twice in one mapping.
    #[error("{file}: duplicate key {key:?}{}; a key may appear once in a mapping", At(.at))]
    DuplicateKey {
        /// The file.
        file: String,
        /// The key (empty when the parser could not render it).
        key: String,
        /// The second occurrence.
        at: Option<Position>,
    },
    /// A mapping key that is not a string (`1:`, `true:`, `~:`, `[a]:`).
    #[error(
        "{file}: mapping key is not a string{}; Kubernetes objects have string keys (quote it: \"80\": ...)",
        At(.at)
    )]
    NonStringKey {
        /// The file.
        file: String,
        /// The key.
        at: Option<Position>,
    },
    /// Nested deeper than [`Limits::max_yaml_depth`] (alias expansion included).
    #[error("{file}: nested deeper than {limit} levels{}", At(.at))]
    TooDeep {
        /// The file.
        file: String,
        /// The limit.
        limit: usize,
        /// Where the limit was crossed.
        at: Option<Position>,
    },
    /// Too many aliases or anchors, or alias expansion over budget: an alias bomb.
    #[error(
        "{file}: YAML aliases over budget ({detail}){}; anchors and aliases are bounded to stop alias bombs",
        At(.at)
    )]
    AliasBudget {
        /// Which budget.
        detail: String,
        /// The file.
        file: String,
        /// Where the budget ran out.
        at: Option<Position>,
    },
    /// Too many YAML nodes, events or scalar bytes.
    #[error("{file}: YAML document over budget ({detail}){}", At(.at))]
    TooManyNodes {
        /// Which budget.
        detail: String,
        /// The file.
        file: String,
        /// Where the budget ran out.
        at: Option<Position>,
    },
    /// A merge key (`<<`): YAML 1.1 only, resolved first-wins by some readers and last-wins by
    /// others (PyYAML, kubectl), so refused altogether.
    #[error(
        "{file}: merge key `<<`{}; merge keys are not YAML 1.2 and readers disagree on them (write the keys out)",
        At(.at)
    )]
    MergeKey {
        /// The file.
        file: String,
        /// Where.
        at: Option<Position>,
    },
    /// A plain scalar that YAML 1.2's core schema reads as a string but YAML 1.1 readers (kubectl,
    /// PyYAML) and this parser would read as a number (`0b101`, `-0x10`, `0X1F`).
    #[error(
        "{file}: plain scalar {scalar:?}{} is a string in YAML 1.2 but a number to YAML 1.1 readers; quote it, or write the number in decimal",
        At(.at)
    )]
    AmbiguousScalar {
        /// The file.
        file: String,
        /// The scalar as written.
        scalar: String,
        /// Where.
        at: Option<Position>,
    },
    /// A plain integer (YAML 1.2 core schema) beyond 64 bits: JSON and Kubernetes cannot hold it,
    /// and the parser would silently turn it into a float or a string.
    #[error(
        "{file}: integer {scalar}{} does not fit in 64 bits; quote it if it is meant as text",
        At(.at)
    )]
    IntegerOutOfRange {
        /// The file.
        file: String,
        /// The scalar as written.
        scalar: String,
        /// Where.
        at: Option<Position>,
    },
    /// Any other parse error (syntax, unknown anchor, unsupported tag, NaN, ...), as the parser
    /// words it.
    #[error("{file}: {message}{}", At(.at))]
    Syntax {
        /// The file.
        file: String,
        /// The parser's message (first line, position removed).
        message: String,
        /// Where.
        at: Option<Position>,
    },
}

impl YamlError {
    /// The file the error is about.
    pub fn file(&self) -> &str {
        match self {
            YamlError::TooLarge { file, .. }
            | YamlError::NotUtf8 { file, .. }
            | YamlError::Empty { file }
            | YamlError::MultipleDocuments { file, .. }
            | YamlError::DuplicateKey { file, .. }
            | YamlError::NonStringKey { file, .. }
            | YamlError::TooDeep { file, .. }
            | YamlError::AliasBudget { file, .. }
            | YamlError::TooManyNodes { file, .. }
            | YamlError::MergeKey { file, .. }
            | YamlError::AmbiguousScalar { file, .. }
            | YamlError::IntegerOutOfRange { file, .. }
            | YamlError::Syntax { file, .. } => file,
        }
    }
}

/// The message a [`StrictValue`] gives a non-string key; recognised when mapping parser errors.
const NON_STRING_KEY: &str = "vworkspace: mapping key is not a string";

fn options(limits: &Limits) -> serde_saphyr::Options {
    let file_bytes = usize::try_from(limits.max_file_bytes).unwrap_or(usize::MAX);
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = limits.max_yaml_depth;
    budget.max_nodes = limits.max_yaml_nodes;
    budget.max_aliases = limits.max_yaml_aliases;
    budget.max_anchors = limits.max_yaml_aliases.max(1);
    budget.max_merge_keys = limits.max_yaml_aliases;
    budget.max_events = limits.max_yaml_nodes.saturating_mul(4);
    budget.max_recorded_anchor_events = limits.max_yaml_nodes;
    budget.max_recorded_anchor_bytes = file_bytes;
    budget.max_reader_input_bytes = Some(file_bytes);
    budget.max_total_scalar_bytes = file_bytes.saturating_mul(4);
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    // YAML 1.2 booleans only: `y`, `no`, `on` stay strings (the "Norway problem").
    options.strict_booleans = true;
    // `0755` stays the string the reviewer read rather than becoming 755 or 493.
    options.leading_zero_numbers_as_strings = true;
    // `!!binary aGk=` stays "aGk=", as Kubernetes' YAML-to-JSON conversion keeps it.
    options.ignore_binary_tag_for_string = true;
    // `1_000`, `0b10_01`: strings in YAML 1.2's core schema (numbers only to YAML 1.1 readers).
    options.underscored_numbers_as_strings = true;
    // Merge keys are YAML 1.1; readers resolve a repeated `<<` first-wins or last-wins: refuse them.
    options.merge_keys = serde_saphyr::MergeKeyPolicy::Error;
    // `!include`, `!secret` and other application tags mean nothing to Kubernetes: refuse them.
    options.reject_unsupported_tags = true;
    // Errors are rendered by this module, one line each; no source snippets.
    options.with_snippet = false;
    // Alias replay is what an alias bomb multiplies: bound it by the node budget.
    let mut alias_limits = serde_saphyr::options::AliasLimits::default();
    alias_limits.max_total_replayed_events = limits.max_yaml_nodes;
    alias_limits.max_replay_stack_depth = limits.max_yaml_depth;
    alias_limits.max_alias_expansions_per_anchor = limits.max_yaml_aliases.max(1);
    options.alias_limits = alias_limits;
    options
}

/// Builds a JSON value, refusing what JSON (and Kubernetes) cannot hold: non-string keys, bytes,
/// integers beyond 64 bits. Recursion is bounded by the parser's depth budget.
struct StrictValue;

/// One parsed document.
struct Document(Value);

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        StrictValue.deserialize(deserializer).map(Document)
    }
}

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value that JSON can hold")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        StrictValue.deserialize(deserializer)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictValue)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key_seed(StringKey)? {
            let value = map.next_value_seed(StrictValue)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// A mapping key: a string, nothing else.
struct StringKey;

impl<'de> DeserializeSeed<'de> for StringKey {
    type Value = String;
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StringKey {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<String, E> {
        Err(E::custom(NON_STRING_KEY))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<String, E> {
        Err(E::custom(NON_STRING_KEY))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<String, E> {
        Err(E::custom(NON_STRING_KEY))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<String, E> {
        Err(E::custom(NON_STRING_KEY))
    }
    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Err(E::custom(NON_STRING_KEY))
    }
    fn visit_none<E: de::Error>(self) -> Result<String, E> {
        Err(E::custom(NON_STRING_KEY))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(de::Error::custom(NON_STRING_KEY))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(de::Error::custom(NON_STRING_KEY))
    }
}

/// The parser's own wording: first line, trailing ` at line L, column C` removed (it is added back
/// from the structured position).
fn parser_message(error: &serde_saphyr::Error) -> String {
    let text = error.to_string();
    let line = text.lines().next().unwrap_or("invalid YAML");
    match line.rfind(" at line ") {
        Some(i) => line[..i].to_owned(),
        None => line.to_owned(),
    }
}

/// Maps a parser error onto the refusal it stands for.
fn classify(error: &serde_saphyr::Error, file: &str, limits: &Limits) -> YamlError {
    use serde_saphyr::Error as E;
    let file = file.to_owned();
    match error {
        // Wrappers: judge what they wrap (an alias error carries the use site).
        E::AliasError { error: inner, .. } | E::WithSnippet { error: inner, .. } => {
            let mut refusal = classify(inner, &file, limits);
            if let YamlError::Syntax { at, .. } | YamlError::TooDeep { at, .. } = &mut refusal
                && at.is_none()
            {
                *at = Position::of(error);
            }
            refusal
        }
        E::MultipleDocuments { .. }
        | E::Budget {
            breach: BudgetBreach::Documents { .. },
            ..
        } => YamlError::MultipleDocuments {
            file,
            at: Position::of(error),
        },
        E::MergeKeyNotAllowed { .. } => YamlError::MergeKey {
            file,
            at: Position::of(error),
        },
        E::DuplicateMappingKey { key, .. } => YamlError::DuplicateKey {
            file,
            key: key.clone().unwrap_or_default(),
            at: Position::of(error),
        },
        E::Message { msg, .. } if msg == NON_STRING_KEY => YamlError::NonStringKey {
            file,
            at: Position::of(error),
        },
        E::Budget {
            breach: BudgetBreach::Depth { .. },
            ..
        }
        | E::AliasReplayStackDepthExceeded { .. } => YamlError::TooDeep {
            file,
            limit: limits.max_yaml_depth,
            at: Position::of(error),
        },
        E::Budget {
            breach:
                breach @ (BudgetBreach::Aliases { .. }
                | BudgetBreach::Anchors { .. }
                | BudgetBreach::AliasAnchorRatio { .. }
                | BudgetBreach::MergeKeys { .. }
                | BudgetBreach::RecordedAnchorEvents { .. }
                | BudgetBreach::RecordedAnchorBytes { .. }),
            ..
        } => YamlError::AliasBudget {
            detail: format!("{breach:?}"),
            file,
            at: Position::of(error),
        },
        E::AliasReplayLimitExceeded { .. }
        | E::AliasExpansionLimitExceeded { .. }
        | E::AliasReplayCounterOverflow { .. } => YamlError::AliasBudget {
            detail: parser_message(error),
            file,
            at: Position::of(error),
        },
        E::Budget { breach, .. } => YamlError::TooManyNodes {
            detail: format!("{breach:?}"),
            file,
            at: Position::of(error),
        },
        _ => YamlError::Syntax {
            file,
            message: parser_message(error),
            at: Position::of(error),
        },
    }
}

/// Whether `text` (a plain scalar) is a number in YAML 1.2's core schema: decimal integers, `0o`
/// octal, `0x` hexadecimal (no sign on either), and decimal floats.
fn is_core_number(text: &str) -> bool {
    let digits = |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
    if let Some(rest) = text.strip_prefix("0o") {
        return digits(rest, 8);
    }
    if let Some(rest) = text.strip_prefix("0x") {
        return digits(rest, 16);
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            (int.is_empty() && digits(frac, 10))
                || (digits(int, 10) && (frac.is_empty() || digits(frac, 10)))
        }
        None => digits(mantissa, 10),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['-', '+']).unwrap_or(e), 10));
    mantissa_ok && exponent_ok
}

/// Whether this parser's type inference reads `text` (a plain scalar) as an integer in a radix
/// notation: an optional sign, `0x`/`0X`, `0o`/`0O` or `0b`/`0B`, then digits of that radix.
fn is_radix_integer(text: &str) -> bool {
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let Some(rest) = unsigned.strip_prefix('0') else {
        return false;
    };
    let (radix, digits) = match rest.split_at_checked(1) {
        Some(("x" | "X", d)) => (16, d),
        Some(("o" | "O", d)) => (8, d),
        Some(("b" | "B", d)) => (2, d),
        _ => return false,
    };
    !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix))
}

/// Whether `text` is a YAML 1.2 core-schema integer (`[-+]?[0-9]+`, `0o[0-7]+`, `0x[0-9a-fA-F]+`;
/// a decimal with a redundant leading zero is excluded: it stays a string here) that does not fit
/// in 64 bits (`i64` or `u64`).
fn is_core_integer_beyond_64_bits(text: &str) -> bool {
    let (radix, digits, negative) = if let Some(d) = text.strip_prefix("0o") {
        (8, d, false)
    } else if let Some(d) = text.strip_prefix("0x") {
        (16, d, false)
    } else {
        let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
        if unsigned.len() > 1 && unsigned.starts_with('0') {
            return false;
        }
        (10, unsigned, text.starts_with('-'))
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return false;
    }
    match u128::from_str_radix(digits, radix) {
        Ok(magnitude) if negative => magnitude > u128::from(i64::MIN.unsigned_abs()),
        Ok(magnitude) => magnitude > u128::from(u64::MAX),
        Err(_) => true,
    }
}

/// The first untagged plain scalar the parser's inference would read differently from YAML 1.2's
/// core schema: a spelling the core schema reads as a string but YAML 1.1 readers and the parser as
/// a number (`0b101`, `-0x10`, `+0o7`, `0X1F`; `false` in the result), or a core integer beyond
/// 64 bits (`true`). Only run when such a spelling can occur at all (a radix prefix, or a run of 19
/// digits); a file the event parser cannot read is left to the main parse, which accepted it.
fn ambiguous_scalar(text: &str) -> Option<(String, Option<Position>, bool)> {
    use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle};
    let radix_prefix = ["0x", "0X", "0o", "0O", "0b", "0B"]
        .iter()
        .any(|p| text.contains(p));
    let long_digits = text
        .as_bytes()
        .split(|b| !b.is_ascii_digit())
        .any(|run| run.len() >= 19);
    if !radix_prefix && !long_digits {
        return None;
    }
    for event in Parser::new_from_str(text) {
        let Ok((event, span)) = event else {
            return None;
        };
        if let Event::Scalar(value, ScalarStyle::Plain, _, None) = event {
            let out_of_range = is_core_integer_beyond_64_bits(&value);
            if out_of_range || (is_radix_integer(&value) && !is_core_number(&value)) {
                let at = Position {
                    line: span.start.line() as u64,
                    column: span.start.col() as u64 + 1,
                };
                return Some((value.into_owned(), Some(at), out_of_range));
            }
        }
    }
    None
}

/// Parses one YAML document into a JSON value, refusing everything the repository rules refuse
/// (see the module documentation). `file` is used in errors only.
pub fn parse_document(bytes: &[u8], file: &str, limits: &Limits) -> Result<Value, YamlError> {
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
    let document: Option<Document> = serde_saphyr::from_str_with_options(text, options(limits))
        .map_err(|e| classify(&e, file, limits))?;
    if let Some((scalar, at, out_of_range)) = ambiguous_scalar(text) {
        let file = file.to_owned();
        return Err(if out_of_range {
            YamlError::IntegerOutOfRange { file, scalar, at }
        } else {
            YamlError::AmbiguousScalar { file, scalar, at }
        });
    }
    match document {
        Some(Document(value)) => Ok(value),
        None => Err(YamlError::Empty {
            file: file.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Value, YamlError> {
        parse_document(text.as_bytes(), "f.yaml", &Limits::default())
    }

    fn pos(line: u64, column: u64) -> Option<Position> {
        Some(Position { line, column })
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
        assert_eq!(
            parse("a: 1\n...\n").expect("end marker"),
            serde_json::json!({"a": 1})
        );
        assert!(matches!(
            parse("a: 1\n---\nb: 2\n"),
            Err(YamlError::MultipleDocuments { at: Some(_), .. })
        ));
        // A second marker before nothing is still a second document.
        assert!(matches!(
            parse("a: 1\n---\n"),
            Err(YamlError::MultipleDocuments { .. })
        ));
        for empty in ["", "# only a comment\n", "---\n"] {
            assert!(
                matches!(parse(empty), Err(YamlError::Empty { .. })),
                "{empty:?}"
            );
        }
    }

    #[test]
    fn duplicate_keys_refused_with_position() {
        let err = parse("a: 1\na: 2\n").expect_err("dup");
        assert_eq!(
            err,
            YamlError::DuplicateKey {
                file: "f.yaml".into(),
                key: "a".into(),
                at: pos(2, 1)
            }
        );
        assert_eq!(
            err.to_string(),
            "f.yaml: duplicate key \"a\" at line 2, column 1; a key may appear once in a mapping"
        );
        let err = parse("x:\n  a: 1\n  b: 2\n  a: 3\n").expect_err("nested dup");
        assert!(
            matches!(&err, YamlError::DuplicateKey { key, .. } if key == "a"),
            "{err}"
        );
    }

    #[test]
    fn non_string_keys_refused() {
        for text in [
            "1: a\n",
            "-1: a\n",
            "1.5: a\n",
            "true: a\n",
            "~: a\n",
            "? [a, b]\n: c\n",
            "x:\n  80: http\n",
        ] {
            assert!(
                matches!(
                    parse(text),
                    Err(YamlError::NonStringKey { at: Some(_), .. })
                ),
                "{text:?}: {:?}",
                parse(text)
            );
        }
        assert_eq!(
            parse("\"1\": a\n!!str 2: b\n").expect("quoted keys"),
            serde_json::json!({"1": "a", "2": "b"})
        );
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
        assert!(matches!(err, YamlError::AliasBudget { .. }), "{err}");
        assert!(err.to_string().starts_with("f.yaml: "), "{err}");
        // Few anchors, many aliases: the alias count budget.
        let many = format!("a: &a x\nb: [{}]\n", vec!["*a"; 101].join(", "));
        assert!(matches!(parse(&many), Err(YamlError::AliasBudget { .. })));
        // Ordinary reuse is fine.
        assert_eq!(
            parse("a: &x {k: v}\nb: *x\n").expect("alias"),
            serde_json::json!({"a": {"k": "v"}, "b": {"k": "v"}})
        );
    }

    #[test]
    fn depth_counts_alias_expansion() {
        let limits = Limits {
            max_yaml_depth: 10,
            ..Limits::default()
        };
        let nest = |n: usize, inner: &str| format!("{}{inner}{}", "[".repeat(n), "]".repeat(n));
        assert!(parse_document(nest(9, "x").as_bytes(), "f", &limits).is_ok());
        assert!(matches!(
            parse_document(nest(11, "x").as_bytes(), "f", &limits),
            Err(YamlError::TooDeep { limit: 10, .. })
        ));
        let via_alias = format!("a: &a {}\nb: {}\n", nest(8, "x"), nest(8, "*a"));
        assert!(matches!(
            parse_document(via_alias.as_bytes(), "f", &limits),
            Err(YamlError::TooDeep { limit: 10, .. })
        ));
        assert!(matches!(
            parse(&nest(100, "x")),
            Err(YamlError::TooDeep { limit: 64, .. })
        ));
    }

    #[test]
    fn node_budget() {
        let limits = Limits {
            max_yaml_nodes: 50,
            ..Limits::default()
        };
        let text = format!("a: [{}]\n", vec!["1"; 100].join(", "));
        assert!(matches!(
            parse_document(text.as_bytes(), "f", &limits),
            Err(YamlError::TooManyNodes { .. })
        ));
    }

    #[test]
    fn size_and_utf8() {
        let limits = Limits {
            max_file_bytes: 10,
            ..Limits::default()
        };
        assert_eq!(
            parse_document(b"a: 12345678901", "f", &limits),
            Err(YamlError::TooLarge {
                file: "f".into(),
                size: 14,
                limit: 10
            })
        );
        assert_eq!(
            parse_document(b"a: \xff", "f", &Limits::default()),
            Err(YamlError::NotUtf8 {
                file: "f".into(),
                offset: 3
            })
        );
    }

    #[test]
    fn scalars_resolve_as_reviewers_read_them() {
        assert_eq!(
            parse("c: no\nd: on\ne: 0755\nf: !!binary aGk=\ng: 1.5\nh: null\n").expect("scalars"),
            serde_json::json!({"c": "no", "d": "on", "e": "0755", "f": "aGk=", "g": 1.5, "h": null})
        );
        assert!(matches!(
            parse("a: !include other.yaml\n"),
            Err(YamlError::Syntax { .. })
        ));
        assert!(matches!(parse("a: .nan\n"), Err(YamlError::Syntax { .. })));
        let err = parse("a: [1\n").expect_err("syntax");
        assert!(
            matches!(&err, YamlError::Syntax { at: Some(_), .. }),
            "{err:?}"
        );
        assert!(!err.to_string().contains('\n'), "{err}");
    }
}
