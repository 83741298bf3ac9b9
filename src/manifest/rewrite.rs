//! The byte edits that re-point one reference, and the read-back check that makes a rewrite fail
//! closed: if the new text does not parse to exactly the intended references, nothing is written.

use super::yaml::{self, Node, Style};
use super::{scan, DetectOptions, Found, ManifestError, Slots};
use crate::image::ImageRef;

/// Replace `text[start..end]` with `text` (an insertion when `start == end`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Edit {
    pub start: usize,
    pub end: usize,
    pub text: String,
}

/// The edits for one reference and the reference it must read back as.
pub(crate) fn plan(
    file: &str,
    text: &str,
    found: &Found,
    new: &ImageRef,
) -> Result<(Vec<Edit>, ImageRef), ManifestError> {
    let old = &found.location.image;
    let unsupported = |node: &Node, why: &str| ManifestError::Unsupported {
        file: file.to_string(),
        line: node.line,
        key_path: found.location.key_path.clone(),
        why: why.to_string(),
    };
    let want = ImageRef {
        name: old.name.clone(),
        tag: new.tag.clone().or_else(|| old.tag.clone()),
        digest: new.digest.clone(),
    };
    match &found.slots {
        Slots::Whole { scalar, in_flow } => {
            if &want == old {
                return Ok((Vec::new(), want));
            }
            let edit = replace(text, scalar, &want.to_string(), *in_flow).map_err(|why| unsupported(scalar, why))?;
            Ok((vec![edit], want))
        }
        Slots::Fields {
            tag,
            digest,
            anchor,
            anchor_col,
            flow,
        } => {
            let mut edits = Vec::new();
            // Without a tag key there is nothing to update: the digest alone decides what runs.
            let tag_written = match (tag, &new.tag) {
                (Some(node), Some(t)) => {
                    if node.as_str() != Some(t.as_str()) {
                        edits.push(replace(text, node, t, *flow).map_err(|why| unsupported(node, why))?);
                    }
                    Some(t.clone())
                }
                _ => old.tag.clone(),
            };
            match (digest, &new.digest) {
                (Some(node), Some(d)) if node.as_str() != Some(d.as_str()) => {
                    edits.push(replace(text, node, d.as_str(), *flow).map_err(|why| unsupported(node, why))?);
                }
                (None, Some(d)) => edits.push(
                    insert_digest(text, anchor, *anchor_col, *flow, d.as_str())
                        .map_err(|why| unsupported(anchor, why))?,
                ),
                (Some(node), None) if node.as_str().is_some_and(|s| !s.is_empty()) => {
                    return Err(unsupported(
                        node,
                        "the new reference has no digest, and removing a digest key is not done in place",
                    ));
                }
                _ => {}
            }
            Ok((
                edits,
                ImageRef {
                    name: old.name.clone(),
                    tag: tag_written,
                    digest: new.digest.clone(),
                },
            ))
        }
    }
}

/// Replaces a scalar, keeping its quoting.
fn replace(text: &str, node: &Node, value: &str, in_flow: bool) -> Result<Edit, &'static str> {
    let scalar = node.scalar().ok_or("the value is not a scalar")?;
    if let Some(why) = scalar.fixed {
        return Err(why);
    }
    if node.aliased {
        return Err("it is a YAML alias");
    }
    let old_text = text
        .get(node.start..node.end)
        .ok_or("its position in the file is not known")?;
    let old_plain = (scalar.style == Style::Plain).then_some(old_text);
    Ok(Edit {
        start: node.start,
        end: node.end,
        text: yaml::render(value, scalar.style, old_plain, in_flow),
    })
}

/// Adds a `digest` key after `anchor`: a new line indented like its siblings in a block mapping,
/// `, digest: …` in a flow mapping. The value is quoted the way the anchor's value is.
fn insert_digest(text: &str, anchor: &Node, col: usize, flow: bool, digest: &str) -> Result<Edit, &'static str> {
    if anchor.aliased {
        return Err("the entry is reached through a YAML alias");
    }
    let style = match anchor.scalar() {
        Some(s) if matches!(s.style, Style::Single | Style::Double) => s.style,
        Some(_) => Style::Plain,
        None => return Err("its last key holds a collection, so there is no line to add a digest after"),
    };
    let value = yaml::render(digest, style, None, flow);
    if flow {
        return Ok(Edit {
            start: anchor.end,
            end: anchor.end,
            text: format!(", digest: {value}"),
        });
    }
    let indent = " ".repeat(col);
    Ok(match text[anchor.end..].find('\n') {
        Some(i) => {
            let at = anchor.end + i + 1;
            let nl = if text[..at].ends_with("\r\n") { "\r\n" } else { "\n" };
            Edit {
                start: at,
                end: at,
                text: format!("{indent}digest: {value}{nl}"),
            }
        }
        None => {
            let nl = yaml::line_ending_near(text, anchor.start);
            Edit {
                start: text.len(),
                end: text.len(),
                text: format!("{nl}{indent}digest: {value}"),
            }
        }
    })
}

/// Applies edits back to front, refusing overlaps (two references sharing bytes would mean an
/// alias slipped through, and splicing twice would corrupt the file).
pub(crate) fn apply(file: &str, text: &str, mut edits: Vec<Edit>) -> Result<String, ManifestError> {
    edits.sort_by_key(|e| std::cmp::Reverse((e.start, e.end)));
    edits.dedup();
    let mut out = text.to_string();
    let mut limit = text.len() + 1;
    for e in &edits {
        if e.end > limit || (e.end == limit && e.start == e.end) {
            return Err(ManifestError::Unsupported {
                file: file.to_string(),
                line: text[..e.start.min(text.len())].matches('\n').count() + 1,
                key_path: String::new(),
                why: "two references share the same bytes (a YAML alias?)".to_string(),
            });
        }
        out.replace_range(e.start..e.end, &e.text);
        limit = e.start;
    }
    Ok(out)
}

/// The rewritten text must hold the same references as before, the targets now reading as
/// intended and every other one untouched.
pub(crate) fn check(
    file: &str,
    out: &str,
    opts: &DetectOptions,
    before: &[Found],
    expected: &[(usize, String, ImageRef)],
) -> Result<(), ManifestError> {
    let after = scan(file, out, opts).map_err(|e| ManifestError::RewriteCheck {
        file: file.to_string(),
        key_path: String::new(),
        expected: "a file that parses".to_string(),
        found: e.to_string(),
    })?;
    let mismatch = |key_path: &str, expected: String, found: String| ManifestError::RewriteCheck {
        file: file.to_string(),
        key_path: key_path.to_string(),
        expected,
        found,
    };
    if after.len() != before.len() {
        return Err(mismatch(
            "",
            format!("{} image references", before.len()),
            format!("{} image references", after.len()),
        ));
    }
    for (b, a) in before.iter().zip(&after) {
        let (bl, al) = (&b.location, &a.location);
        if (bl.document, &bl.key_path, bl.form) != (al.document, &al.key_path, al.form) {
            return Err(mismatch(&bl.key_path, bl.key_path.clone(), al.key_path.clone()));
        }
        let want = expected
            .iter()
            .find(|(d, k, _)| *d == bl.document && *k == bl.key_path)
            .map_or(&bl.image, |(_, _, r)| r);
        if &al.image != want {
            return Err(mismatch(&bl.key_path, want.to_string(), al.image.to_string()));
        }
    }
    Ok(())
}
