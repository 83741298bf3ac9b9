//! `tollgate attest`: sign an in-toto statement about an image and attach it in the cosign `.att` layout.

use std::path::Path;

use anyhow::Context as _;

use crate::config::Config;
use crate::dsse::{Envelope, Statement, INTOTO_PAYLOAD_TYPE};
use crate::image::ImageRef;
use crate::keys::SigningKey;

/// Returns a one-line summary of what was attached.
pub async fn attest(
    key: &Path,
    predicate_type: &str,
    predicate: &Path,
    config: Option<&Config>,
    image: &str,
) -> anyhow::Result<String> {
    let image = ImageRef::parse(image)?;
    let digest = image.digest.clone().with_context(|| {
        format!("{image} has no digest: attest IMAGE@sha256:… so the statement names exactly one image")
    })?;
    let key_pem = std::fs::read_to_string(key).with_context(|| format!("reading key {}", key.display()))?;
    let key = SigningKey::from_pem(&key_pem)?;
    let predicate_text =
        std::fs::read_to_string(predicate).with_context(|| format!("reading predicate {}", predicate.display()))?;
    let predicate_json: serde_json::Value =
        serde_json::from_str(&predicate_text).with_context(|| format!("{} is not JSON", predicate.display()))?;
    let statement = Statement::new(&image.name, &digest, predicate_type, predicate_json);
    let payload = serde_json::to_vec(&statement)?;
    let envelope = Envelope::sign(INTOTO_PAYLOAD_TYPE, &payload, &key);
    let stores = match config {
        Some(c) => crate::oci::Stores::from_config(c)?,
        None => crate::oci::Stores::from_stores(std::iter::empty())?,
    };
    stores
        .for_image(&image)
        .attach_attestation(&image, &digest, &envelope.to_json(), predicate_type)
        .await?;
    Ok(format!(
        "attached {predicate_type} attestation to {}@{} ({})",
        image.name,
        digest,
        digest.cosign_tag("att")
    ))
}
