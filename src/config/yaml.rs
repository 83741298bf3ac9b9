//! A small YAML tree that remembers where every node and key came from, so that the typed decoder
//! (and the cross-reference checks that run after it) can name a line and column for any problem.
//!
//! Parsing is saphyr's (it also rejects duplicate keys and alias bombs); this module only turns its
//! marked tree into plain owned values with 1-based positions and the source text of plain scalars.

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

/// Deeper structures than this are not configuration; refusing them keeps the recursive walks
/// below (and the decoder's) far from the stack limit whatever the input.
const MAX_DEPTH: usize = 64;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Loc {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub loc: Loc,
    pub value: Value,
}

#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Bool(bool),
    /// The integer and its text as written, so a string field can accept `branch: 2024`.
    Int(i64, String),
    Float(String),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
    /// Something the configuration never uses (a custom tag, a complex key, a malformed `!!int`):
    /// the reason is reported by the decoder with the key path it sits at.
    Invalid(String),
}

#[derive(Debug, Clone)]
pub struct Entry {
    /// `None` when the key is not a scalar (`? [a, b]: c`).
    pub key: Option<String>,
    pub key_loc: Loc,
    pub value: Node,
}

impl Value {
    /// What the user wrote, in words, for "expected X, found Y" messages.
    pub fn describe(&self) -> String {
        match self {
            Value::Null => "nothing (null)".into(),
            Value::Bool(b) => format!("the boolean {b}"),
            Value::Int(_, raw) => format!("the number {raw}"),
            Value::Float(raw) => format!("the number {raw}"),
            Value::Str(s) => format!("the string {s:?}"),
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
            Value::Invalid(why) => why.clone(),
        }
    }
}

/// A syntax error: the document could not be read as YAML at all.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub loc: Loc,
    pub message: String,
}

/// How far a line may indent or nest (`- - - x`) before it is refused. saphyr builds and drops its
/// tree recursively, so `"- ".repeat(5000)` would overflow the stack inside the parser; block
/// nesting is bounded by indentation and flow nesting by the scanner (255), so this bound keeps the
/// depth in the low hundreds. No real configuration comes near it.
const MAX_COLUMN: usize = 128;

/// Parses one YAML document. An empty file yields a `Null` root.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    if let Some(loc) = too_deep(text) {
        return Err(SyntaxError {
            loc,
            message: format!(
                "nested or indented more than {MAX_COLUMN} columns deep; a tollgate configuration never needs that"
            ),
        });
    }
    // saphyr's parser is not expected to panic, but the configuration may come from anyone and
    // `validate` must answer with a diagnostic, not a crash; contain it here.
    let loaded = std::panic::catch_unwind(|| MarkedYaml::load_from_str(text));
    let docs = match loaded {
        Ok(Ok(docs)) => docs,
        Ok(Err(e)) => {
            let m = e.marker();
            return Err(SyntaxError {
                loc: Loc {
                    line: m.line().max(1),
                    column: m.col() + 1,
                },
                message: format!("invalid YAML: {}", e.info()),
            });
        }
        Err(_) => {
            return Err(SyntaxError {
                loc: Loc { line: 1, column: 1 },
                message: "invalid YAML: the parser could not read this file".into(),
            })
        }
    };
    if let Some(second) = docs.get(1) {
        return Err(SyntaxError {
            loc: loc_of(second),
            message: "expected a single YAML document, found more than one (remove the `---` separator)".into(),
        });
    }
    let offsets = CharOffsets::new(text);
    match docs.first() {
        None => Ok(Node {
            loc: Loc { line: 1, column: 1 },
            value: Value::Null,
        }),
        // An empty document comes back as a bad value: it is simply empty.
        Some(doc) if matches!(doc.data, YamlData::BadValue) => Ok(Node {
            loc: Loc { line: 1, column: 1 },
            value: Value::Null,
        }),
        Some(doc) => Ok(convert(doc, text, &offsets, 0)),
    }
}

/// The first line whose indentation plus compact block indicators (`- `, `? `, `: `) reaches past
/// [`MAX_COLUMN`].
fn too_deep(text: &str) -> Option<Loc> {
    for (i, line) in text.lines().enumerate() {
        let bytes = line.as_bytes();
        let mut col = 0;
        loop {
            while col < bytes.len() && (bytes[col] == b' ' || bytes[col] == b'\t') {
                col += 1;
            }
            let indicator = matches!(bytes.get(col), Some(b'-' | b'?' | b':'))
                && matches!(bytes.get(col + 1), None | Some(b' ' | b'\t'));
            if col > MAX_COLUMN {
                return Some(Loc {
                    line: i + 1,
                    column: col + 1,
                });
            }
            if !indicator {
                break;
            }
            col += 1;
        }
    }
    None
}

fn loc_of(node: &MarkedYaml<'_>) -> Loc {
    Loc {
        line: node.span.start.line().max(1),
        column: node.span.start.col() + 1,
    }
}

/// Char index → byte offset, since saphyr's markers count characters.
struct CharOffsets(Vec<usize>);

impl CharOffsets {
    fn new(text: &str) -> Self {
        let mut v: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        v.push(text.len());
        CharOffsets(v)
    }

    fn slice<'t>(&self, text: &'t str, start: usize, end: usize) -> Option<&'t str> {
        let (s, e) = (*self.0.get(start)?, *self.0.get(end)?);
        text.get(s..e)
    }
}

fn convert(node: &MarkedYaml<'_>, text: &str, offsets: &CharOffsets, depth: usize) -> Node {
    let loc = loc_of(node);
    if depth > MAX_DEPTH {
        return Node {
            loc,
            value: Value::Invalid(format!("a structure nested more than {MAX_DEPTH} levels deep")),
        };
    }
    let raw = || {
        offsets
            .slice(text, node.span.start.index(), node.span.end.index())
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let value = match &node.data {
        YamlData::Value(Scalar::Null) => Value::Null,
        YamlData::Value(Scalar::Boolean(b)) => Value::Bool(*b),
        YamlData::Value(Scalar::Integer(i)) => Value::Int(*i, raw()),
        YamlData::Value(Scalar::FloatingPoint(_)) => Value::Float(raw()),
        YamlData::Value(Scalar::String(s)) => Value::Str(s.to_string()),
        YamlData::Representation(s, _, _) => Value::Str(s.to_string()),
        YamlData::Sequence(items) => Value::Seq(items.iter().map(|n| convert(n, text, offsets, depth + 1)).collect()),
        YamlData::Mapping(map) => Value::Map(
            map.iter()
                .map(|(k, v)| Entry {
                    key: key_text(k, text, offsets),
                    key_loc: loc_of(k),
                    value: convert(v, text, offsets, depth + 1),
                })
                .collect(),
        ),
        YamlData::Tagged(tag, _) => {
            Value::Invalid(format!("a value with the tag `{tag}` (tags are not supported here)"))
        }
        YamlData::Alias(_) => Value::Invalid("an alias to an unknown anchor".into()),
        YamlData::BadValue => Value::Invalid("a value that does not match its type tag".into()),
    };
    Node { loc, value }
}

fn key_text(key: &MarkedYaml<'_>, text: &str, offsets: &CharOffsets) -> Option<String> {
    match &key.data {
        YamlData::Value(Scalar::String(s)) => Some(s.to_string()),
        YamlData::Representation(s, _, _) => Some(s.to_string()),
        // `5000: …` or `true: …` as a key: keep what was written rather than a re-rendering.
        YamlData::Value(Scalar::Integer(_) | Scalar::FloatingPoint(_) | Scalar::Boolean(_)) => offsets
            .slice(text, key.span.start.index(), key.span.end.index())
            .map(|s| s.trim().to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_point_at_keys_and_values() {
        let root = parse("a: 1\nb:\n  c: [x, 2.50]\n").unwrap();
        let Value::Map(entries) = &root.value else {
            panic!("not a map")
        };
        assert_eq!(entries[0].key.as_deref(), Some("a"));
        assert_eq!(entries[0].key_loc, Loc { line: 1, column: 1 });
        assert_eq!(entries[0].value.loc, Loc { line: 1, column: 4 });
        let Value::Map(inner) = &entries[1].value.value else {
            panic!("not a map")
        };
        assert_eq!(inner[0].key_loc, Loc { line: 3, column: 3 });
        let Value::Seq(items) = &inner[0].value.value else {
            panic!("not a seq")
        };
        assert!(matches!(&items[1].value, Value::Float(raw) if raw == "2.50"));
        assert_eq!(items[1].loc, Loc { line: 3, column: 10 });
    }

    #[test]
    fn duplicate_keys_and_bad_syntax_are_syntax_errors_with_positions() {
        let e = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(e.loc, Loc { line: 3, column: 1 });
        assert!(e.message.contains("duplicate"), "{}", e.message);
        let e = parse("a: [1, 2\n").unwrap_err();
        assert!(e.loc.line >= 1);
        assert!(parse("a: 1\n---\nb: 2\n").is_err());
    }

    #[test]
    fn empty_input_is_null_and_deep_nesting_is_refused_without_crashing() {
        assert!(matches!(parse("").unwrap().value, Value::Null));
        assert!(matches!(parse("# only a comment\n").unwrap().value, Value::Null));
        let deep = format!("{}x{}", "[".repeat(200), "]".repeat(200));
        let _ = parse(&deep);
        let deep_block = "- ".repeat(5000) + "x\n";
        let e = parse(&deep_block).unwrap_err();
        assert_eq!(e.loc, Loc { line: 1, column: 131 });
        let deep_map: String = (0..300).map(|i| format!("{}k{i}:\n", " ".repeat(i))).collect();
        assert!(parse(&deep_map).is_err());
        // Anchors that wrap each other nest without indenting; saphyr's alias budget bounds them.
        let chain: String = (1..2000).map(|i| format!("a{i}: &a{i} [*a{}]\n", i - 1)).collect();
        let _ = parse(&format!("a0: &a0 x\n{chain}"));
    }
}
