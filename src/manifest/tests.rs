//! Scenarios over realistic environment files (tests/fixtures/manifests): what is found, what a
//! promotion rewrite produces, and that nothing but the target lines ever changes.

use super::*;
use crate::image::Digest;

const NEW: &str = "sha256:3f9a1c00000000000000000000000000000000000000000000000000000000e2";

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/manifests/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const FIXTURES: [&str; 6] = [
    "kustomization.yaml",
    "workloads.yaml",
    "values-prod.yaml",
    "helmrelease.yaml",
    "pod-crlf.yaml",
    "unicode.yaml",
];

fn new_ref(tag: Option<&str>) -> ImageRef {
    ImageRef {
        name: "ignored".into(),
        tag: tag.map(str::to_string),
        digest: Some(Digest::parse(NEW).unwrap()),
    }
}

fn table(locs: &[ImageLocation]) -> String {
    locs.iter()
        .map(|l| {
            format!(
                "{} doc{} L{:<3} {:<11} {:<45} {}",
                l.file, l.document, l.line, l.form, l.key_path, l.image
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn opts() -> DetectOptions {
    DetectOptions::default()
}

#[test]
fn finds_images_in_every_form() {
    let all: Vec<ImageLocation> = FIXTURES
        .iter()
        .flat_map(|f| find_images(f, &fixture(f), &opts()).unwrap())
        .collect();
    insta::assert_snapshot!(table(&all));
}

#[test]
fn kustomize_effective_name_is_new_name() {
    let locs = find_images("kustomization.yaml", &fixture("kustomization.yaml"), &opts()).unwrap();
    let names: Vec<_> = locs.iter().map(|l| l.image.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "ghcr.io/acme/payments-api",
            "ghcr.io/acme/ledger",
            "ghcr.io/acme/worker",
            "redis"
        ]
    );
    assert!(locs.iter().all(|l| l.form == Form::Kustomize));
}

#[test]
fn kustomize_pin_sets_tag_and_inserts_digest_under_siblings() {
    let text = fixture("kustomization.yaml");
    let (out, n) = rewrite_image(
        "kustomization.yaml",
        &text,
        "ghcr.io/acme/payments-api",
        &new_ref(Some("1.4.2")),
        &opts(),
    )
    .unwrap();
    assert_eq!(n, 1);
    insta::assert_snapshot!(out);
}

#[test]
fn kustomize_flow_entry_gets_digest_before_the_brace() {
    let text = fixture("kustomization.yaml");
    let (out, n) = rewrite_image("kustomization.yaml", &text, "redis", &new_ref(Some("7.2.5")), &opts()).unwrap();
    assert_eq!(n, 1);
    assert!(
        out.contains(&format!("  - {{name: redis, newTag: 7.2.5, digest: {NEW}}}\n")),
        "{out}"
    );
}

#[test]
fn kustomize_existing_digest_is_replaced_in_place() {
    let text = fixture("kustomization.yaml");
    let (out, _) = rewrite_image(
        "kustomization.yaml",
        &text,
        "ghcr.io/acme/ledger",
        &new_ref(None),
        &opts(),
    )
    .unwrap();
    assert!(
        out.contains(&format!("    newTag: 2.0.3\n    digest: {NEW}\n")),
        "{out}"
    );
    assert_eq!(out.len(), text.len());
}

#[test]
fn single_quoted_tag_stays_single_quoted_and_digest_follows_its_style() {
    let text = fixture("kustomization.yaml");
    let (out, _) = rewrite_image(
        "kustomization.yaml",
        &text,
        "ghcr.io/acme/worker",
        &new_ref(Some("v0.9.1")),
        &opts(),
    )
    .unwrap();
    assert!(
        out.contains(&format!(
            "    newTag: 'v0.9.1'     # quoted on purpose\n    digest: '{NEW}'\n"
        )),
        "{out}"
    );
}

#[test]
fn raw_rewrite_pins_every_container_of_the_image_keeping_double_quotes() {
    let text = fixture("workloads.yaml");
    let (out, n) = rewrite_image(
        "workloads.yaml",
        &text,
        "ghcr.io/acme/payments-api",
        &new_ref(Some("1.4.2")),
        &opts(),
    )
    .unwrap();
    assert_eq!(n, 2, "init container and main container");
    insta::assert_snapshot!(out);
}

#[test]
fn raw_plain_image_is_pinned_in_place() {
    let text = "spec:\n  containers:\n    - image: repo:1.2 # keep\n";
    let (out, n) = rewrite_image("pod.yaml", text, "repo", &new_ref(Some("1.3")), &opts()).unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        out,
        format!("spec:\n  containers:\n    - image: repo:1.3@{NEW} # keep\n")
    );
}

#[test]
fn raw_single_quoted_image_in_second_document() {
    let text = fixture("workloads.yaml");
    let (out, _) = rewrite_image(
        "workloads.yaml",
        &text,
        "ghcr.io/acme/reconciler",
        &new_ref(None),
        &opts(),
    )
    .unwrap();
    assert!(
        out.contains(&format!(
            "              image: 'ghcr.io/acme/reconciler:2024.06.1@{NEW}'\n"
        )),
        "{out}"
    );
}

#[test]
fn helm_values_with_registry_update_tag_and_add_digest_after_tag() {
    let text = fixture("values-prod.yaml");
    let (out, n) = rewrite_image(
        "values-prod.yaml",
        &text,
        "ghcr.io/acme/payments-api",
        &new_ref(Some("1.4.2")),
        &opts(),
    )
    .unwrap();
    assert_eq!(n, 1);
    insta::assert_snapshot!(out);
}

#[test]
fn helm_flow_mapping_and_nested_digest() {
    let text = fixture("values-prod.yaml");
    let (out, _) = rewrite_image(
        "values-prod.yaml",
        &text,
        "prom/statsd-exporter",
        &new_ref(Some("v0.27.0")),
        &opts(),
    )
    .unwrap();
    assert!(out.contains(&format!(
        "image: {{repository: prom/statsd-exporter, tag: v0.27.0, digest: {NEW}}}"
    )));
    let (out, _) = rewrite_image(
        "values-prod.yaml",
        &text,
        "ghcr.io/acme/worker",
        &new_ref(None),
        &opts(),
    )
    .unwrap();
    assert!(out.contains(&format!("    tag: v0.9.0\n    digest: {NEW}\n")), "{out}");
}

#[test]
fn helm_image_keys_restrict_what_counts() {
    let text = fixture("values-prod.yaml");
    let only_worker = DetectOptions {
        helm_image_keys: vec!["worker.image".into()],
    };
    let locs = find_images("values-prod.yaml", &text, &only_worker).unwrap();
    assert_eq!(locs.len(), 1);
    assert_eq!((locs[0].key_path.as_str(), locs[0].line), ("worker.image", 12));
    let custom = DetectOptions {
        helm_image_keys: vec!["metrics.exporter.image".into(), "image".into()],
    };
    assert_eq!(find_images("values-prod.yaml", &text, &custom).unwrap().len(), 2);
}

#[test]
fn helmrelease_values_are_helm_values() {
    let text = fixture("helmrelease.yaml");
    let locs = find_images("helmrelease.yaml", &text, &opts()).unwrap();
    assert_eq!(locs.len(), 1);
    assert_eq!(
        (locs[0].form, locs[0].key_path.as_str()),
        (Form::HelmRelease, "spec.values.image")
    );
    let (out, _) = rewrite_image(
        "helmrelease.yaml",
        &text,
        "ghcr.io/acme/ledger",
        &new_ref(Some("2.0.4")),
        &opts(),
    )
    .unwrap();
    insta::assert_snapshot!(out);
    // In a HelmRelease the configured key paths are relative to `spec.values`, as chart users write them.
    let keyed = DetectOptions {
        helm_image_keys: vec!["image".into()],
    };
    assert_eq!(find_images("helmrelease.yaml", &text, &keyed).unwrap().len(), 1);
}

#[test]
fn crlf_file_keeps_every_line_ending() {
    let text = fixture("pod-crlf.yaml");
    assert!(
        text.contains("  name: debug  \r\n"),
        "the fixture must be CRLF with trailing blanks"
    );
    let (out, n) = rewrite_image("pod-crlf.yaml", &text, "busybox", &new_ref(Some("1.37")), &opts()).unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        out,
        text.replace("image: busybox:1.36\r\n", &format!("image: busybox:1.37@{NEW}\r\n"))
    );
}

#[test]
fn crlf_inserted_digest_line_uses_crlf() {
    let text = "images:\r\n  - name: api\r\n    newTag: v1\r\n# end\r\n";
    let (out, _) = rewrite_image("kustomization.yml", text, "api", &new_ref(None), &opts()).unwrap();
    assert_eq!(
        out,
        format!("images:\r\n  - name: api\r\n    newTag: v1\r\n    digest: {NEW}\r\n# end\r\n")
    );
}

#[test]
fn last_line_without_newline_gets_one_before_the_digest() {
    let text = "images:\n- name: api\n  newTag: v1";
    let (out, _) = rewrite_image("Kustomization", text, "api", &new_ref(None), &opts()).unwrap();
    assert_eq!(out, format!("images:\n- name: api\n  newTag: v1\n  digest: {NEW}"));
}

#[test]
fn non_ascii_comments_before_the_image_do_not_shift_the_splice() {
    let text = fixture("unicode.yaml");
    let (out, n) = rewrite_image(
        "unicode.yaml",
        &text,
        "docker.io/library/postgres",
        &new_ref(Some("16.4")),
        &opts(),
    )
    .unwrap();
    assert_eq!(n, 1);
    insta::assert_snapshot!(out);
}

#[test]
fn already_pinned_reference_is_left_alone() {
    let text = format!("containers:\n- image: repo:1.3@{NEW}\n");
    let (out, n) = rewrite_image("p.yaml", &text, "repo", &new_ref(Some("1.3")), &opts()).unwrap();
    assert_eq!((out.as_str(), n), (text.as_str(), 0));
}

#[test]
fn plain_tag_that_would_read_as_a_number_is_quoted() {
    let text = "images:\n- name: api\n  newTag: v1.2\n";
    let (out, _) = rewrite_image("kustomization.yaml", text, "api", &new_ref(Some("1.30")), &opts()).unwrap();
    assert!(out.contains("  newTag: \"1.30\"\n"), "{out}");
}

#[test]
fn unknown_image_is_not_found() {
    let err = rewrite_image(
        "workloads.yaml",
        &fixture("workloads.yaml"),
        "nope",
        &new_ref(None),
        &opts(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        ManifestError::NotFound {
            file: "workloads.yaml".into(),
            name: "nope".into()
        }
    );
}

#[test]
fn aliases_anchors_tags_and_block_scalars_are_refused() {
    let cases = [
        ("containers:\n- image: &img repo:1\n- image: *img\n", 2),
        ("containers:\n- image: |-\n    repo:1\n", 3),
        ("containers:\n- image: !!str repo:1\n", 2),
        ("base: &c\n  image: repo:1\ncontainers:\n- *c\n", 2),
        (
            "containers:\n- image: repo:1\n  # a comment\n- image: \"repo:\\\n    1\"\n",
            4,
        ),
        ("containers:\n- image: # pinned below\n    repo:1\n", 3),
    ];
    for (text, line) in cases {
        let err = rewrite_image("p.yaml", text, "repo", &new_ref(None), &opts()).unwrap_err();
        assert!(
            matches!(&err, ManifestError::Unsupported { line: l, .. } if *l == line),
            "{text}: {err}"
        );
    }
}

#[test]
fn removing_a_digest_is_refused() {
    let text = format!("images:\n- name: api\n  digest: {NEW}\n");
    let new = ImageRef {
        name: "api".into(),
        tag: Some("v2".into()),
        digest: None,
    };
    let err = rewrite_image("kustomization.yaml", &text, "api", &new, &opts()).unwrap_err();
    assert!(matches!(err, ManifestError::Unsupported { line: 3, .. }), "{err}");
}

#[test]
fn malformed_yaml_reports_file_line_and_column() {
    let err = find_images("bad.yaml", "a: 1\nb: [\n", &opts()).unwrap_err();
    assert!(
        matches!(&err, ManifestError::Yaml { file, line: 3, column: 1, .. } if file == "bad.yaml"),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("bad.yaml:3:1: invalid YAML: "), "{err}");
    let err = find_images("dup.yaml", "a: 1\na: 2\n", &opts()).unwrap_err();
    assert!(matches!(err, ManifestError::Yaml { line: 2, .. }));
}

#[test]
fn bad_image_reports_key_path() {
    let err = find_images("p.yaml", "spec:\n  containers:\n  - image: 'repo:'\n", &opts()).unwrap_err();
    assert!(
        matches!(&err, ManifestError::BadImage { line: 3, key_path, .. } if key_path == "spec.containers[0].image"),
        "{err}"
    );
}

#[test]
fn garbage_never_panics() {
    for text in [
        "{{ .Values.image }}",
        "- [",
        "\t- a",
        "a: 'x",
        "? ? ?",
        "*x",
        "&a [*a]",
        "\u{feff}a: b",
        ":",
        "---\n...\n---",
    ] {
        let _ = find_images("x.yaml", text, &opts());
        let _ = rewrite_image("x.yaml", text, "x", &new_ref(None), &opts());
    }
}

/// The byte-exactness property: rewriting any image of any fixture changes only the lines holding
/// that image's scalars, plus the one inserted `digest:` line per entry that had none.
#[test]
fn rewrites_touch_only_target_lines() {
    for name in FIXTURES {
        let text = fixture(name);
        let found = scan(name, &text, &opts()).unwrap();
        let mut images: Vec<&str> = found.iter().map(|f| f.location.image.name.as_str()).collect();
        images.dedup();
        for image in images {
            let mut allowed = std::collections::BTreeSet::new();
            let mut inserts = 0;
            for f in found.iter().filter(|f| f.location.image.name == image) {
                match &f.slots {
                    Slots::Whole { scalar, .. } => {
                        allowed.insert(scalar.line);
                    }
                    Slots::Fields {
                        tag,
                        digest,
                        anchor,
                        flow,
                        ..
                    } => {
                        allowed.extend(tag.iter().map(|n| n.line));
                        allowed.extend(digest.iter().map(|n| n.line));
                        if digest.is_none() {
                            if *flow {
                                allowed.insert(anchor.line);
                            } else {
                                inserts += 1;
                            }
                        }
                    }
                }
            }
            let (out, _) = rewrite_image(name, &text, image, &new_ref(Some("9.9.9")), &opts()).unwrap();
            let old: Vec<&str> = text.split_inclusive('\n').collect();
            let new: Vec<&str> = out.split_inclusive('\n').collect();
            let (mut i, mut j, mut inserted) = (0, 0, 0);
            while i < old.len() || j < new.len() {
                if i < old.len() && j < new.len() && old[i] == new[j] {
                    i += 1;
                    j += 1;
                } else if j < new.len() && new[j].trim_start().starts_with("digest: ") && old.get(i) == new.get(j + 1) {
                    inserted += 1;
                    j += 1;
                } else {
                    assert!(
                        allowed.contains(&(i + 1)),
                        "{name}/{image}: line {} changed: {:?}",
                        i + 1,
                        new.get(j)
                    );
                    i += 1;
                    j += 1;
                }
            }
            assert_eq!(inserted, inserts, "{name}/{image}: inserted digest lines");
            let after = find_images(name, &out, &opts()).unwrap();
            assert!(after.iter().filter(|l| l.image.name == image).all(|l| l
                .image
                .digest
                .as_ref()
                .map(Digest::as_str)
                == Some(NEW)));
        }
    }
}

#[test]
fn byte_order_mark_and_multibyte_text_on_the_same_line_keep_offsets_right() {
    let text = "\u{feff}containers: [{name: \"café ☕\", image: repo:1}]   # ünïcode\n";
    let (out, n) = rewrite_image("p.yaml", text, "repo", &new_ref(Some("2")), &opts()).unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        out,
        format!("\u{feff}containers: [{{name: \"café ☕\", image: repo:2@{NEW}}}]   # ünïcode\n")
    );
}
