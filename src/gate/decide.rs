//! Deciding (pure): rule results + mode → allow or block; a transient fetch failure → defer.

use crate::config::Mode;
use crate::gate::{DecisionKind, Outcome, RuleResult};
use crate::reason::ReasonCode;

/// The decision on one candidate, with every rule result that led to it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Decision {
    pub kind: DecisionKind,
    pub mode: Mode,
    pub results: Vec<RuleResult>,
}

impl Decision {
    pub fn count(&self, outcome: Outcome) -> usize {
        self.results.iter().filter(|r| r.outcome == outcome).count()
    }

    /// Reason codes of every failed or warned rule, in result order, without repeats (one
    /// `Tollgate-Reason` trailer each).
    pub fn reasons(&self) -> Vec<ReasonCode> {
        let mut out = Vec::new();
        for r in &self.results {
            if matches!(r.outcome, Outcome::Fail | Outcome::Warn | Outcome::Waived) {
                if let Some(code) = r.reason {
                    if !out.contains(&code) {
                        out.push(code);
                    }
                }
            }
        }
        out
    }
}

/// In `enforce` mode any failure blocks; in `warn` mode failures become warnings and the candidate
/// is allowed. A candidate with no results at all (an empty contract and no rules) is allowed: the
/// operator asked for nothing.
pub fn decide(mode: Mode, mut results: Vec<RuleResult>) -> Decision {
    if mode == Mode::Warn {
        for r in results.iter_mut().filter(|r| r.outcome == Outcome::Fail) {
            r.outcome = Outcome::Warn;
        }
    }
    let kind = if results.iter().any(|r| r.outcome == Outcome::Fail) {
        DecisionKind::Block
    } else {
        DecisionKind::Allow
    };
    Decision { kind, mode, results }
}

/// Evidence could not be fetched: nothing is decided, the candidate is retried later.
pub fn defer(mode: Mode, message: String) -> Decision {
    Decision {
        kind: DecisionKind::Defer,
        mode,
        results: vec![RuleResult {
            rule: "evidence".to_string(),
            outcome: Outcome::Fail,
            reason: Some(ReasonCode::EvidenceUnavailable),
            message,
            evidence: vec![],
        }],
    }
}

/// Evidence was fetched but is unusable (hostile or corrupt content): a reasoned block, in any mode.
pub fn block_unusable(mode: Mode, reason: ReasonCode, message: String) -> Decision {
    Decision {
        kind: DecisionKind::Block,
        mode,
        results: vec![RuleResult {
            rule: "evidence".to_string(),
            outcome: Outcome::Fail,
            reason: Some(reason),
            message,
            evidence: vec![],
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(outcome: Outcome, reason: Option<ReasonCode>) -> RuleResult {
        RuleResult {
            rule: "r".into(),
            outcome,
            reason,
            message: String::new(),
            evidence: vec![],
        }
    }

    #[test]
    fn enforce_blocks_on_any_failure() {
        let d = decide(
            Mode::Enforce,
            vec![
                result(Outcome::Pass, None),
                result(Outcome::Fail, Some(ReasonCode::LatestTag)),
            ],
        );
        assert_eq!(d.kind, DecisionKind::Block);
        assert_eq!(d.reasons(), vec![ReasonCode::LatestTag]);
    }

    #[test]
    fn warn_allows_and_keeps_the_reasons() {
        let d = decide(
            Mode::Warn,
            vec![result(Outcome::Fail, Some(ReasonCode::MaterialMissing))],
        );
        assert_eq!(d.kind, DecisionKind::Allow);
        assert_eq!(d.count(Outcome::Warn), 1);
        assert_eq!(d.reasons(), vec![ReasonCode::MaterialMissing]);
    }

    #[test]
    fn skipped_optional_material_does_not_block() {
        let d = decide(
            Mode::Enforce,
            vec![result(Outcome::Skip, None), result(Outcome::Pass, None)],
        );
        assert_eq!(d.kind, DecisionKind::Allow);
    }

    #[test]
    fn defer_is_never_an_allow() {
        assert_eq!(defer(Mode::Warn, "down".into()).kind, DecisionKind::Defer);
        assert_eq!(
            block_unusable(Mode::Warn, ReasonCode::EvidenceUnavailable, "big".into()).kind,
            DecisionKind::Block
        );
    }
}
