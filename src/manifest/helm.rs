//! Helm values (and a Flux `HelmRelease`'s `spec.values`): mappings with `repository`, optional
//! `registry`, and `tag` and/or `digest`, conventionally under a key named `image`.

use super::yaml::{Kind, Node};
use super::{ref_from_fields, Ctx, Form, Found, KeyPath, ManifestError, Slots};

/// Walks a values tree. `prefix` is where the values root sits in its document (`spec.values` in a
/// `HelmRelease`); the configured key paths are relative to the values root, as chart users write them.
pub(crate) fn find(
    ctx: &Ctx<'_>,
    values: &Node,
    prefix: &KeyPath,
    form: Form,
    out: &mut Vec<Found>,
) -> Result<(), ManifestError> {
    walk(ctx, values, &KeyPath::default(), prefix, form, out)
}

fn walk(
    ctx: &Ctx<'_>,
    node: &Node,
    rel: &KeyPath,
    prefix: &KeyPath,
    form: Form,
    out: &mut Vec<Found>,
) -> Result<(), ManifestError> {
    match &node.kind {
        Kind::Map { entries, .. } => {
            for (k, v) in entries {
                let Some(key) = k.as_str() else { continue };
                let here = rel.key(key);
                let selected = if ctx.opts.helm_image_keys.is_empty() {
                    key == "image"
                } else {
                    ctx.opts.helm_image_keys.iter().any(|p| p == here.as_str())
                };
                if selected && v.is_map() && v.get("repository").is_some() {
                    image(ctx, k, v, &join(prefix, &here), form, out)?;
                }
                walk(ctx, v, &here, prefix, form, out)?;
            }
        }
        Kind::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(ctx, item, &rel.index(i), prefix, form, out)?;
            }
        }
        Kind::Scalar(_) => {}
    }
    Ok(())
}

fn join(prefix: &KeyPath, rel: &KeyPath) -> KeyPath {
    match (prefix.as_str(), rel.as_str()) {
        ("", r) => KeyPath(r.to_string()),
        (p, "") => KeyPath(p.to_string()),
        // An index is glued on, a key is dotted on.
        (p, r) if r.starts_with('[') => KeyPath(format!("{p}{r}")),
        (p, r) => KeyPath(format!("{p}.{r}")),
    }
}

fn image(
    ctx: &Ctx<'_>,
    key: &Node,
    map: &Node,
    key_path: &KeyPath,
    form: Form,
    out: &mut Vec<Found>,
) -> Result<(), ManifestError> {
    let Kind::Map { flow, .. } = &map.kind else {
        return Ok(());
    };
    // Charts commonly ship `tag: ""` (meaning "the chart's appVersion") and `registry: ""`.
    let text = |k: &str| map.get(k).and_then(Node::as_str).filter(|s| !s.is_empty());
    let Some(repository) = text("repository") else {
        return Ok(());
    };
    let name = match text("registry") {
        Some(registry) => format!("{}/{}", registry.trim_end_matches('/'), repository),
        None => repository.to_string(),
    };
    let image =
        ref_from_fields(&name, text("tag"), text("digest")).map_err(|e| ctx.bad_image(key_path, key.line, e))?;
    let Some((anchor_key, anchor)) = map.entry("tag").or_else(|| map.entry("repository")) else {
        return Ok(());
    };
    out.push(Found {
        location: ctx.location(form, key_path, key.line, image),
        pos: key.start,
        slots: Slots::Fields {
            tag: map.get("tag").cloned(),
            digest: map.get("digest").cloned(),
            anchor: anchor.clone(),
            anchor_col: anchor_key.col,
            flow: *flow,
        },
    });
    Ok(())
}
