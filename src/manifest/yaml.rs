//! A position-aware view of a YAML stream: saphyr's marked tree turned into nodes with exact byte spans.
//!
//! saphyr reports positions in characters, and for quoted scalars its span may run past the closing
//! quote; everything here is converted to byte offsets into the original text and re-measured, so that
//! a rewrite can splice bytes without disturbing anything around them.

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar as SaphyrScalar, YamlData};

use super::ManifestError;

/// The text being parsed plus a map from saphyr's character indices to byte offsets.
pub(crate) struct Source<'a> {
    pub text: &'a str,
    char_to_byte: Vec<usize>,
}

impl<'a> Source<'a> {
    pub fn new(text: &'a str) -> Self {
        let mut char_to_byte: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
        char_to_byte.push(text.len());
        Source { text, char_to_byte }
    }

    /// Byte offset of a character index; indices past the end clamp to the end rather than panic.
    pub fn byte(&self, char_index: usize) -> usize {
        self.char_to_byte.get(char_index).copied().unwrap_or(self.text.len())
    }
}

/// How a scalar is written, which decides how a replacement must be escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    Plain,
    Single,
    Double,
    /// Written with an anchor, alias or tag prefix, or as a block scalar: never rewritten.
    Other,
}

#[derive(Debug, Clone)]
pub(crate) struct Scalar {
    /// `None` for null (`~`, `null`, or nothing at all).
    pub value: Option<String>,
    pub style: Style,
    /// Why this scalar cannot be replaced in place, if it cannot.
    pub fixed: Option<&'static str>,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Map { flow: bool, entries: Vec<(Node, Node)> },
    Seq(Vec<Node>),
    Scalar(Scalar),
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// Byte span of the node. For scalars it is exact (quotes included, anchors and tags too).
    pub start: usize,
    pub end: usize,
    /// 1-based line and 0-based column (in characters) of the start.
    pub line: usize,
    pub col: usize,
    /// Reached through an alias: its spans belong to the anchored node elsewhere in the file.
    pub aliased: bool,
    pub kind: Kind,
}

impl Node {
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        match &self.kind {
            Kind::Map { entries, .. } => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar(s) => s.value.as_deref(),
            _ => None,
        }
    }

    pub fn scalar(&self) -> Option<&Scalar> {
        match &self.kind {
            Kind::Scalar(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_map(&self) -> bool {
        matches!(self.kind, Kind::Map { .. })
    }
}

/// Parses every document of `text`. Empty documents are dropped but keep their index, so that a
/// document number means the same thing before and after a rewrite.
pub(crate) fn parse(file: &str, src: &Source<'_>) -> Result<Vec<(usize, Node)>, ManifestError> {
    // saphyr is not supposed to panic on any input, but a panic here would take down a daemon that
    // reads files other people commit: contain it and report the file instead.
    let loaded = std::panic::catch_unwind(|| MarkedYaml::load_from_str(src.text)).map_err(|_| ManifestError::Yaml {
        file: file.to_string(),
        line: 0,
        column: 0,
        message: "the YAML parser failed on this input".to_string(),
    })?;
    let docs = loaded.map_err(|e| ManifestError::Yaml {
        file: file.to_string(),
        line: e.marker().line(),
        column: e.marker().col() + 1,
        message: e.info().to_string(),
    })?;
    let mut out = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let mut max_seen = 0;
        let node = convert(doc, src, &mut max_seen, false);
        if matches!(&node.kind, Kind::Scalar(s) if s.value.is_none()) {
            continue;
        }
        out.push((i, node));
    }
    Ok(out)
}

/// Converts saphyr's tree. Aliases are resolved by saphyr by copying the anchored node, spans and
/// all; in a walk in document order such a copy is the only thing that can start before a node
/// already seen, which is how aliased subtrees are recognised.
fn convert(m: &MarkedYaml<'_>, src: &Source<'_>, max_seen: &mut usize, parent_aliased: bool) -> Node {
    let start_char = m.span.start.index();
    let aliased = parent_aliased || start_char < *max_seen;
    *max_seen = (*max_seen).max(start_char);
    let start = src.byte(start_char);
    let mut end = src.byte(m.span.end.index()).max(start);
    let (line, col) = (m.span.start.line(), m.span.start.col());
    let first = src.text[start..].chars().next();
    let kind = match &m.data {
        YamlData::Mapping(map) => {
            let mut entries = Vec::with_capacity(map.len());
            for (k, v) in map.iter() {
                let key = convert(k, src, max_seen, aliased);
                let mut value = convert(v, src, max_seen, aliased);
                check_value_position(src, &key, &mut value);
                entries.push((key, value));
            }
            Kind::Map {
                flow: first == Some('{'),
                entries,
            }
        }
        YamlData::Sequence(seq) => Kind::Seq(seq.iter().map(|v| convert(v, src, max_seen, aliased)).collect()),
        YamlData::Tagged(_, inner) => {
            // An application tag (`!foo`): the contents stay visible; a tagged scalar starts with `!`
            // and so is never spliced.
            let mut n = convert(inner, src, max_seen, aliased);
            n.start = start;
            return n;
        }
        data => {
            let (style, exact_end) = match first {
                Some('"') => (Style::Double, quoted_end(src.text, start, '"')),
                Some('\'') => (Style::Single, quoted_end(src.text, start, '\'')),
                Some('&' | '*' | '!') => (Style::Other, None),
                _ => (Style::Plain, None),
            };
            if let Some(e) = exact_end {
                end = e;
            }
            let raw = &src.text[start..end];
            let value = match data {
                YamlData::Value(SaphyrScalar::Null) => None,
                // Plain scalars are kept as written: `1.20` is a tag, not the float 1.2.
                YamlData::Value(_) if style == Style::Plain && !raw.contains(['\n', '\r']) => Some(raw.to_string()),
                YamlData::Value(SaphyrScalar::String(s)) => Some(s.to_string()),
                YamlData::Value(SaphyrScalar::Boolean(b)) => Some(b.to_string()),
                YamlData::Value(SaphyrScalar::Integer(i)) => Some(i.to_string()),
                YamlData::Value(SaphyrScalar::FloatingPoint(f)) => Some(f.to_string()),
                YamlData::Representation(s, _, _) => Some(s.to_string()),
                _ => None,
            };
            let fixed = if aliased || first == Some('*') {
                Some("it is a YAML alias")
            } else if matches!(first, Some('&')) {
                Some("it carries a YAML anchor, so other nodes may refer to it")
            } else if matches!(first, Some('!')) {
                Some("it carries a YAML tag")
            } else if raw.contains(['\n', '\r']) {
                Some("it spans several lines")
            } else if start == end {
                Some("it is empty")
            } else {
                None
            };
            Kind::Scalar(Scalar { value, style, fixed })
        }
    };
    Node {
        start,
        end,
        line,
        col,
        aliased,
        kind,
    }
}

/// A value scalar must follow its key with nothing but `:` and blanks in between; anything else
/// there (a block scalar header `|`/`>`, a comment) means the span does not cover what it seems to.
fn check_value_position(src: &Source<'_>, key: &Node, value: &mut Node) {
    let Kind::Scalar(s) = &mut value.kind else { return };
    if s.fixed.is_some() {
        return;
    }
    let between = src.text.get(key.end..value.start).unwrap_or("");
    let ok = key.end <= value.start
        && between.trim_matches([' ', '\t', '\r', '\n']) == ":"
        && !between.trim_start_matches([' ', '\t', '\r', '\n']).is_empty();
    if !ok {
        s.fixed = Some("it is a block scalar or has a comment between key and value");
        s.style = Style::Other;
    }
}

/// The byte just after the closing quote of a quoted scalar starting at `start`.
fn quoted_end(text: &str, start: usize, quote: char) -> Option<usize> {
    let mut it = text[start..].char_indices().skip(1).peekable();
    while let Some((i, c)) = it.next() {
        if quote == '"' && c == '\\' {
            it.next();
        } else if c == quote {
            if quote == '\'' && matches!(it.peek(), Some((_, '\''))) {
                it.next();
            } else {
                return Some(start + i + c.len_utf8());
            }
        }
    }
    None
}

/// Writes `value` in the style of the scalar it replaces. A plain scalar stays plain unless the new
/// text would not read back as the same string (it would need quoting, or would turn into a number
/// where the old text did not), in which case it is double-quoted: a changed quote is better than a
/// changed value.
pub(crate) fn render(value: &str, style: Style, old_plain: Option<&str>, in_flow: bool) -> String {
    match style {
        Style::Single => format!("'{}'", value.replace('\'', "''")),
        Style::Double | Style::Other => double_quoted(value),
        Style::Plain => {
            let was_non_string = old_plain.is_some_and(resolves_to_non_string);
            if plain_safe(value, in_flow) && (was_non_string || !resolves_to_non_string(value)) {
                value.to_string()
            } else {
                double_quoted(value)
            }
        }
    }
}

fn double_quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Can `value` be written as a plain scalar and read back unchanged?
fn plain_safe(value: &str, in_flow: bool) -> bool {
    let Some(first) = value.chars().next() else {
        return false;
    };
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) || first.is_whitespace() || value.ends_with(char::is_whitespace) {
        return false;
    }
    if value.contains(": ") || value.contains(" #") || value.ends_with(':') || value.chars().any(char::is_control) {
        return false;
    }
    !(in_flow && value.contains([',', '[', ']', '{', '}']))
}

/// Would a YAML reader (1.2 core schema, or the 1.1 habits of Go's yaml) take this plain text for
/// something other than a string?
fn resolves_to_non_string(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "" | "~" | "null" | "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n"
    ) {
        return true;
    }
    if matches!(lower.as_str(), ".inf" | "-.inf" | "+.inf" | ".nan") {
        return true;
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s).replace('_', "");
    if digits.starts_with("0x") || digits.starts_with("0o") {
        return digits.len() > 2 && digits[2..].chars().all(|c| c.is_ascii_hexdigit());
    }
    !digits.is_empty() && digits.chars().any(|c| c.is_ascii_digit()) && digits.parse::<f64>().is_ok()
}

/// The line ending used by the line that contains byte `at`, else the file's first, else `\n`.
pub(crate) fn line_ending_near(text: &str, at: usize) -> &'static str {
    let probe = text[at.min(text.len())..]
        .find('\n')
        .map(|i| at + i)
        .or_else(|| text.find('\n'));
    match probe {
        Some(i) if i > 0 && text.as_bytes()[i - 1] == b'\r' => "\r\n",
        _ => "\n",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_scalars_keep_their_written_form_and_exact_spans() {
        let text = "# héllo ✓\r\nimage: \"a\\\"b:1\" # c\r\ntag: 1.20\r\n";
        let src = Source::new(text);
        let docs = parse("f", &src).unwrap();
        let root = &docs[0].1;
        let image = root.get("image").unwrap();
        assert_eq!(&text[image.start..image.end], "\"a\\\"b:1\"");
        assert_eq!(image.as_str(), Some("a\"b:1"));
        let tag = root.get("tag").unwrap();
        assert_eq!(tag.as_str(), Some("1.20"));
        assert_eq!(&text[tag.start..tag.end], "1.20");
        assert_eq!(tag.line, 3);
    }

    #[test]
    fn aliases_anchors_and_block_scalars_are_marked_fixed() {
        let text = "a: &x nginx\nb: *x\nc: |\n  nginx\nm: &m {image: y}\nn: *m\n";
        let src = Source::new(text);
        let root = &parse("f", &src).unwrap()[0].1;
        for key in ["a", "b", "c"] {
            assert!(root.get(key).unwrap().scalar().unwrap().fixed.is_some(), "{key}");
        }
        assert!(root
            .get("m")
            .unwrap()
            .get("image")
            .unwrap()
            .scalar()
            .unwrap()
            .fixed
            .is_none());
        assert!(root.get("n").unwrap().get("image").unwrap().aliased);
    }

    #[test]
    fn render_keeps_style_and_quotes_only_when_needed() {
        assert_eq!(render("a:1.3", Style::Plain, Some("a:1.2"), false), "a:1.3");
        assert_eq!(render("it's", Style::Single, None, false), "'it''s'");
        assert_eq!(render("a\"b", Style::Double, None, false), "\"a\\\"b\"");
        assert_eq!(render("1.30", Style::Plain, Some("v1.2"), false), "\"1.30\"");
        assert_eq!(render("1.30", Style::Plain, Some("1.2"), false), "1.30");
        assert_eq!(render("a,b", Style::Plain, None, true), "\"a,b\"");
    }
}
