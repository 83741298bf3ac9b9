//! Pure parsing of decision texts: `git interpret-trailers` style trailers, and notes holding several decisions.
//!
//! A note under `refs/notes/tollgate` may record several decisions about the same commit (a block under one
//! policy digest, later another). They are appended one after another with [`append_decision`], separated by
//! a line holding exactly `---` ([`DECISION_SEPARATOR`]); [`split_decisions`] takes them apart again, and
//! [`trailers`] then reads each one. `---` is also where `git interpret-trailers` stops reading, so a human
//! piping a whole note into it sees the first decision's trailers, never a mix of several.

/// Separates two decisions in one note: a line holding exactly `---`, with a blank line on each side so that
/// each decision keeps its own last paragraph (its trailer block).
pub const DECISION_SEPARATOR: &str = "\n---\n\n";

/// Appends `decision` to an existing note (`None` or empty: no note yet), with [`DECISION_SEPARATOR`].
pub fn append_decision(note: Option<&str>, decision: &str) -> String {
    let decision = decision.trim_end();
    match note.map(str::trim_end).filter(|n| !n.is_empty()) {
        None => format!("{decision}\n"),
        Some(existing) => format!("{existing}\n{DECISION_SEPARATOR}{decision}\n"),
    }
}

/// The decisions in a note, oldest first, each without surrounding blank lines. Splits on lines that are
/// exactly `---` (trailing whitespace and `\r` ignored); empty pieces are dropped.
pub fn split_decisions(note: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut pos = 0;
    for line in note.split_inclusive('\n') {
        if line.trim_end() == "---" {
            out.push(&note[start..pos]);
            start = pos + line.len();
        }
        pos += line.len();
    }
    out.push(&note[start..]);
    out.into_iter()
        .map(|d| d.trim_matches(|c: char| c == '\n' || c == '\r'))
        .filter(|d| !d.trim().is_empty())
        .collect()
}

/// The trailers of a commit message or of one decision, as `(key, value)` in order, following the
/// `git interpret-trailers` rules tollgate relies on:
/// - the trailer block is the last paragraph (blank-line separated), and never the subject paragraph;
/// - every line in it is `Key: value` (key of letters, digits and `-`; spaces before `:` allowed), or a
///   continuation line starting with whitespace, which is folded into the previous value with one space;
///   otherwise the paragraph is prose and there are no trailers (git's 25% rule only applies to trailers
///   git itself recognises, such as `Signed-off-by`, which tollgate does not need);
/// - everything from a `---` line (`---` alone or followed by whitespace: a patch, or the next decision in a
///   note) is ignored.
///
/// Keys keep their spelling; compare them case-insensitively, as git does.
pub fn trailers(message: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = message
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .take_while(|l| !is_separator(l))
        .collect();
    let Some(last) = lines.iter().rposition(|l| !l.trim().is_empty()) else {
        return Vec::new();
    };
    let first = lines[..last]
        .iter()
        .rposition(|l| l.trim().is_empty())
        .map_or(0, |i| i + 1);
    let Some(subject) = lines.iter().position(|l| !l.trim().is_empty()) else {
        return Vec::new();
    };
    if first <= subject {
        return Vec::new();
    }
    let mut out: Vec<(String, String)> = Vec::new();
    for line in &lines[first..=last] {
        if line.starts_with([' ', '\t']) {
            match out.last_mut() {
                Some((_, value)) => {
                    if !value.is_empty() {
                        value.push(' ');
                    }
                    value.push_str(line.trim());
                }
                None => return Vec::new(),
            }
        } else if let Some(kv) = parse_trailer(line) {
            out.push(kv);
        } else {
            return Vec::new();
        }
    }
    out
}

/// git's patch separator test: `---` alone, or followed by whitespace.
fn is_separator(line: &str) -> bool {
    line.strip_prefix("---")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
}

fn parse_trailer(line: &str) -> Option<(String, String)> {
    let (key, value) = line.split_once(':')?;
    let key = key.trim_end();
    let valid = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    valid.then(|| (key.to_string(), value.trim().to_string()))
}
