//! Where each field of a YAML file is written: dotted path (`spec.chart.version`, `spec.values.a.0`)
//! to its line, so that a review annotates the line a finding names. Read with the same event parser
//! as the loader ([`crate::yaml`]); meant for files the loader accepted, and bounded anyway: at most
//! `max_yaml_nodes` events are read, aliases are not followed, and a file the parser cannot read
//! yields what was read before the error.

use std::collections::BTreeMap;

use serde_saphyr::granit_parser::{Event, Parser};

use crate::limits::Limits;

enum Frame {
    /// A mapping; `key` is set between a key and the end of its value.
    Mapping { key: bool },
    /// A sequence and the index of its next item.
    Sequence { next: usize },
}

/// Every field path of the first document of `text` and its line (1-based). The first occurrence
/// of a path wins.
pub fn field_lines(text: &str, limits: &Limits) -> BTreeMap<String, u64> {
    let mut lines = BTreeMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut path: Vec<String> = Vec::new();
    let budget = limits.max_yaml_nodes.saturating_mul(2).saturating_add(16);
    let record = |path: &[String], line: usize, lines: &mut BTreeMap<String, u64>| {
        lines.entry(path.join(".")).or_insert(line as u64);
    };
    for (count, event) in Parser::new_from_str(text).enumerate() {
        if count > budget {
            break;
        }
        let Ok((event, span)) = event else {
            break;
        };
        let line = span.start.line();
        let is_value = match &event {
            Event::Scalar(..) | Event::Alias(..) => true,
            Event::MappingStart(..) | Event::SequenceStart(..) => true,
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                // The collection was a value of its parent: close it below.
                close_value(&mut stack, &mut path);
                continue;
            }
            Event::DocumentEnd => break,
            _ => false,
        };
        if !is_value {
            continue;
        }
        // A scalar where a mapping expects a key is that key.
        if let (Some(Frame::Mapping { key }), Event::Scalar(text, ..)) = (stack.last_mut(), &event)
            && !*key
        {
            *key = true;
            path.push(text.to_string());
            record(&path, line, &mut lines);
            continue;
        }
        if let Some(Frame::Sequence { next }) = stack.last_mut() {
            path.push(next.to_string());
            *next += 1;
            record(&path, line, &mut lines);
        }
        match event {
            Event::MappingStart(..) => stack.push(Frame::Mapping { key: false }),
            Event::SequenceStart(..) => stack.push(Frame::Sequence { next: 0 }),
            _ => close_value(&mut stack, &mut path),
        }
    }
    lines
}

/// A value ended: its key (in a mapping) or its index (in a sequence) leaves the path.
fn close_value(stack: &mut [Frame], path: &mut Vec<String>) {
    match stack.last_mut() {
        Some(Frame::Mapping { key }) if *key => {
            *key = false;
            path.pop();
        }
        Some(Frame::Sequence { .. }) => {
            path.pop();
        }
        _ => {}
    }
}

/// The line of `field` in `text`, or of its closest written parent (a removed leaf is annotated at
/// the mapping that held it); `None` when not even the first segment is written.
pub fn line_of(lines: &BTreeMap<String, u64>, field: &str) -> Option<u64> {
    let mut at = field;
    loop {
        if let Some(line) = lines.get(at) {
            return Some(*line);
        }
        at = &at[..at.rfind('.')?];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_the_lines_of_their_keys() {
        let text = "apiVersion: v1\nkind: X\nmetadata:\n  name: a\nspec:\n  chart:\n    version: 1.0.0\n  list:\n    - x\n    - name: y\n      value: |\n        block\n  flow: {a: 1, b: [2, 3]}\n";
        let lines = field_lines(text, &Limits::default());
        assert_eq!(lines.get("apiVersion"), Some(&1));
        assert_eq!(lines.get("metadata.name"), Some(&4));
        assert_eq!(lines.get("spec.chart.version"), Some(&7));
        assert_eq!(lines.get("spec.list.0"), Some(&9));
        assert_eq!(lines.get("spec.list.1.name"), Some(&10));
        assert_eq!(lines.get("spec.list.1.value"), Some(&11));
        assert_eq!(lines.get("spec.flow.b.1"), Some(&13));
        assert_eq!(line_of(&lines, "spec.chart.missing.deeper"), Some(6));
        assert_eq!(line_of(&lines, "status"), None);
    }

    #[test]
    fn a_broken_file_yields_what_came_before() {
        let lines = field_lines("a: 1\nb: [\n", &Limits::default());
        assert_eq!(lines.get("a"), Some(&1));
    }
}
