//! Detect (pure): the files of an environment before and after a change → the image bumps in it.
//!
//! An image is identified by its effective name (Kustomize `newName`, Helm `registry/repository`);
//! a bump is a reference whose tag or digest is new for that name. Unparseable files are reported,
//! never fatal: one broken file must not hide the bumps in the others.

use std::collections::{BTreeMap, BTreeSet};

use crate::gate::ImageBump;
use crate::image::ImageRef;
use crate::manifest::{find_images, DetectOptions, ImageLocation, ManifestError};

/// Is this a file tollgate reads for image references? YAML by extension, and Kustomize's
/// extension-less `Kustomization`.
fn is_manifest(path: &str) -> bool {
    let base = path.rsplit(['/', '\\']).next().unwrap_or(path);
    let lower = base.to_ascii_lowercase();
    lower.ends_with(".yaml") || lower.ends_with(".yml") || base == "Kustomization"
}

/// All images in a set of files (path, contents): non-YAML files skipped, errors collected per file.
/// Locations come out sorted by file, then document order.
pub fn images_in(files: &[(String, Vec<u8>)], opts: &DetectOptions) -> (Vec<ImageLocation>, Vec<ManifestError>) {
    let mut files: Vec<&(String, Vec<u8>)> = files.iter().filter(|(p, _)| is_manifest(p)).collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut images = Vec::new();
    let mut errors = Vec::new();
    for (path, bytes) in files {
        let Ok(text) = std::str::from_utf8(bytes) else {
            errors.push(ManifestError::NotUtf8 { file: path.clone() });
            continue;
        };
        match find_images(path, text, opts) {
            Ok(mut found) => images.append(&mut found),
            Err(e) => errors.push(e),
        }
    }
    (images, errors)
}

/// Image bumps between two snapshots of an environment path: for each image (by effective name),
/// every reference in `after` whose tag or digest was not there in `before`. `before` is, in order
/// of preference, the reference at the same place (file, document, key path), else the one that
/// disappeared for that name, else any earlier one; `None` for an image new to the environment.
/// The same change found in several files is reported once (in the first file by path).
///
/// Errors are those of `after`: the state being acted on. A broken `before` file only makes its
/// images look new, which leads to an evaluation, never to a skipped one.
pub fn bumps(
    before: &[(String, Vec<u8>)],
    after: &[(String, Vec<u8>)],
    opts: &DetectOptions,
) -> (Vec<ImageBump>, Vec<ManifestError>) {
    let (old, _) = images_in(before, opts);
    let (new, errors) = images_in(after, opts);

    let refs_by_name = |locs: &[ImageLocation]| {
        let mut m: BTreeMap<String, BTreeSet<ImageRef>> = BTreeMap::new();
        for l in locs {
            m.entry(l.image.name.clone()).or_default().insert(l.image.clone());
        }
        m
    };
    let old_refs = refs_by_name(&old);
    let new_refs = refs_by_name(&new);
    let old_at: BTreeMap<(&str, usize, &str), &ImageRef> = old
        .iter()
        .map(|l| ((l.file.as_str(), l.document, l.key_path.as_str()), &l.image))
        .collect();

    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for loc in &new {
        let name = &loc.image.name;
        let previous = old_refs.get(name);
        if previous.is_some_and(|p| p.contains(&loc.image)) {
            continue;
        }
        let same_place = old_at
            .get(&(loc.file.as_str(), loc.document, loc.key_path.as_str()))
            .filter(|r| &r.name == name)
            .copied();
        let gone = previous.and_then(|p| p.iter().find(|r| !new_refs.get(name).is_some_and(|n| n.contains(*r))));
        let before = same_place
            .or(gone)
            .or_else(|| previous.and_then(|p| p.iter().next()))
            .cloned();
        if seen.insert((before.clone(), loc.image.clone())) {
            out.push(ImageBump {
                file: loc.file.clone(),
                before,
                after: loc.image.clone(),
            });
        }
    }
    out.sort_by(|a, b| (&a.after, &a.before, &a.file).cmp(&(&b.after, &b.before, &b.file)));
    (out, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Digest;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn files(list: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        list.iter()
            .map(|(p, t)| (p.to_string(), t.as_bytes().to_vec()))
            .collect()
    }

    fn r(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    fn deployment(image: &str) -> String {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n        \
             - name: api # main\n          image: {image}\n"
        )
    }

    fn kustomization(tag: &str, digest: Option<&str>) -> String {
        let digest = digest.map(|d| format!("    digest: {d}\n")).unwrap_or_default();
        format!("resources: [deploy.yaml]\nimages:\n  - name: api\n    newName: ghcr.io/acme/api\n    newTag: {tag}\n{digest}")
    }

    #[test]
    fn tag_change_is_a_bump_with_its_previous_reference() {
        let before = files(&[("env/deploy.yaml", &deployment("ghcr.io/acme/api:1.0"))]);
        let after = files(&[("env/deploy.yaml", &deployment("ghcr.io/acme/api:1.1"))]);
        let (bumps, errors) = bumps(&before, &after, &DetectOptions::default());
        assert!(errors.is_empty());
        assert_eq!(
            bumps,
            [ImageBump {
                file: "env/deploy.yaml".into(),
                before: Some(r("ghcr.io/acme/api:1.0")),
                after: r("ghcr.io/acme/api:1.1"),
            }]
        );
    }

    #[test]
    fn digest_pin_in_kustomization_is_a_bump() {
        let before = files(&[("env/kustomization.yaml", &kustomization("1.1", None))]);
        let after = files(&[("env/kustomization.yaml", &kustomization("1.1", Some(D1)))]);
        let (bumps, _) = bumps(&before, &after, &DetectOptions::default());
        assert_eq!(bumps.len(), 1);
        assert_eq!(bumps[0].before, Some(r("ghcr.io/acme/api:1.1")));
        assert_eq!(bumps[0].after.digest, Some(Digest::parse(D1).unwrap()));
    }

    #[test]
    fn new_image_has_no_before() {
        let before = files(&[("env/deploy.yaml", &deployment("ghcr.io/acme/api:1.0"))]);
        let after = files(&[
            ("env/deploy.yaml", &deployment("ghcr.io/acme/api:1.0")),
            ("env/worker.yaml", &deployment(&format!("ghcr.io/acme/worker:2.0@{D2}"))),
        ]);
        let (bumps, _) = bumps(&before, &after, &DetectOptions::default());
        assert_eq!(
            bumps,
            [ImageBump {
                file: "env/worker.yaml".into(),
                before: None,
                after: r(&format!("ghcr.io/acme/worker:2.0@{D2}"))
            }]
        );
    }

    #[test]
    fn unchanged_files_and_non_yaml_files_give_nothing() {
        let snapshot = files(&[
            ("env/deploy.yaml", &deployment("ghcr.io/acme/api:1.0")),
            ("env/README.md", "containers:\n- image: not-a-manifest:1\n"),
        ]);
        let (bumps, errors) = bumps(&snapshot, &snapshot, &DetectOptions::default());
        assert!(bumps.is_empty() && errors.is_empty());
        let (images, _) = images_in(&snapshot, &DetectOptions::default());
        assert_eq!(images.len(), 1);
    }

    #[test]
    fn malformed_yaml_is_reported_with_its_location_and_other_files_still_count() {
        let before = files(&[("env/deploy.yaml", &deployment("ghcr.io/acme/api:1.0"))]);
        let after = files(&[
            ("env/broken.yaml", "spec:\n  containers: [\n    {image: x\n"),
            ("env/deploy.yaml", &deployment("ghcr.io/acme/api:1.1")),
        ]);
        let (bumps, errors) = bumps(&before, &after, &DetectOptions::default());
        assert_eq!(bumps.len(), 1);
        assert_eq!(errors.len(), 1);
        match &errors[0] {
            ManifestError::Yaml { file, line, column, .. } => {
                assert_eq!(file, "env/broken.yaml");
                assert!(*line >= 3 && *column >= 1, "{}", errors[0]);
            }
            other => panic!("expected a YAML error, got {other}"),
        }
    }

    #[test]
    fn non_utf8_yaml_is_an_error_not_a_skip() {
        let after = vec![("env/x.yaml".to_string(), vec![0xff, 0xfe, b'a'])];
        let (_, errors) = images_in(&after, &DetectOptions::default());
        assert_eq!(
            errors,
            [ManifestError::NotUtf8 {
                file: "env/x.yaml".into()
            }]
        );
    }

    #[test]
    fn one_name_with_several_refs_reports_each_change_once_and_sorted() {
        let before = files(&[
            ("a/deploy.yaml", &deployment("ghcr.io/acme/api:1.0")),
            ("b/deploy.yaml", &deployment("ghcr.io/acme/api:0.9")),
        ]);
        let after = files(&[
            ("a/deploy.yaml", &deployment("ghcr.io/acme/api:1.1")),
            ("b/deploy.yaml", &deployment("ghcr.io/acme/api:1.1")),
            ("c/deploy.yaml", &deployment("ghcr.io/acme/api:1.1")),
        ]);
        let (bumps, _) = bumps(&before, &after, &DetectOptions::default());
        let got: Vec<(String, Option<String>, String)> = bumps
            .iter()
            .map(|b| {
                (
                    b.file.clone(),
                    b.before.as_ref().map(|r| r.to_string()),
                    b.after.to_string(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "b/deploy.yaml".to_string(),
                    Some("ghcr.io/acme/api:0.9".to_string()),
                    "ghcr.io/acme/api:1.1".to_string()
                ),
                (
                    "a/deploy.yaml".to_string(),
                    Some("ghcr.io/acme/api:1.0".to_string()),
                    "ghcr.io/acme/api:1.1".to_string()
                ),
            ]
        );
    }

    #[test]
    fn removed_image_is_not_a_bump() {
        let before = files(&[("env/deploy.yaml", &deployment("ghcr.io/acme/api:1.0"))]);
        let (bumps, _) = bumps(&before, &[], &DetectOptions::default());
        assert!(bumps.is_empty());
    }
}
