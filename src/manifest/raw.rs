//! Raw manifests: `containers[].image`, `initContainers[].image` and `ephemeralContainers[].image`
//! at any depth, so that Pods, Deployments, CronJobs and custom resources embedding a pod spec all count.

use super::yaml::{Kind, Node};
use super::{Ctx, Form, Found, KeyPath, ManifestError, Slots};
use crate::image::ImageRef;

const CONTAINER_KEYS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

pub(crate) fn find(ctx: &Ctx<'_>, root: &Node, out: &mut Vec<Found>) -> Result<(), ManifestError> {
    walk(ctx, root, &KeyPath::default(), out)
}

fn walk(ctx: &Ctx<'_>, node: &Node, path: &KeyPath, out: &mut Vec<Found>) -> Result<(), ManifestError> {
    match &node.kind {
        Kind::Map { entries, .. } => {
            for (k, v) in entries {
                let Some(key) = k.as_str() else { continue };
                let here = path.key(key);
                if CONTAINER_KEYS.contains(&key) {
                    if let Kind::Seq(items) = &v.kind {
                        for (i, item) in items.iter().enumerate() {
                            container(ctx, item, &here.index(i), out)?;
                        }
                    }
                }
                walk(ctx, v, &here, out)?;
            }
        }
        Kind::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(ctx, item, &path.index(i), out)?;
            }
        }
        Kind::Scalar(_) => {}
    }
    Ok(())
}

fn container(ctx: &Ctx<'_>, item: &Node, path: &KeyPath, out: &mut Vec<Found>) -> Result<(), ManifestError> {
    let Kind::Map { flow, .. } = &item.kind else {
        return Ok(());
    };
    // A mapping-valued `image` is Helm's shape, not a container's; a null image is a container
    // tollgate has nothing to say about.
    let Some(scalar) = item.get("image").filter(|v| v.scalar().is_some()) else {
        return Ok(());
    };
    let Some(text) = scalar.as_str() else { return Ok(()) };
    let key_path = path.key("image");
    let image = ImageRef::parse(text).map_err(|e| ctx.bad_image(&key_path, scalar.line, e))?;
    out.push(Found {
        location: ctx.location(Form::Raw, &key_path, scalar.line, image),
        pos: scalar.start,
        slots: Slots::Whole {
            scalar: scalar.clone(),
            in_flow: *flow,
        },
    });
    Ok(())
}
