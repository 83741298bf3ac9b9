//! The `upstream` rule (pure): the candidate digest must have been promoted into a named environment
//! by tollgate at least `soak` before `now`. This is the build-to-promotion chain across environments.
//!
//! Two kinds of proof, in this order (docs/promotion-attestation.md):
//! 1. a verified promotion attestation ([`crate::gate::promotion`]) for that environment, signed by a
//!    signer the contract lists for `PROMOTION`;
//! 2. failing that, an allow commit with tollgate's trailers in the environment's git history (found
//!    by `crate::context`).
//!
//! The attestation wins when present: anyone with push rights can write a commit with tollgate's
//! trailers, or rewrite history, but only the holder of the promoter key can sign a statement.

use std::time::Duration;

use time::OffsetDateTime;

use crate::config::UpstreamRule;
use crate::gate::promotion::AttestedPromotion;
use crate::gate::{Outcome, RuleResult};
use crate::image::Digest;
use crate::reason::ReasonCode;

/// One promotion tollgate recorded: a commit in an environment's repository, touching its path,
/// whose trailers say `Tollgate-Decision: allow` for that environment and image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Promotion {
    pub environment: String,
    /// `Tollgate-Image` as recorded (`name@digest`).
    pub image: String,
    pub digest: Digest,
    pub commit: String,
    #[serde(serialize_with = "rfc3339")]
    pub promoted_at: OffsetDateTime,
}

pub(crate) fn rfc3339<S: serde::Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::Error as _;
    let text = t
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(S::Error::custom)?;
    s.serialize_str(&text)
}

/// Reads a commit message: `Some` if it records tollgate's allow of an image into `environment`.
/// Only the trailer block counts (a quoted trailer in prose does not).
pub fn promotion_in(environment: &str, commit: &str, message: &str, committed_at: OffsetDateTime) -> Option<Promotion> {
    let trailers = crate::git::trailers(message);
    let value = |key: &str| {
        let mut values = trailers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str());
        // Two different values for one key is not something tollgate writes: refuse to guess.
        let first = values.next()?;
        values.all(|v| v == first).then_some(first)
    };
    if value("Tollgate-Decision")? != "allow" || value("Tollgate-Environment")? != environment {
        return None;
    }
    let image = value("Tollgate-Image")?;
    let (_, digest) = image.rsplit_once('@')?;
    Some(Promotion {
        environment: environment.to_string(),
        image: image.to_string(),
        digest: Digest::parse(digest).ok()?,
        commit: commit.to_string(),
        promoted_at: committed_at,
    })
}

/// The newest recorded promotion of `digest` into `environment` (the newest is the conservative
/// choice: a re-promotion restarts the soak).
pub fn latest<'p>(promotions: &'p [Promotion], environment: &str, digest: &Digest) -> Option<&'p Promotion> {
    promotions
        .iter()
        .filter(|p| p.environment == environment && &p.digest == digest)
        .max_by_key(|p| p.promoted_at)
}

/// `12m`, `1h 5m`, `40s`: minutes are what soak times are written in, seconds only below a minute.
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    let rounded = if secs >= 60 { secs - secs % 60 } else { secs };
    humantime::format_duration(Duration::from_secs(rounded)).to_string()
}

/// Evaluates the rule for `digest` over the promotions found in git.
pub fn evaluate(rule: &UpstreamRule, promotions: &[Promotion], digest: &Digest, now: OffsetDateTime) -> RuleResult {
    let env = &rule.environment;
    let Some(p) = latest(promotions, env, digest) else {
        return fail(
            ReasonCode::UpstreamNotPromoted,
            format!(
                "{} was not promoted into {env} by tollgate (no `Tollgate-Decision: allow` commit for it there)",
                digest.short()
            ),
        );
    };
    let short_commit: String = p.commit.chars().take(12).collect();
    soak(rule, p.promoted_at, now, format!("commit {short_commit}"), vec![])
}

/// Evaluates the rule with both proofs: `attested` (verified promotion statements about the candidate,
/// already limited to the signers that count) first, then the git `promotions` if they were gathered.
/// `None` for `promotions` means nobody looked in git: without an attestation the rule fails closed.
pub fn evaluate_chain(
    rule: &UpstreamRule,
    attested: &[AttestedPromotion],
    promotions: Option<&[Promotion]>,
    digest: &Digest,
    now: OffsetDateTime,
) -> RuleResult {
    if let Some(a) = newest_attested(attested, &rule.environment) {
        let short_commit: String = a.predicate.promotion.commit.chars().take(12).collect();
        return soak(
            rule,
            a.predicate.promoted_at,
            now,
            format!("attested by {}, commit {short_commit}", a.signer),
            vec![a.envelope.clone()],
        );
    }
    match promotions {
        Some(p) => evaluate(rule, p, digest, now),
        None => fail(
            ReasonCode::UpstreamNotPromoted,
            format!(
                "no promotion attestation for {}, and promotions into {} were not looked up; failing closed",
                digest.short(),
                rule.environment
            ),
        ),
    }
}

/// The newest attested promotion into `environment`, as in git: a re-promotion restarts the soak.
pub fn newest_attested<'a>(attested: &'a [AttestedPromotion], environment: &str) -> Option<&'a AttestedPromotion> {
    attested
        .iter()
        .filter(|a| a.predicate.environment == environment)
        .max_by_key(|a| a.predicate.promoted_at)
}

fn fail(reason: ReasonCode, message: String) -> RuleResult {
    RuleResult {
        rule: "upstream".into(),
        outcome: Outcome::Fail,
        reason: Some(reason),
        message,
        evidence: vec![],
    }
}

/// The soak check over one proof of promotion, described by `proof` in the message.
fn soak(
    rule: &UpstreamRule,
    promoted_at: OffsetDateTime,
    now: OffsetDateTime,
    proof: String,
    evidence: Vec<Digest>,
) -> RuleResult {
    let env = &rule.environment;
    // A promotion time in the future (clock skew between machines) counts as just now.
    let age = Duration::try_from(now - promoted_at).unwrap_or(Duration::ZERO);
    if age < rule.soak {
        return RuleResult {
            evidence,
            ..fail(
                ReasonCode::SoakTimeNotMet,
                format!(
                    "promoted into {env} {} ago, soak is {} ({proof})",
                    human(age),
                    human(rule.soak)
                ),
            )
        };
    }
    RuleResult {
        rule: "upstream".into(),
        outcome: Outcome::Pass,
        reason: None,
        message: format!(
            "promoted into {env} {} ago by tollgate ({proof}), soak {}",
            human(age),
            human(rule.soak)
        ),
        evidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn digest(n: u8) -> Digest {
        Digest::parse(&format!("sha256:{}", hex::encode([n; 32]))).unwrap()
    }

    fn message(env: &str, decision: &str, d: &Digest) -> String {
        format!(
            "promote({env}): api\n\nPromoted.\n\nTollgate-Decision: {decision}\nTollgate-Environment: {env}\nTollgate-Image: ghcr.io/acme/api@{d}\nTollgate-Mode: enforce\n"
        )
    }

    fn rule(soak_minutes: u64) -> UpstreamRule {
        UpstreamRule {
            environment: "staging".into(),
            soak: Duration::from_secs(soak_minutes * 60),
        }
    }

    const NOW: OffsetDateTime = datetime!(2025-03-01 12:00 UTC);

    fn promoted(env: &str, d: &Digest, at: OffsetDateTime) -> Vec<Promotion> {
        promotion_in(env, "0123456789abcdef0123", &message(env, "allow", d), at)
            .into_iter()
            .collect()
    }

    #[test]
    fn not_promoted_fails() {
        let r = evaluate(&rule(30), &[], &digest(1), NOW);
        assert_eq!(
            (r.outcome, r.reason),
            (Outcome::Fail, Some(ReasonCode::UpstreamNotPromoted))
        );
        // Another digest's promotion does not count.
        let r = evaluate(&rule(30), &promoted("staging", &digest(2), NOW), &digest(1), NOW);
        assert_eq!(r.reason, Some(ReasonCode::UpstreamNotPromoted));
    }

    #[test]
    fn soak_not_met_says_how_long_it_has_been() {
        let p = promoted("staging", &digest(1), datetime!(2025-03-01 11:48 UTC));
        let r = evaluate(&rule(30), &p, &digest(1), NOW);
        assert_eq!((r.outcome, r.reason), (Outcome::Fail, Some(ReasonCode::SoakTimeNotMet)));
        assert!(
            r.message.starts_with("promoted into staging 12m ago, soak is 30m"),
            "{}",
            r.message
        );
    }

    #[test]
    fn soak_met_passes() {
        let p = promoted("staging", &digest(1), datetime!(2025-03-01 11:30 UTC));
        assert_eq!(evaluate(&rule(30), &p, &digest(1), NOW).outcome, Outcome::Pass);
        // Soak 0: promoted just now is enough; a commit time in the future too (skew).
        let p = promoted("staging", &digest(1), datetime!(2025-03-01 12:01 UTC));
        assert_eq!(evaluate(&rule(0), &p, &digest(1), NOW).outcome, Outcome::Pass);
    }

    #[test]
    fn promotion_into_a_different_environment_does_not_count() {
        let p = promoted("canary", &digest(1), datetime!(2025-03-01 10:00 UTC));
        assert_eq!(p.len(), 1);
        let r = evaluate(&rule(30), &p, &digest(1), NOW);
        assert_eq!(r.reason, Some(ReasonCode::UpstreamNotPromoted));
        // A commit that records canary is not a staging promotion, whatever it is searched as.
        assert!(promotion_in("staging", "c", &message("canary", "allow", &digest(1)), NOW).is_none());
    }

    #[test]
    fn only_tollgate_allow_trailers_count() {
        assert!(promotion_in("staging", "c", &message("staging", "block", &digest(1)), NOW).is_none());
        let prose = format!(
            "bump\n\nTollgate-Decision: allow\nTollgate-Environment: staging\nTollgate-Image: x@{}\nwas copied here by hand\n",
            digest(1)
        );
        assert!(promotion_in("staging", "c", &prose, NOW).is_none());
    }

    #[test]
    fn the_newest_promotion_restarts_the_soak() {
        let mut p = promoted("staging", &digest(1), datetime!(2025-03-01 09:00 UTC));
        p.extend(promoted("staging", &digest(1), datetime!(2025-03-01 11:50 UTC)));
        assert_eq!(
            evaluate(&rule(30), &p, &digest(1), NOW).reason,
            Some(ReasonCode::SoakTimeNotMet)
        );
    }

    fn attested(env: &str, at: OffsetDateTime, signer: &str) -> Vec<AttestedPromotion> {
        use crate::gate::promotion::*;
        vec![AttestedPromotion {
            predicate: PromotionPredicate {
                environment: env.into(),
                source: SourceRef {
                    environment: "dev".into(),
                    commit: "1111".into(),
                },
                promotion: PromotionCommit {
                    repository: "file:///envs.git".into(),
                    branch: "main".into(),
                    commit: "abcdef0123456789".into(),
                },
                policy: PolicyRef {
                    name: "staging".into(),
                    digest: digest(9).to_string(),
                    mode: "enforce".into(),
                },
                decision: crate::gate::DecisionKind::Allow,
                evidence: vec![],
                promoted_at: at,
            },
            signer: signer.into(),
            envelope: digest(7),
        }]
    }

    #[test]
    fn a_signed_promotion_passes_without_git_history() {
        let a = attested("staging", datetime!(2025-03-01 11:00 UTC), "staging-promoter");
        let r = evaluate_chain(&rule(30), &a, Some(&[]), &digest(1), NOW);
        assert_eq!(r.outcome, Outcome::Pass, "{}", r.message);
        assert!(r.message.contains("attested by staging-promoter"), "{}", r.message);
        assert_eq!(r.evidence, vec![digest(7)]);
        // Nobody looked in git (`check` without mirrors): the signed statement is enough.
        assert_eq!(
            evaluate_chain(&rule(30), &a, None, &digest(1), NOW).outcome,
            Outcome::Pass
        );
    }

    #[test]
    fn an_attestation_for_another_environment_is_upstream_not_promoted() {
        let a = attested("canary", datetime!(2025-03-01 10:00 UTC), "staging-promoter");
        let r = evaluate_chain(&rule(30), &a, Some(&[]), &digest(1), NOW);
        assert_eq!(
            (r.outcome, r.reason),
            (Outcome::Fail, Some(ReasonCode::UpstreamNotPromoted))
        );
        let r = evaluate_chain(&rule(30), &a, None, &digest(1), NOW);
        assert_eq!(r.reason, Some(ReasonCode::UpstreamNotPromoted));
    }

    #[test]
    fn a_recent_attestation_is_soak_time_not_met() {
        let a = attested("staging", datetime!(2025-03-01 11:50 UTC), "staging-promoter");
        let r = evaluate_chain(&rule(30), &a, Some(&[]), &digest(1), NOW);
        assert_eq!((r.outcome, r.reason), (Outcome::Fail, Some(ReasonCode::SoakTimeNotMet)));
        assert!(
            r.message.starts_with("promoted into staging 10m ago, soak is 30m"),
            "{}",
            r.message
        );
    }

    #[test]
    fn the_attestation_takes_precedence_over_git_history() {
        // git says promoted long ago (a rewritten or hand-made commit could say anything); the signed
        // statement says ten minutes ago: the statement decides.
        let git = promoted("staging", &digest(1), datetime!(2025-03-01 08:00 UTC));
        let a = attested("staging", datetime!(2025-03-01 11:50 UTC), "staging-promoter");
        let r = evaluate_chain(&rule(30), &a, Some(&git), &digest(1), NOW);
        assert_eq!(r.reason, Some(ReasonCode::SoakTimeNotMet));
        // Without an attestation, git is the fallback.
        assert_eq!(
            evaluate_chain(&rule(30), &[], Some(&git), &digest(1), NOW).outcome,
            Outcome::Pass
        );
    }

    #[test]
    fn a_promotion_signed_by_a_signer_that_does_not_count_is_not_counted() {
        use crate::gate::{EvidenceSource, Material, MaterialKind, SignerMatch, PROMOTION_PREDICATE_TYPE};
        let a = attested("staging", datetime!(2025-03-01 10:00 UTC), "ci-key");
        let statement = serde_json::json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [],
            "predicateType": PROMOTION_PREDICATE_TYPE,
            "predicate": a[0].predicate,
        });
        let m = Material {
            kind: MaterialKind::Promotion,
            predicate_type: PROMOTION_PREDICATE_TYPE.into(),
            signer: SignerMatch {
                signer: "ci-key".into(),
                method: "key",
                identity: None,
            },
            source: EvidenceSource::Att,
            digest: digest(7),
            statement,
        };
        // Verified, but by a key the contract does not list for PROMOTION.
        let counted = crate::gate::promotion::attested(std::slice::from_ref(&m), &["staging-promoter".into()]);
        assert!(counted.is_empty());
        let r = evaluate_chain(&rule(30), &counted, Some(&[]), &digest(1), NOW);
        assert_eq!(r.reason, Some(ReasonCode::UpstreamNotPromoted));
        // The same statement by the listed signer counts.
        let counted = crate::gate::promotion::attested(&[m], &["ci-key".into()]);
        assert_eq!(
            evaluate_chain(&rule(30), &counted, Some(&[]), &digest(1), NOW).outcome,
            Outcome::Pass
        );
    }
}
