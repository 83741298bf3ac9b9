//! `sarif_max_errors`: counts error-level results in verified SARIF 2.1.0 logs.
//!
//! The SARIF log is the predicate itself (what `cosign attest --type` with a SARIF predicate type
//! writes), or sits under `predicate.sarif` or `predicate.content`, as an object or as JSON text,
//! for producers that wrap the log with metadata. A result's level follows SARIF 2.1.0 §3.27.10:
//! its own `level`; else `none` when its `kind` is not `fail`; else the `defaultConfiguration.level`
//! of its rule (found by `rule.index`/`ruleIndex`, or by `ruleId`, in the driver or in the extension
//! named by `rule.toolComponent.index`); else `warning`. CodeQL relies on the rule default: its
//! results carry no `level` of their own. Results whose `baselineState` is `absent` (gone since the
//! baseline) and results suppressed with status `accepted` (§3.27.23, §3.35.3) are not counted.
//! `invocations[].ruleConfigurationOverrides` are not applied.

use std::borrow::Cow;

use serde_json::Value;

use super::{array, digests, distinct, embedded, enumerate, fail, is_kind, pass, predicate, str_at};
use crate::gate::{Material, MaterialKind, RuleResult};
use crate::reason::ReasonCode;

pub const RULE: &str = "sarif_max_errors";

/// What one SARIF log holds, for the message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Tools that produced the runs (`CodeQL command-line toolchain 2.2.4`).
    pub tools: Vec<String>,
    pub errors: usize,
    /// Errors that took their level from the rule's default configuration.
    pub errors_by_default: usize,
    pub warnings: usize,
    pub notes: usize,
    /// Results left out as suppressed or absent.
    pub ignored: usize,
    /// Rule ids of the error-level results, in order.
    pub error_rules: Vec<String>,
}

/// The SARIF log inside a predicate, if there is one.
pub fn log(predicate: &Value) -> Option<Cow<'_, Value>> {
    let has_runs = |v: &Value| v.get("runs").is_some_and(Value::is_array);
    if has_runs(predicate) {
        return Some(Cow::Borrowed(predicate));
    }
    ["sarif", "content"]
        .iter()
        .filter_map(|k| predicate.get(*k).and_then(embedded))
        .find(|v| has_runs(v))
}

/// Counts the results of every run of a SARIF log by effective level.
pub fn tally(log: &Value) -> Tally {
    let mut t = Tally::default();
    for run in array(log, "runs") {
        let driver = run.get("tool").and_then(|t| t.get("driver")).unwrap_or(&Value::Null);
        if let Some(name) = str_at(driver, &["name"]) {
            let version = str_at(driver, &["semanticVersion"]).or_else(|| str_at(driver, &["version"]));
            let tool = match version {
                Some(v) => format!("{name} {v}"),
                None => name.to_string(),
            };
            if !t.tools.contains(&tool) {
                t.tools.push(tool);
            }
        }
        for result in array(run, "results") {
            if str_at(result, &["baselineState"]) == Some("absent") || suppressed(result) {
                t.ignored += 1;
                continue;
            }
            let (level, by_default) = level(result, run);
            match level {
                "error" => {
                    t.errors += 1;
                    t.errors_by_default += usize::from(by_default);
                    let rule = str_at(result, &["ruleId"])
                        .or_else(|| str_at(result, &["rule", "id"]))
                        .unwrap_or("(no rule id)");
                    t.error_rules.push(rule.to_string());
                }
                "warning" => t.warnings += 1,
                "note" => t.notes += 1,
                _ => {}
            }
        }
    }
    t
}

/// A result counts as suppressed when it has suppressions and all of them are accepted (a
/// suppression without `status` is accepted); `underReview` or `rejected` keep it in.
fn suppressed(result: &Value) -> bool {
    let s = array(result, "suppressions");
    !s.is_empty()
        && s.iter()
            .all(|s| matches!(str_at(s, &["status"]), None | Some("accepted")))
}

/// The effective level of a result, and whether it came from the rule's default configuration.
fn level<'a>(result: &'a Value, run: &'a Value) -> (&'a str, bool) {
    if let Some(l) = str_at(result, &["level"]) {
        return (l, false);
    }
    if str_at(result, &["kind"]).is_some_and(|k| k != "fail") {
        return ("none", false);
    }
    match rule(result, run).and_then(|r| str_at(r, &["defaultConfiguration", "level"])) {
        Some(l) => (l, true),
        None => ("warning", false),
    }
}

/// The reporting descriptor a result refers to.
fn rule<'a>(result: &'a Value, run: &'a Value) -> Option<&'a Value> {
    let tool = run.get("tool")?;
    let component = match result
        .get("rule")
        .and_then(|r| r.get("toolComponent"))
        .and_then(|c| c.get("index"))
        .and_then(Value::as_u64)
    {
        Some(i) => array(tool, "extensions").get(usize::try_from(i).ok()?)?,
        None => tool.get("driver")?,
    };
    let rules = array(component, "rules");
    let index = result
        .get("rule")
        .and_then(|r| r.get("index"))
        .or_else(|| result.get("ruleIndex"))
        .and_then(Value::as_u64)
        .and_then(|i| usize::try_from(i).ok());
    if let Some(r) = index.and_then(|i| rules.get(i)) {
        return Some(r);
    }
    let id = str_at(result, &["ruleId"]).or_else(|| str_at(result, &["rule", "id"]))?;
    rules.iter().find(|r| str_at(r, &["id"]) == Some(id))
}

/// Evaluates `sarif_max_errors` over every SARIF material (errors add up across logs).
pub fn evaluate(max_errors: u32, materials: &[Material]) -> RuleResult {
    let sarif = distinct(materials, |m| is_kind(m, MaterialKind::Sarif));
    let mut read: Vec<(&Material, Tally)> = Vec::new();
    let mut unreadable = Vec::new();
    for m in &sarif {
        match log(predicate(m)) {
            Some(l) => read.push((m, tally(&l))),
            None => unreadable.push(m.digest.short()),
        }
    }
    if read.is_empty() {
        let mut message = format!("no SARIF evidence to evaluate {RULE}");
        if !unreadable.is_empty() {
            message.push_str(&format!(
                "; SARIF material(s) without a SARIF log (no `runs`): {}",
                unreadable.join(", ")
            ));
        }
        return fail(RULE, ReasonCode::MaterialMissing, message, digests(&sarif));
    }
    let errors: usize = read.iter().map(|(_, t)| t.errors).sum();
    let per_log: Vec<String> = read
        .iter()
        .map(|(m, t)| {
            let tool = if t.tools.is_empty() {
                "SARIF".to_string()
            } else {
                t.tools.join(" + ")
            };
            let mut s = format!(
                "{} error(s), {} warning(s), {} note(s) in {tool} {}",
                t.errors,
                t.warnings,
                t.notes,
                m.digest.short()
            );
            if t.errors_by_default > 0 {
                s.push_str(&format!(" ({} error(s) by rule default)", t.errors_by_default));
            }
            s
        })
        .collect();
    let summary = per_log.join("; ");
    let evidence = read.iter().map(|(m, _)| m.digest.clone()).collect();
    if errors as u64 > u64::from(max_errors) {
        let rules: Vec<String> = read.iter().flat_map(|(_, t)| t.error_rules.iter().cloned()).collect();
        return fail(
            RULE,
            ReasonCode::SarifErrors,
            format!(
                "{errors} error-level result(s) > {max_errors} allowed: {summary}; rules: {}",
                enumerate(&rules, 5)
            ),
            evidence,
        );
    }
    if !unreadable.is_empty() {
        return fail(
            RULE,
            ReasonCode::MaterialMissing,
            format!(
                "SARIF material(s) without a SARIF log (no `runs`): {}; the rule fails closed ({summary})",
                unreadable.join(", ")
            ),
            evidence,
        );
    }
    pass(
        RULE,
        format!("{errors} error-level result(s) ≤ {max_errors}: {summary}"),
        evidence,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::rules::testing::{material, vector};
    use serde_json::json;

    const SARIF: &str = "https://docs.oasis-open.org/sarif/sarif/v2.1.0";

    /// Name, materials, `sarif_max_errors`, expected reason, text the message must hold.
    type Row = (&'static str, Vec<Material>, u32, Option<ReasonCode>, &'static str);

    #[test]
    fn real_logs_pass_and_fail_at_their_error_counts() {
        let codeql = material(SARIF, vector("policy/codeql-2.2.4-js-xss.sarif"), 1);
        let trivy = material(SARIF, vector("policy/vexctl-nginx-trivy-0.42.1.sarif.json"), 2);
        let table: [Row; 6] = [
            (
                "codeql over",
                vec![codeql.clone()],
                1,
                Some(ReasonCode::SarifErrors),
                "2 error-level result(s) > 1",
            ),
            (
                "codeql within",
                vec![codeql.clone()],
                2,
                None,
                "(2 error(s) by rule default)",
            ),
            (
                "trivy over",
                vec![trivy.clone()],
                0,
                Some(ReasonCode::SarifErrors),
                "rules: CVE-2023-27103",
            ),
            (
                "trivy within",
                vec![trivy.clone()],
                3,
                None,
                "3 error(s), 21 warning(s), 75 note(s) in Trivy 0.42.1",
            ),
            (
                "both add up",
                vec![codeql.clone(), trivy.clone()],
                4,
                Some(ReasonCode::SarifErrors),
                "5 error-level",
            ),
            (
                "both within",
                vec![codeql, trivy],
                5,
                None,
                "CodeQL command-line toolchain 2.2.4",
            ),
        ];
        for (name, ms, max, reason, needle) in table {
            let r = evaluate(max, &ms);
            assert_eq!(r.reason, reason, "{name}: {}", r.message);
            assert!(r.message.contains(needle), "{name}: {}", r.message);
            assert_eq!(r.evidence.len(), ms.len(), "{name}");
        }
    }

    #[test]
    fn codeql_errors_come_from_the_rule_default_and_a_naive_count_sees_none() {
        let log = vector("policy/codeql-2.2.4-js-xss.sarif");
        let t = tally(&log);
        assert_eq!((t.errors, t.errors_by_default, t.warnings), (2, 2, 0));
        assert_eq!(t.error_rules, vec!["js/xss", "js/xss"]);
        let explicit = array(&log["runs"][0], "results")
            .iter()
            .filter(|r| str_at(r, &["level"]) == Some("error"))
            .count();
        assert_eq!(explicit, 0);
    }

    #[test]
    fn wrapped_logs_are_found() {
        let log = vector("policy/codeql-2.2.4-js-xss.sarif");
        let text = serde_json::to_string(&log).unwrap();
        for p in [json!({"sarif": log.clone()}), json!({"content": text}), log.clone()] {
            assert_eq!(
                evaluate(0, &[material(SARIF, p, 1)]).reason,
                Some(ReasonCode::SarifErrors)
            );
        }
    }

    #[test]
    fn level_follows_the_sarif_fallbacks() {
        let log = json!({"runs": [{
            "tool": {
                "driver": {"name": "t", "rules": [
                    {"id": "a", "defaultConfiguration": {"level": "error"}},
                    {"id": "b"},
                ]},
                "extensions": [{"name": "pack", "rules": [{"id": "x", "defaultConfiguration": {"level": "error"}}]}],
            },
            "results": [
                {"ruleId": "a"},                                           // error by id
                {"ruleIndex": 0, "level": "note"},                         // explicit wins
                {"ruleIndex": 1},                                          // no default → warning
                {"ruleId": "zzz"},                                         // unknown rule → warning
                {"ruleId": "a", "kind": "pass"},                           // not a failure
                {"rule": {"id": "x", "index": 0, "toolComponent": {"index": 0}}}, // extension rule
                {"ruleId": "a", "suppressions": [{"kind": "inSource"}]},   // suppressed
                {"ruleId": "a", "suppressions": [{"kind": "external", "status": "underReview"}]},
                {"ruleId": "a", "baselineState": "absent"},
            ],
        }]});
        let t = tally(&log);
        assert_eq!((t.errors, t.warnings, t.notes, t.ignored), (3, 2, 1, 2), "{t:?}");
    }

    #[test]
    fn no_sarif_fails_closed() {
        let sbom = material("https://cyclonedx.org/bom", json!({"bomFormat": "CycloneDX"}), 1);
        let r = evaluate(0, &[sbom]);
        assert_eq!(r.reason, Some(ReasonCode::MaterialMissing));
        assert_eq!(r.message, "no SARIF evidence to evaluate sarif_max_errors");
        let empty = material(SARIF, json!({"tool": "x"}), 2);
        let r = evaluate(0, &[empty]);
        assert_eq!(r.reason, Some(ReasonCode::MaterialMissing));
        assert!(r.message.contains("no `runs`"), "{}", r.message);
    }

    #[test]
    fn hostile_shapes_do_not_panic() {
        for p in [
            json!({"runs": [null, {"results": [1, {"ruleIndex": -1}, {"ruleIndex": 99999999999u64}]}]}),
            json!({"runs": [{"tool": {"driver": {"rules": 3}}, "results": [{"rule": {"toolComponent": {"index": 7}}}]}]}),
            json!({"sarif": "{"}),
        ] {
            let _ = evaluate(0, &[material(SARIF, p, 1)]);
        }
    }
}
