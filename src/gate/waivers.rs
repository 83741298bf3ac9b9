//! Waivers (SPEC §3 `waivers:`): a reviewed file in the environment repository that turns named
//! failures of named images into `waived` results until a date. Parsing and applying are pure; a
//! file that cannot be read exactly as written waives nothing (never more permissive on bad input).

use std::fmt::Write as _;

use time::OffsetDateTime;

use crate::config::yaml::{self, Loc, Node, Value};
use crate::gate::{Outcome, RuleResult};
use crate::image::Digest;
use crate::reason::ReasonCode;

/// One entry of the waivers file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Waiver {
    pub reason: ReasonCode,
    /// A glob over the image name (`ghcr.io/acme/*`) or `name@digest`; `*` stops at `/`, `**` does not.
    pub image: String,
    /// As written: a date (`2025-06-30`, expiring at its start, UTC) or an RFC 3339 date-time.
    pub expires: String,
    pub justification: String,
    pub approved_by: String,
    /// Line of the entry in the file.
    pub line: usize,
    #[serde(skip)]
    expires_at: OffsetDateTime,
    #[serde(skip)]
    matcher: globset::GlobMatcher,
}

impl Waiver {
    pub fn expires_at(&self) -> OffsetDateTime {
        self.expires_at
    }

    /// Unexpired at `now`: a waiver is valid strictly before its expiry.
    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        now < self.expires_at
    }

    /// Does the pattern match the image name or `name@digest`?
    pub fn matches(&self, name: &str, digest: &Digest) -> bool {
        self.matcher.is_match(name) || self.matcher.is_match(format!("{name}@{digest}"))
    }

    /// The `Tollgate-Waiver` trailer value.
    pub fn trailer(&self) -> String {
        format!(
            "{} {} expires {} approved-by {}",
            self.reason, self.image, self.expires, self.approved_by
        )
    }
}

/// A waivers file that cannot be used, with the position of the first problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct WaiverError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

const KEYS: [&str; 5] = ["reason", "image", "expires", "justification", "approved_by"];
const SHAPE: &str = "a list of {reason, image, expires, justification, approved_by}";

/// Parses the waivers file. An empty file holds no waivers. Any problem rejects the whole file:
/// half-reading a reviewed list could waive something the reviewers did not see as written.
pub fn parse(file: &str, text: &str) -> Result<Vec<Waiver>, WaiverError> {
    let err = |loc: Loc, message: String| WaiverError {
        file: file.to_string(),
        line: loc.line,
        column: loc.column,
        message,
    };
    let root = yaml::parse(text).map_err(|e| err(e.loc, e.message))?;
    let items = match &root.value {
        Value::Null => return Ok(Vec::new()),
        Value::Seq(items) => items,
        other => return Err(err(root.loc, format!("expected {SHAPE}, found {}", other.describe()))),
    };
    items
        .iter()
        .map(|item| entry(item).map_err(|(loc, m)| err(loc, m)))
        .collect()
}

fn entry(node: &Node) -> Result<Waiver, (Loc, String)> {
    let Value::Map(entries) = &node.value else {
        return Err((
            node.loc,
            format!(
                "expected a mapping {{{}}}, found {}",
                KEYS.join(", "),
                node.value.describe()
            ),
        ));
    };
    for e in entries {
        match e.key.as_deref() {
            Some(k) if KEYS.contains(&k) => {}
            Some(k) => {
                return Err((
                    e.key_loc,
                    format!("unknown key `{k}`; expected one of: {}", KEYS.join(", ")),
                ))
            }
            None => return Err((e.key_loc, "a key must be a plain string".into())),
        }
    }
    let text = |key: &str| -> Result<(String, Loc), (Loc, String)> {
        let e = entries
            .iter()
            .find(|e| e.key.as_deref() == Some(key))
            .ok_or_else(|| (node.loc, format!("missing `{key}`")))?;
        match &e.value.value {
            Value::Str(s) if !s.trim().is_empty() => Ok((s.trim().to_string(), e.value.loc)),
            Value::Int(_, raw) | Value::Float(raw) => Ok((raw.clone(), e.value.loc)),
            other => Err((
                e.value.loc,
                format!("`{key}` must be a non-empty string, found {}", other.describe()),
            )),
        }
    };
    let (reason_text, reason_loc) = text("reason")?;
    let reason = reason_text.parse::<ReasonCode>().map_err(|_| {
        let codes: Vec<&str> = waivable().map(|c| c.as_str()).collect();
        (
            reason_loc,
            format!(
                "unknown reason code `{reason_text}`; expected one of: {}",
                codes.join(", ")
            ),
        )
    })?;
    if !waivable().any(|c| c == reason) {
        return Err((reason_loc, format!("`{reason}` cannot be waived")));
    }
    let (image, image_loc) = text("image")?;
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err((image_loc, "`image` must not contain whitespace".into()));
    }
    let matcher = globset::GlobBuilder::new(&image)
        .literal_separator(true)
        .build()
        .map_err(|e| (image_loc, format!("invalid glob pattern `{image}`: {}", e.kind())))?
        .compile_matcher();
    let (expires, expires_loc) = text("expires")?;
    let expires_at = parse_expiry(&expires).ok_or_else(|| {
        (
            expires_loc,
            format!("invalid `expires` {expires:?}; expected a date (2025-06-30) or an RFC 3339 date-time (2025-06-30T18:00:00Z)"),
        )
    })?;
    let (justification, _) = text("justification")?;
    let (approved_by, _) = text("approved_by")?;
    if approved_by.contains(['\n', '\r']) {
        return Err((node.loc, "`approved_by` must be one line".into()));
    }
    Ok(Waiver {
        reason,
        image,
        expires,
        justification,
        approved_by,
        line: node.loc.line,
        expires_at,
        matcher,
    })
}

/// Reason codes a waiver may name: failures of rules, not tollgate's own bookkeeping.
fn waivable() -> impl Iterator<Item = ReasonCode> {
    ReasonCode::ALL
        .into_iter()
        .filter(|c| !matches!(c, ReasonCode::Waived | ReasonCode::EvidenceUnavailable))
}

/// A date means "expires at the start of that day, UTC": the stricter reading of "expires 2025-06-30".
fn parse_expiry(s: &str) -> Option<OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t);
    }
    let date = time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).ok()?;
    Some(date.midnight().assume_utc())
}

/// A waiver that turned failures into `waived` results.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AppliedWaiver {
    pub reason: ReasonCode,
    pub image: String,
    pub expires: String,
    pub approved_by: String,
    pub justification: String,
    /// The rules it waived.
    pub rules: Vec<String>,
}

impl AppliedWaiver {
    /// The `Tollgate-Waiver` trailer value: `<reason> <image pattern> expires <date> approved-by <who>`.
    pub fn trailer(&self) -> String {
        format!(
            "{} {} expires {} approved-by {}",
            self.reason, self.image, self.expires, self.approved_by
        )
    }
}

/// A waiver that would have matched a failure but has expired: reported, never applied.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExpiredWaiver {
    pub reason: ReasonCode,
    pub image: String,
    pub expires: String,
    pub approved_by: String,
    pub rules: Vec<String>,
}

/// Applies `waivers` to the failures of the candidate `name@digest` at `now`: a failure whose
/// reason an unexpired, matching waiver names becomes [`Outcome::Waived`] (its reason code kept, so
/// JSON says what was waived). Expired waivers that would have matched are returned for reporting.
pub fn apply(
    mut results: Vec<RuleResult>,
    waivers: &[Waiver],
    name: &str,
    digest: &Digest,
    now: OffsetDateTime,
) -> (Vec<RuleResult>, Vec<AppliedWaiver>, Vec<ExpiredWaiver>) {
    let mut applied: Vec<(usize, AppliedWaiver)> = Vec::new();
    let mut expired: Vec<(usize, ExpiredWaiver)> = Vec::new();
    for r in results.iter_mut().filter(|r| r.outcome == Outcome::Fail) {
        let Some(reason) = r.reason else { continue };
        let matching = || {
            waivers
                .iter()
                .enumerate()
                .filter(move |(_, w)| w.reason == reason && w.matches(name, digest))
        };
        if let Some((i, w)) = matching().find(|(_, w)| w.is_active(now)) {
            r.outcome = Outcome::Waived;
            let _ = write!(
                r.message,
                " (waived until {} by {}: {})",
                w.expires, w.approved_by, w.justification
            );
            match applied.iter_mut().find(|(j, _)| *j == i) {
                Some((_, a)) => a.rules.push(r.rule.clone()),
                None => applied.push((
                    i,
                    AppliedWaiver {
                        reason: w.reason,
                        image: w.image.clone(),
                        expires: w.expires.clone(),
                        approved_by: w.approved_by.clone(),
                        justification: w.justification.clone(),
                        rules: vec![r.rule.clone()],
                    },
                )),
            }
            continue;
        }
        for (i, w) in matching() {
            let _ = write!(r.message, " (a waiver for it expired {})", w.expires);
            match expired.iter_mut().find(|(j, _)| *j == i) {
                Some((_, e)) => e.rules.push(r.rule.clone()),
                None => expired.push((
                    i,
                    ExpiredWaiver {
                        reason: w.reason,
                        image: w.image.clone(),
                        expires: w.expires.clone(),
                        approved_by: w.approved_by.clone(),
                        rules: vec![r.rule.clone()],
                    },
                )),
            }
        }
    }
    for (_, e) in &expired {
        tracing::warn!(reason = %e.reason, pattern = %e.image, expires = %e.expires, "an expired waiver matches a failure; not applied");
    }
    (
        results,
        applied.into_iter().map(|(_, a)| a).collect(),
        expired.into_iter().map(|(_, e)| e).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn digest(n: u8) -> Digest {
        Digest::parse(&format!("sha256:{}", hex::encode([n; 32]))).unwrap()
    }

    fn fail(rule: &str, reason: ReasonCode) -> RuleResult {
        RuleResult {
            rule: rule.into(),
            outcome: Outcome::Fail,
            reason: Some(reason),
            message: "m".into(),
            evidence: vec![],
        }
    }

    const FILE: &str = r#"# reviewed in PR #412
- reason: material-missing
  image: ghcr.io/acme/*
  expires: 2025-06-30
  justification: SBOM generation broken upstream, tracked in ACME-17
  approved_by: jane@acme.example
- reason: soak-time-not-met
  image: "ghcr.io/acme/api@sha256:*"
  expires: 2025-01-01T00:00:00Z
  justification: hotfix
  approved_by: sre-oncall
"#;

    fn waivers() -> Vec<Waiver> {
        parse(".tollgate/waivers.yaml", FILE).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parses_entries_with_their_lines() {
        let w = waivers();
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].reason, ReasonCode::MaterialMissing);
        assert_eq!(w[0].expires_at(), datetime!(2025-06-30 0:00 UTC));
        assert_eq!(w[1].line, 7);
        assert_eq!(
            w[0].trailer(),
            "material-missing ghcr.io/acme/* expires 2025-06-30 approved-by jane@acme.example"
        );
        assert!(parse("w.yaml", "").unwrap().is_empty());
    }

    #[test]
    fn matches_by_glob_over_name_or_name_at_digest() {
        let w = waivers();
        assert!(w[0].matches("ghcr.io/acme/api", &digest(1)));
        assert!(!w[0].matches("ghcr.io/acme/team/api", &digest(1)), "`*` stops at `/`");
        assert!(!w[0].matches("ghcr.io/other/api", &digest(1)));
        assert!(w[1].matches("ghcr.io/acme/api", &digest(1)));
        assert!(!w[1].matches("ghcr.io/acme/web", &digest(1)));
    }

    #[test]
    fn an_unexpired_matching_waiver_waives_only_its_reason() {
        let now = datetime!(2025-03-01 0:00 UTC);
        let (out, applied, expired) = apply(
            vec![
                fail("contract:SBOM_CYCLONEDX_JSON", ReasonCode::MaterialMissing),
                fail("no_latest_tag", ReasonCode::LatestTag),
            ],
            &waivers(),
            "ghcr.io/acme/api",
            &digest(1),
            now,
        );
        assert_eq!(out[0].outcome, Outcome::Waived);
        assert_eq!(out[0].reason, Some(ReasonCode::MaterialMissing));
        assert!(out[0].message.contains("waived until 2025-06-30 by jane@acme.example"));
        assert_eq!(out[1].outcome, Outcome::Fail);
        assert_eq!(applied.len(), 1);
        assert_eq!(applied[0].rules, vec!["contract:SBOM_CYCLONEDX_JSON"]);
        assert!(expired.is_empty());
    }

    #[test]
    fn expired_waivers_are_ignored_and_reported() {
        let now = datetime!(2025-03-01 0:00 UTC);
        let (out, applied, expired) = apply(
            vec![fail("upstream", ReasonCode::SoakTimeNotMet)],
            &waivers(),
            "ghcr.io/acme/api",
            &digest(1),
            now,
        );
        assert_eq!(out[0].outcome, Outcome::Fail);
        assert!(applied.is_empty());
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].expires, "2025-01-01T00:00:00Z");
        assert!(out[0].message.contains("expired 2025-01-01T00:00:00Z"));
        // A date expires at the start of that day.
        let (out, ..) = apply(
            vec![fail("c", ReasonCode::MaterialMissing)],
            &waivers(),
            "ghcr.io/acme/api",
            &digest(1),
            datetime!(2025-06-30 0:00 UTC),
        );
        assert_eq!(out[0].outcome, Outcome::Fail);
    }

    #[test]
    fn malformed_files_are_rejected_whole_with_a_position() {
        for (text, line, what) in [
            ("- reason: material-missing\n  image: [\n", 3, "invalid YAML"),
            ("reason: x\n", 1, "expected a list"),
            (
                "- {reason: material-missing, image: a/*, expires: 2025-06-30, justification: j, approved_by: k}\n- {reason: nope, image: a, expires: 2025-06-30, justification: j, approved_by: k}\n",
                2,
                "unknown reason code `nope`",
            ),
            ("- {reason: waived, image: a, expires: 2025-06-30, justification: j, approved_by: k}\n", 1, "cannot be waived"),
            ("- {reason: latest-tag, image: a, expires: next week, justification: j, approved_by: k}\n", 1, "invalid `expires`"),
            ("- {reason: latest-tag, image: 'a[', expires: 2025-06-30, justification: j, approved_by: k}\n", 1, "invalid glob"),
            ("- {reason: latest-tag, image: a, expires: 2025-06-30, justification: j}\n", 1, "missing `approved_by`"),
            ("- {reason: latest-tag, image: a, expires: 2025-06-30, justification: j, approved_by: k, note: x}\n", 1, "unknown key `note`"),
        ] {
            let e = parse("w.yaml", text).unwrap_err();
            assert!(e.message.contains(what), "{text}: {e}");
            assert_eq!(e.line, line, "{text}: {e}");
            assert!(e.to_string().starts_with("w.yaml:"), "{e}");
        }
    }
}
