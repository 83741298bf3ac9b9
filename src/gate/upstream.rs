//! The `upstream` rule (pure): the candidate digest must have been promoted into a named environment
//! by tollgate (an allow commit with tollgate's trailers, found in git by `crate::context`), at least
//! `soak` before `now`. This is the build-to-promotion chain across environments.

use std::time::Duration;

use time::OffsetDateTime;

use crate::config::UpstreamRule;
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
        return RuleResult {
            rule: "upstream".into(),
            outcome: Outcome::Fail,
            reason: Some(ReasonCode::UpstreamNotPromoted),
            message: format!(
                "{} was not promoted into {env} by tollgate (no `Tollgate-Decision: allow` commit for it there)",
                digest.short()
            ),
            evidence: vec![],
        };
    };
    // A promotion time in the future (clock skew between machines) counts as just now.
    let age = Duration::try_from(now - p.promoted_at).unwrap_or(Duration::ZERO);
    let short_commit: String = p.commit.chars().take(12).collect();
    if age < rule.soak {
        return RuleResult {
            rule: "upstream".into(),
            outcome: Outcome::Fail,
            reason: Some(ReasonCode::SoakTimeNotMet),
            message: format!(
                "promoted into {env} {} ago, soak is {} (commit {short_commit})",
                human(age),
                human(rule.soak)
            ),
            evidence: vec![],
        };
    }
    RuleResult {
        rule: "upstream".into(),
        outcome: Outcome::Pass,
        reason: None,
        message: format!(
            "promoted into {env} {} ago by tollgate (commit {short_commit}), soak {}",
            human(age),
            human(rule.soak)
        ),
        evidence: vec![],
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
}
