//! Reason codes: the stable kebab-case strings that appear in trailers, metric labels, JSON and docs.

use std::fmt;
use std::str::FromStr;

/// Why a rule failed, warned or was waived. The string form is part of tollgate's public contract
/// (SPEC §7): never rename a variant's string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReasonCode {
    SignatureMissing,
    SignatureInvalid,
    IdentityMismatch,
    TlogInvalid,
    SubjectMismatch,
    MaterialMissing,
    DigestNotPinned,
    LatestTag,
    VulnerabilitiesOverThreshold,
    SarifErrors,
    ProvenanceSourceMismatch,
    ProvenanceBuilderMismatch,
    UpstreamNotPromoted,
    SoakTimeNotMet,
    ChainloopBlocked,
    RegoViolation,
    EvidenceUnavailable,
    Waived,
}

impl ReasonCode {
    pub const ALL: [ReasonCode; 18] = [
        ReasonCode::SignatureMissing,
        ReasonCode::SignatureInvalid,
        ReasonCode::IdentityMismatch,
        ReasonCode::TlogInvalid,
        ReasonCode::SubjectMismatch,
        ReasonCode::MaterialMissing,
        ReasonCode::DigestNotPinned,
        ReasonCode::LatestTag,
        ReasonCode::VulnerabilitiesOverThreshold,
        ReasonCode::SarifErrors,
        ReasonCode::ProvenanceSourceMismatch,
        ReasonCode::ProvenanceBuilderMismatch,
        ReasonCode::UpstreamNotPromoted,
        ReasonCode::SoakTimeNotMet,
        ReasonCode::ChainloopBlocked,
        ReasonCode::RegoViolation,
        ReasonCode::EvidenceUnavailable,
        ReasonCode::Waived,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::SignatureMissing => "signature-missing",
            ReasonCode::SignatureInvalid => "signature-invalid",
            ReasonCode::IdentityMismatch => "identity-mismatch",
            ReasonCode::TlogInvalid => "tlog-invalid",
            ReasonCode::SubjectMismatch => "subject-mismatch",
            ReasonCode::MaterialMissing => "material-missing",
            ReasonCode::DigestNotPinned => "digest-not-pinned",
            ReasonCode::LatestTag => "latest-tag",
            ReasonCode::VulnerabilitiesOverThreshold => "vulnerabilities-over-threshold",
            ReasonCode::SarifErrors => "sarif-errors",
            ReasonCode::ProvenanceSourceMismatch => "provenance-source-mismatch",
            ReasonCode::ProvenanceBuilderMismatch => "provenance-builder-mismatch",
            ReasonCode::UpstreamNotPromoted => "upstream-not-promoted",
            ReasonCode::SoakTimeNotMet => "soak-time-not-met",
            ReasonCode::ChainloopBlocked => "chainloop-blocked",
            ReasonCode::RegoViolation => "rego-violation",
            ReasonCode::EvidenceUnavailable => "evidence-unavailable",
            ReasonCode::Waived => "waived",
        }
    }

    /// The one-line description mirrored in `docs/reason-codes.md`.
    pub fn description(self) -> &'static str {
        match self {
            ReasonCode::SignatureMissing => "The image has no signature of the kind the contract requires.",
            ReasonCode::SignatureInvalid => "Evidence is present but no configured key or identity verifies its signature, or the envelope is malformed.",
            ReasonCode::IdentityMismatch => "A keyless signature verifies, but its certificate identity (issuer, subject) is not one the contract accepts.",
            ReasonCode::TlogInvalid => "The transparency-log entry (signed entry timestamp, inclusion proof) does not verify or does not match the signature.",
            ReasonCode::SubjectMismatch => "The signed statement is about another digest than the candidate image.",
            ReasonCode::MaterialMissing => "No evidence of a required material kind was found for the candidate.",
            ReasonCode::DigestNotPinned => "The upstream image reference carries no digest.",
            ReasonCode::LatestTag => "The upstream image reference uses the `latest` tag (or no tag at all).",
            ReasonCode::VulnerabilitiesOverThreshold => "Verified vulnerability evidence reports more findings of a severity than the policy allows.",
            ReasonCode::SarifErrors => "Verified SARIF evidence reports more error-level results than the policy allows.",
            ReasonCode::ProvenanceSourceMismatch => "Verified provenance names a source repository or ref the policy does not allow.",
            ReasonCode::ProvenanceBuilderMismatch => "Verified provenance names a builder the policy does not allow.",
            ReasonCode::UpstreamNotPromoted => "The candidate was not promoted into the required upstream environment by tollgate.",
            ReasonCode::SoakTimeNotMet => "The candidate has not been in the upstream environment for the required soak time.",
            ReasonCode::ChainloopBlocked => "A Chainloop attestation for the candidate is blocked by its policies, has gated violations, or was bypassed.",
            ReasonCode::RegoViolation => "A Rego policy reported a violation.",
            ReasonCode::EvidenceUnavailable => "Evidence could not be fetched (registry unreachable or failing: the decision is deferred) or was unusable (over a size limit, wrong digest: blocked).",
            ReasonCode::Waived => "A failure was waived by an unexpired entry in the environment repository's waivers file.",
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown reason code `{0}`")]
pub struct UnknownReason(pub String);

impl FromStr for ReasonCode {
    type Err = UnknownReason;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ReasonCode::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownReason(s.to_string()))
    }
}

impl serde::Serialize for ReasonCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_string() {
        for code in ReasonCode::ALL {
            assert_eq!(code.as_str().parse::<ReasonCode>().unwrap(), code);
            assert!(!code.description().is_empty());
        }
        assert!("allow".parse::<ReasonCode>().is_err());
    }
}

#[cfg(test)]
mod docs_tests {
    use super::ReasonCode;

    #[test]
    fn docs_list_every_code_with_its_description() {
        let docs = include_str!("../docs/reason-codes.md");
        for code in ReasonCode::ALL {
            let row = format!("| `{}` | {} |", code.as_str(), code.description());
            assert!(docs.contains(&row), "docs/reason-codes.md lacks the row:\n{row}");
        }
    }
}
