//! Kustomize `images[]` entries: `{name, newName, newTag, digest}`, the effective name being
//! `newName` when set.

use super::yaml::{Kind, Node};
use super::{ref_from_fields, Ctx, Form, Found, KeyPath, ManifestError, Slots};
use crate::image::ImageRefError;

pub(crate) fn find(ctx: &Ctx<'_>, root: &Node, out: &mut Vec<Found>) -> Result<(), ManifestError> {
    let Some(Kind::Seq(items)) = root.get("images").map(|n| &n.kind) else {
        return Ok(());
    };
    for (i, item) in items.iter().enumerate() {
        let Kind::Map { flow, entries } = &item.kind else {
            continue;
        };
        let key_path = KeyPath::default().key("images").index(i);
        let text = |k: &str| item.get(k).and_then(Node::as_str).filter(|s| !s.is_empty());
        let name = text("newName").or(text("name")).ok_or_else(|| {
            ctx.bad_image(
                &key_path,
                item.line,
                ImageRefError::BadReference {
                    input: String::new(),
                    why: "the entry has neither `name` nor `newName`",
                },
            )
        })?;
        let image = ref_from_fields(name, text("newTag"), text("digest"))
            .map_err(|e| ctx.bad_image(&key_path, item.line, e))?;
        // A missing `digest` goes after the entry's last key, so the entry reads in its usual order.
        let Some((last_key, last_value)) = entries.last() else {
            continue;
        };
        out.push(Found {
            location: ctx.location(Form::Kustomize, &key_path, item.line, image),
            pos: item.start,
            slots: Slots::Fields {
                tag: item.get("newTag").cloned(),
                digest: item.get("digest").cloned(),
                anchor: last_value.clone(),
                anchor_col: last_key.col,
                flow: *flow,
            },
        });
    }
    Ok(())
}
