//! `tollgate demo`: the whole gate on embedded defaults. It builds a throw-away world (a bare git
//! repository with `staging` and `prod`, an OCI-layout evidence store, a generated signing key),
//! pushes two image bumps into staging as Flux image automation would, runs the daemon once, and
//! prints what a release manager reads: the promotion commit in prod and the block note in staging.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;

use crate::dsse::{Envelope, Statement, INTOTO_PAYLOAD_TYPE};
use crate::gate::evidence::EvidenceStore as _;
use crate::image::{Digest, ImageRef};
use crate::keys::SigningKey;
use crate::oci::LayoutStore;

const REGISTRY: &str = "registry.demo";

const CONFIG: &str = r#"version: 1
listen: 127.0.0.1:0
state_dir: ./state
repositories:
  envs:
    url: "{url}"
    branch: main
    poll_interval: 5s
    author: {name: tollgate, email: tollgate@demo.invalid}
registries:
  "registry.demo": {oci_layout: ./evidence}
trust:
  signers:
    release-key: {key: ./keys/release.pub}
contracts:
  release:
    materials:
      - {kind: IMAGE_SIGNATURE, signers: [release-key]}
      - {kind: SLSA_PROVENANCE, signers: [release-key]}
      - {kind: SBOM_CYCLONEDX_JSON, signers: [release-key]}
policies:
  prod:
    contract: release
    mode: enforce
    rules: {digest_pinned: true, no_latest_tag: true}
environments:
  staging: {repository: envs, path: clusters/staging}
  prod: {repository: envs, path: clusters/prod, promote_from: staging, policy: prod}
"#;

fn kustomization(env: &str, images: &[(&str, &str, &Digest)]) -> String {
    let mut s = format!(
        "# {env}: deployed by Argo CD / Flux from this folder.\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - deployment.yaml\nimages:\n"
    );
    for (name, tag, digest) in images {
        s.push_str(&format!(
            "  - name: {REGISTRY}/acme/{name}\n    newTag: \"{tag}\"   # bumped by image automation\n    digest: {digest}\n"
        ));
    }
    s
}

const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: shop\nspec:\n  template:\n    spec:\n      containers:\n        - name: payments\n          image: registry.demo/acme/payments-api\n        - name: checkout\n          image: registry.demo/acme/checkout\n";

/// Returns the tree `base` with the blob at `path` (components) replaced or added.
fn put(
    repo: &git2::Repository,
    base: Option<git2::Tree<'_>>,
    path: &[&str],
    blob: git2::Oid,
) -> Result<git2::Oid, git2::Error> {
    let mut builder = repo.treebuilder(base.as_ref())?;
    match path {
        [file] => {
            builder.insert(file, blob, 0o100644)?;
        }
        [dir, rest @ ..] => {
            let sub = base
                .as_ref()
                .and_then(|t| t.get_name(dir))
                .and_then(|e| e.to_object(repo).ok())
                .and_then(|o| o.into_tree().ok());
            let id = put(repo, sub, rest, blob)?;
            builder.insert(dir, id, 0o040000)?;
        }
        [] => {}
    }
    builder.write()
}

/// Writes `files` on top of `refs/heads/main` in a bare repository and moves the branch to it,
/// as a push from Flux image automation would.
fn commit(repo: &git2::Repository, files: &[(&str, &str)], message: &str) -> anyhow::Result<git2::Oid> {
    let parent = repo
        .find_reference("refs/heads/main")
        .ok()
        .and_then(|r| r.peel_to_commit().ok());
    let mut tree = parent.as_ref().map(|p| p.tree()).transpose()?;
    for (path, text) in files {
        let blob = repo.blob(text.as_bytes())?;
        let parts: Vec<&str> = path.split('/').collect();
        let id = put(repo, tree, &parts, blob)?;
        tree = Some(repo.find_tree(id)?);
    }
    let tree = tree.context("no files to commit")?;
    let sig = git2::Signature::now("Flux image automation", "flux@demo.invalid")?;
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    Ok(repo.commit(Some("refs/heads/main"), &sig, &sig, message, &tree, &parents)?)
}

async fn attest(
    store: &LayoutStore,
    key: &SigningKey,
    image: &ImageRef,
    digest: &Digest,
    predicate_type: &str,
    predicate: serde_json::Value,
) -> anyhow::Result<()> {
    let statement = Statement::new(&image.name, digest, predicate_type, predicate);
    let envelope = Envelope::sign(INTOTO_PAYLOAD_TYPE, &serde_json::to_vec(&statement)?, key);
    store
        .attach_attestation(image, digest, &envelope.to_json(), predicate_type)
        .await?;
    Ok(())
}

async fn sign(store: &LayoutStore, key: &SigningKey, image: &ImageRef, digest: &Digest) -> anyhow::Result<()> {
    let payload = serde_json::json!({
        "critical": {
            "identity": {"docker-reference": image.name},
            "image": {"docker-manifest-digest": digest.as_str()},
            "type": "cosign container image signature"
        },
        "optional": null
    });
    let bytes = serde_json::to_vec(&payload)?;
    let sig = crate::dsse::encode_b64(&key.sign(&bytes));
    store
        .attach_signature(image, digest, &bytes, &sig, &std::collections::BTreeMap::new())
        .await?;
    Ok(())
}

fn provenance(name: &str) -> serde_json::Value {
    serde_json::json!({
        "buildDefinition": {
            "buildType": "https://actions.github.io/buildtypes/workflow/v1",
            "externalParameters": {"workflow": {"repository": format!("https://github.com/acme/{name}"), "ref": "refs/tags/v1", "path": ".github/workflows/release.yml"}},
            "resolvedDependencies": [{"uri": format!("git+https://github.com/acme/{name}@refs/tags/v1"), "digest": {"gitCommit": "b4e0c6f1d2a3b4c5d6e7f8091a2b3c4d5e6f7081"}}]
        },
        "runDetails": {"builder": {"id": "https://github.com/actions/runner/github-hosted"}}
    })
}

fn sbom(name: &str) -> serde_json::Value {
    serde_json::json!({
        "bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
        "metadata": {"component": {"type": "container", "name": name}},
        "components": [{"type": "library", "name": "openssl", "version": "3.0.15", "purl": "pkg:deb/debian/openssl@3.0.15"}]
    })
}

/// Runs the demo in `dir` (a fresh temporary folder when None) and prints the story to stdout.
pub async fn run(dir: Option<PathBuf>) -> anyhow::Result<()> {
    let tmp;
    let root: &Path = match &dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d
        }
        None => {
            tmp = tempfile::Builder::new().prefix("tollgate-demo-").tempdir()?;
            tmp.path()
        }
    };
    let root = root.canonicalize()?;
    println!("tollgate demo in {}\n", root.display());

    // Keys: what `cosign generate-key-pair` gives a release team.
    std::fs::create_dir_all(root.join("keys"))?;
    let key = SigningKey::generate();
    std::fs::write(root.join("keys/release.pub"), key.public_pem())?;
    std::fs::write(root.join("keys/release.key"), key.to_pem())?;

    // The registry: an OCI image layout per repository, with cosign-style .sig and .att tags.
    let store = LayoutStore::new(REGISTRY, root.join("evidence"));
    let payments = ImageRef::parse(&format!("{REGISTRY}/acme/payments-api"))?;
    let checkout = ImageRef::parse(&format!("{REGISTRY}/acme/checkout"))?;
    let mut digests = Vec::new();
    for (image, tag) in [
        (&payments, "1.4.1"),
        (&payments, "1.4.2"),
        (&checkout, "1.9.0"),
        (&checkout, "2.0.0"),
    ] {
        let content = format!("{} {}\n", image.name, tag);
        let d = store.create_image(&image.repository(), tag, &[("app/VERSION", content.as_bytes())])?;
        digests.push(d);
    }
    let (pay_old, pay_new, co_old, co_new) = (&digests[0], &digests[1], &digests[2], &digests[3]);
    // payments-api 1.4.2: signed, with provenance and an SBOM. checkout 2.0.0: no SBOM.
    sign(&store, &key, &payments, pay_new).await?;
    attest(
        &store,
        &key,
        &payments,
        pay_new,
        "https://slsa.dev/provenance/v1",
        provenance("payments-api"),
    )
    .await?;
    attest(
        &store,
        &key,
        &payments,
        pay_new,
        "https://cyclonedx.org/bom",
        sbom("payments-api"),
    )
    .await?;
    sign(&store, &key, &checkout, co_new).await?;
    attest(
        &store,
        &key,
        &checkout,
        co_new,
        "https://slsa.dev/provenance/v1",
        provenance("checkout"),
    )
    .await?;
    println!("evidence store: payments-api:1.4.2 signed + SLSA provenance + CycloneDX SBOM; checkout:2.0.0 signed + SLSA provenance, no SBOM");

    // The environment repository, as Argo CD / Flux would deploy it.
    let bare = root.join("envs.git");
    let repo = git2::Repository::init_bare(&bare)?;
    commit(
        &repo,
        &[
            (
                "clusters/staging/kustomization.yaml",
                &kustomization(
                    "staging",
                    &[("payments-api", "1.4.1", pay_old), ("checkout", "1.9.0", co_old)],
                ),
            ),
            ("clusters/staging/deployment.yaml", DEPLOYMENT),
            (
                "clusters/prod/kustomization.yaml",
                &kustomization(
                    "prod",
                    &[("payments-api", "1.4.1", pay_old), ("checkout", "1.9.0", co_old)],
                ),
            ),
            ("clusters/prod/deployment.yaml", DEPLOYMENT),
        ],
        "initial environments",
    )?;
    let url = format!("file://{}", bare.display());
    std::fs::write(root.join("tollgate.yaml"), CONFIG.replace("{url}", &url))?;
    let config = crate::config::load(&root.join("tollgate.yaml")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let stores = crate::oci::Stores::from_config(&config)?;
    let gate = Arc::new(crate::pipeline::Gate {
        config: Arc::new(config),
        stores,
        metrics: Arc::new(crate::telemetry::Metrics::new()),
    });
    let daemon = crate::daemon::Daemon::open(gate.clone())?;
    report(
        "first pass (takes the current staging head as its baseline)",
        daemon.pass().await,
    )?;

    // Image automation bumps staging, one commit per image.
    let bump_pay = commit(
        &repo,
        &[(
            "clusters/staging/kustomization.yaml",
            &kustomization(
                "staging",
                &[("payments-api", "1.4.2", pay_new), ("checkout", "1.9.0", co_old)],
            ),
        )],
        "chore(staging): bump payments-api to 1.4.2",
    )?;
    let bump_co = commit(
        &repo,
        &[(
            "clusters/staging/kustomization.yaml",
            &kustomization(
                "staging",
                &[("payments-api", "1.4.2", pay_new), ("checkout", "2.0.0", co_new)],
            ),
        )],
        "chore(staging): bump checkout to 2.0.0",
    )?;
    println!(
        "pushed to staging: {} (payments-api 1.4.2), {} (checkout 2.0.0)",
        &bump_pay.to_string()[..7],
        &bump_co.to_string()[..7]
    );
    report("second pass (evaluates both bumps for prod)", daemon.pass().await)?;
    // A restart changes nothing: git is the state.
    report("third pass (idempotent: nothing new to decide)", daemon.pass().await)?;

    let head = repo.find_reference("refs/heads/main")?.peel_to_commit()?;
    println!("\n== git log -1 main (the promotion commit in prod)\n");
    println!(
        "commit {}\nAuthor: {} <{}>\n",
        head.id(),
        head.author().name().unwrap_or(""),
        head.author().email().unwrap_or("")
    );
    for line in head.message().unwrap_or("").lines() {
        println!("    {line}");
    }
    println!(
        "\n== git notes --ref=tollgate show {} (why checkout 2.0.0 was not promoted)\n",
        &bump_co.to_string()[..7]
    );
    let note = repo
        .find_note(Some(crate::git::NOTES_REF), bump_co)
        .context("the block note is missing")?;
    println!("{}", note.message().unwrap_or(""));
    let prod = repo.find_blob(
        head.tree()?
            .get_path(Path::new("clusters/prod/kustomization.yaml"))?
            .id(),
    )?;
    println!(
        "== clusters/prod/kustomization.yaml after the promotion\n\n{}",
        String::from_utf8_lossy(prod.content())
    );
    if dir.is_none() {
        println!("(the demo's files were in a temporary folder; pass --dir DIR to keep them)");
    }
    Ok(())
}

fn report(
    title: &str,
    reports: std::collections::BTreeMap<String, Result<crate::daemon::PassReport, crate::daemon::DaemonError>>,
) -> anyhow::Result<()> {
    println!("\n-- {title}");
    for (env, r) in reports {
        let r = r.with_context(|| format!("processing {env}"))?;
        println!(
            "   {env}: {} promoted, {} blocked, {} deferred, {} skipped",
            r.promoted, r.blocked, r.deferred, r.skipped
        );
    }
    Ok(())
}
