//! The flow of SPEC §1, one file per stage, in order:
//! [`detect`] (manifests → image bumps, pure) → [`evidence`] (registry / OCI layout → raw evidence, I/O)
//! → [`verify`] (raw evidence + trust → materials, pure) → [`policy`] (materials + rules → rule results,
//! pure) → [`decide`] (results + mode → decision, pure) → [`record`] (decision → commit or note, I/O).
//!
//! The types every stage shares live here.

pub mod decide;
pub mod detect;
pub mod evidence;
pub mod policy;
pub mod promotion;
pub mod record;
pub mod rego;
pub mod rules;
pub mod upstream;
pub mod verify;
pub mod waivers;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::image::{Digest, ImageRef};
use crate::reason::ReasonCode;

/// The kinds of material a contract can require (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MaterialKind {
    ImageSignature,
    SlsaProvenance,
    SbomCyclonedxJson,
    SbomSpdxJson,
    Sarif,
    VulnerabilityReport,
    Openvex,
    ChainloopAttestation,
    Promotion,
    Attestation,
}

impl MaterialKind {
    pub const ALL: [MaterialKind; 10] = [
        MaterialKind::ImageSignature,
        MaterialKind::SlsaProvenance,
        MaterialKind::SbomCyclonedxJson,
        MaterialKind::SbomSpdxJson,
        MaterialKind::Sarif,
        MaterialKind::VulnerabilityReport,
        MaterialKind::Openvex,
        MaterialKind::ChainloopAttestation,
        MaterialKind::Promotion,
        MaterialKind::Attestation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MaterialKind::ImageSignature => "IMAGE_SIGNATURE",
            MaterialKind::SlsaProvenance => "SLSA_PROVENANCE",
            MaterialKind::SbomCyclonedxJson => "SBOM_CYCLONEDX_JSON",
            MaterialKind::SbomSpdxJson => "SBOM_SPDX_JSON",
            MaterialKind::Sarif => "SARIF",
            MaterialKind::VulnerabilityReport => "VULNERABILITY_REPORT",
            MaterialKind::Openvex => "OPENVEX",
            MaterialKind::ChainloopAttestation => "CHAINLOOP_ATTESTATION",
            MaterialKind::Promotion => "PROMOTION",
            MaterialKind::Attestation => "ATTESTATION",
        }
    }

    /// The in-toto predicate types that satisfy this kind by default. `ATTESTATION` has none: it
    /// always names its `predicate_type`. `IMAGE_SIGNATURE` is also satisfied by a cosign `.sig`.
    pub fn predicate_types(self) -> &'static [&'static str] {
        match self {
            MaterialKind::ImageSignature => &["https://sigstore.dev/cosign/sign/v1"],
            MaterialKind::SlsaProvenance => &["https://slsa.dev/provenance/v1", "https://slsa.dev/provenance/v0.2"],
            MaterialKind::SbomCyclonedxJson => &["https://cyclonedx.org/bom"],
            MaterialKind::SbomSpdxJson => &["https://spdx.dev/Document"],
            MaterialKind::Sarif => &[
                "https://sarifweb.azurewebsites.net/sarif",
                "https://docs.oasis-open.org/sarif/sarif/v2.1.0",
            ],
            MaterialKind::VulnerabilityReport => &[
                "https://cosign.sigstore.dev/attestation/vuln/v1",
                "https://in-toto.io/attestation/vulns/v0.1",
            ],
            MaterialKind::Openvex => &["https://openvex.dev/ns"],
            MaterialKind::ChainloopAttestation => &["chainloop.dev/attestation/v0.2"],
            MaterialKind::Promotion => &[PROMOTION_PREDICATE_TYPE],
            MaterialKind::Attestation => &[],
        }
    }

    /// Does a statement of `predicate_type` satisfy this kind? Versioned forms such as
    /// `https://cyclonedx.org/bom/v1.5` and `https://spdx.dev/Document/v2.3` count too.
    pub fn accepts_predicate(self, predicate_type: &str) -> bool {
        self.predicate_types().iter().any(|p| {
            predicate_type == *p
                || (predicate_type.starts_with(p) && predicate_type[p.len()..].starts_with('/'))
                || (*p == "https://openvex.dev/ns" && predicate_type.starts_with("https://openvex.dev/ns/"))
        })
    }

    /// The kind a predicate type belongs to by default (`ATTESTATION` if none).
    pub fn for_predicate(predicate_type: &str) -> MaterialKind {
        MaterialKind::ALL
            .into_iter()
            .find(|k| k.accepts_predicate(predicate_type))
            .unwrap_or(MaterialKind::Attestation)
    }
}

pub const PROMOTION_PREDICATE_TYPE: &str = "https://tollgate.dev/promotion/v1";

impl fmt::Display for MaterialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MaterialKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        MaterialKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown material kind `{s}`"))
    }
}

impl serde::Serialize for MaterialKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Where a piece of raw evidence was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EvidenceSource {
    /// A layer of the cosign `sha256-<hex>.att` manifest (a DSSE envelope).
    Att,
    /// A layer of the cosign `sha256-<hex>.sig` manifest (a simple-signing payload).
    Sig,
    /// A Sigstore bundle found through the referrers API or its tag fallback.
    Bundle,
}

impl EvidenceSource {
    pub fn as_str(self) -> &'static str {
        match self {
            EvidenceSource::Att => "att",
            EvidenceSource::Sig => "sig",
            EvidenceSource::Bundle => "bundle",
        }
    }
}

/// One layer of evidence as fetched, not yet trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvidence {
    pub source: EvidenceSource,
    pub media_type: String,
    /// The digest of `bytes` (the layer's descriptor digest, re-checked on fetch).
    pub digest: Digest,
    pub bytes: Vec<u8>,
    /// The layer descriptor's annotations (`predicateType`, `dev.cosignproject.cosign/signature`, …).
    pub annotations: BTreeMap<String, String>,
}

/// Who verified a material: the name of a configured signer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct SignerMatch {
    pub signer: String,
    /// `key` or `keyless`.
    pub method: &'static str,
    /// For `keyless`: the verified certificate's identity and GitHub workflow claims, so that rules and
    /// Rego can bind a repository or ref the signer's subject pattern does not pin (reusable workflows
    /// sign as the shared workflow, not as the calling repository). `None` for keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<Box<CertificateIdentity>>,
}

/// The identity of a verified Fulcio certificate: its SAN and OIDC issuer, and the GitHub workflow
/// claims Fulcio records (OIDs `1.3.6.1.4.1.57264.1.9`–`.22`; names as in Fulcio's `oid-info.md`).
/// Absent claims serialise as `null`, so a Rego policy can test for them without `object.get`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct CertificateIdentity {
    pub issuer: Option<String>,
    pub subject: Option<String>,
    pub build_signer_uri: Option<String>,
    pub build_signer_digest: Option<String>,
    pub runner_environment: Option<String>,
    pub source_repository_uri: Option<String>,
    pub source_repository_digest: Option<String>,
    pub source_repository_ref: Option<String>,
    pub source_repository_identifier: Option<String>,
    pub source_repository_owner_uri: Option<String>,
    pub source_repository_owner_identifier: Option<String>,
    pub source_repository_visibility: Option<String>,
    pub build_config_uri: Option<String>,
    pub build_config_digest: Option<String>,
    pub build_trigger: Option<String>,
    pub run_invocation_uri: Option<String>,
}

impl CertificateIdentity {
    /// The claim names `trust.signers.<name>.keyless.claims` accepts: every field but `issuer` and
    /// `subject` (configured on their own), and the short forms `source_repository`, `source_ref` and
    /// `source_digest`.
    pub const CLAIMS: [&'static str; 17] = [
        "build_signer_uri",
        "build_signer_digest",
        "runner_environment",
        "source_repository_uri",
        "source_repository_digest",
        "source_repository_ref",
        "source_repository_identifier",
        "source_repository_owner_uri",
        "source_repository_owner_identifier",
        "source_repository_visibility",
        "build_config_uri",
        "build_config_digest",
        "build_trigger",
        "run_invocation_uri",
        "source_repository",
        "source_ref",
        "source_digest",
    ];

    /// The value of a claim named as in [`Self::CLAIMS`]; `None` when the certificate lacks it or the
    /// name is unknown (either way nothing can match it).
    pub fn claim(&self, name: &str) -> Option<&str> {
        let v = match name {
            "build_signer_uri" => &self.build_signer_uri,
            "build_signer_digest" => &self.build_signer_digest,
            "runner_environment" => &self.runner_environment,
            "source_repository_uri" | "source_repository" => &self.source_repository_uri,
            "source_repository_digest" | "source_digest" => &self.source_repository_digest,
            "source_repository_ref" | "source_ref" => &self.source_repository_ref,
            "source_repository_identifier" => &self.source_repository_identifier,
            "source_repository_owner_uri" => &self.source_repository_owner_uri,
            "source_repository_owner_identifier" => &self.source_repository_owner_identifier,
            "source_repository_visibility" => &self.source_repository_visibility,
            "build_config_uri" => &self.build_config_uri,
            "build_config_digest" => &self.build_config_digest,
            "build_trigger" => &self.build_trigger,
            "run_invocation_uri" => &self.run_invocation_uri,
            _ => return None,
        };
        v.as_deref()
    }
}

impl From<&crate::sigstore::Identity> for CertificateIdentity {
    fn from(id: &crate::sigstore::Identity) -> Self {
        let g = id.github.clone();
        CertificateIdentity {
            issuer: id.issuer.clone(),
            subject: id.subject.clone(),
            build_signer_uri: g.build_signer_uri,
            build_signer_digest: g.build_signer_digest,
            runner_environment: g.runner_environment,
            source_repository_uri: g.source_repository_uri,
            source_repository_digest: g.source_repository_digest,
            source_repository_ref: g.source_repository_ref,
            source_repository_identifier: g.source_repository_identifier,
            source_repository_owner_uri: g.source_repository_owner_uri,
            source_repository_owner_identifier: g.source_repository_owner_identifier,
            source_repository_visibility: g.source_repository_visibility,
            build_config_uri: g.build_config_uri,
            build_config_digest: g.build_config_digest,
            build_trigger: g.build_trigger,
            run_invocation_uri: g.run_invocation_uri,
        }
    }
}

/// A verified material: its signature checked against a configured signer, its subject the candidate.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Material {
    pub kind: MaterialKind,
    pub predicate_type: String,
    pub signer: SignerMatch,
    pub source: EvidenceSource,
    /// Digest of the envelope, signature layer or bundle that carried it.
    pub digest: Digest,
    /// The in-toto statement (for `.sig`, the simple-signing payload).
    pub statement: serde_json::Value,
}

/// Evidence that was found but does not count, with the reason a release manager will read.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Rejection {
    /// The predicate type it claims (from the annotation or the unverified payload), if any.
    pub predicate_type: Option<String>,
    pub kind: Option<MaterialKind>,
    pub source: EvidenceSource,
    pub digest: Digest,
    pub reason: ReasonCode,
    pub message: String,
}

/// The result of verifying everything fetched for one candidate.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Verified {
    pub materials: Vec<Material>,
    pub rejections: Vec<Rejection>,
}

/// An image whose reference changed in an environment between two commits.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageBump {
    /// Path of the file, relative to the repository root.
    pub file: String,
    pub before: Option<ImageRef>,
    pub after: ImageRef,
}

/// An image to evaluate for promotion into `environment`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Candidate {
    pub environment: String,
    /// The reference as written upstream (tag and digest as found).
    pub upstream_ref: ImageRef,
    /// The digest that is evaluated and promoted.
    pub digest: Digest,
    /// The upstream environment and the commit that introduced the image (`None` for `check`).
    pub source_environment: Option<String>,
    pub source_commit: Option<String>,
}

impl Candidate {
    pub fn pinned(&self) -> String {
        format!("{}@{}", self.upstream_ref.name, self.digest)
    }
}

/// The outcome of one rule or one contract material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    /// A failure recorded but not enforced (`warn` mode).
    Warn,
    /// A failure turned into a pass by a waiver.
    Waived,
    /// An optional material that was absent.
    Skip,
}

/// One line of an evaluation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RuleResult {
    /// `contract:SBOM_CYCLONEDX_JSON`, `digest_pinned`, …
    pub rule: String,
    pub outcome: Outcome,
    pub reason: Option<ReasonCode>,
    pub message: String,
    /// Digests of the evidence the rule relied on.
    pub evidence: Vec<Digest>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DecisionKind {
    Allow,
    Block,
    Defer,
}

impl DecisionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Allow => "allow",
            DecisionKind::Block => "block",
            DecisionKind::Defer => "defer",
        }
    }
}

impl fmt::Display for DecisionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
