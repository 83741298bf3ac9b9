//! Rego policies (SPEC §6), evaluated with regorus: compiled once when the configuration is loaded,
//! evaluated per candidate over the `input` document built here. Pure apart from being handed the
//! sources; every failure (parse, compile, runtime, time limit, wrong result shape) is a
//! `rego-violation` failure, never a crash and never a pass.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::gate::{Candidate, Material, Outcome, RuleResult};
use crate::image::Digest;
use crate::reason::ReasonCode;

/// The rule tollgate reads in every policy.
pub const ENTRYPOINT: &str = "data.tollgate.result";
/// What a policy may spend on one candidate. regorus checks this cooperatively inside its loops.
pub const EVAL_LIMIT: Duration = Duration::from_secs(2);
/// A backstop for work regorus does not tick through (one huge builtin call): past it the result
/// is a failure and the evaluating thread is abandoned.
const HARD_LIMIT: Duration = Duration::from_secs(5);

/// Why a Rego file cannot be used. The message names the file as configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rego {label}: {message}")]
pub struct RegoError {
    pub label: String,
    pub message: String,
}

/// One compiled Rego file. Cloning is cheap (the prepared engine is shared and cloned per evaluation).
#[derive(Clone)]
pub struct RegoPolicy {
    /// `rego:<file name>`: the rule name in results and trailers.
    pub rule: String,
    /// The path as shown to users (relative to the configuration file where possible).
    pub label: String,
    /// Digest of the source text: part of the effective policy digest.
    pub source_digest: Digest,
    engine: Arc<regorus::Engine>,
    limit: Duration,
}

impl std::fmt::Debug for RegoPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegoPolicy")
            .field("rule", &self.rule)
            .field("label", &self.label)
            .field("source_digest", &self.source_digest)
            .finish_non_exhaustive()
    }
}

/// The rule name of a Rego file: `rego:<file name>`.
pub fn rule_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    format!("rego:{name}")
}

/// regorus errors render a source excerpt with a caret over several lines; the first line says
/// where and what, which is what a one-line diagnostic or a commit message can carry.
fn first_line(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("unknown error");
    // A lone location line (`file:3:5`) says little without the reason under the excerpt.
    let line = match lines.find(|l| l.contains("error:")) {
        Some(reason) if !first.contains("error") => format!("{first} {reason}"),
        _ => first.to_string(),
    };
    // `--> file:3:1 error: expecting expression` → `file:3:1: expecting expression`.
    line.trim_start_matches("-->").trim().replacen(" error: ", ": ", 1)
}

/// Parses and compiles one Rego file. `label` names it in messages; `rule` in results.
pub fn compile(rule: &str, label: &str, source: &str) -> Result<RegoPolicy, RegoError> {
    compile_with_limit(rule, label, source, EVAL_LIMIT)
}

fn compile_with_limit(rule: &str, label: &str, source: &str, limit: Duration) -> Result<RegoPolicy, RegoError> {
    let err = |message: String| RegoError {
        label: label.to_string(),
        message,
    };
    let mut engine = regorus::Engine::new();
    engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
        limit,
        // Clock reads are cheap next to rule evaluation; checking often keeps overruns short.
        check_interval: NonZeroU32::MIN.saturating_add(63),
    });
    // Builtins that fail (a bad regex, a malformed time) are errors, not silent undefined values
    // that could hide a violation.
    engine.set_strict_builtin_errors(true);
    let package = engine
        .add_policy(label.to_string(), source.to_string())
        .map_err(|e| err(format!("syntax error: {}", first_line(&e))))?;
    if package != "data.tollgate" {
        return Err(err(format!(
            "declares `{}`; expected `package tollgate` (tollgate reads {ENTRYPOINT})",
            package.trim_start_matches("data.")
        )));
    }
    let defines_result = engine
        .has_declared_rule_rooted_at(label, "result")
        .map_err(|e| err(format!("cannot inspect the policy: {}", first_line(&e))))?;
    if !defines_result {
        return Err(err(format!(
            "defines no `result` rule; expected `result := {{\"violations\": [...], \"skipped\": false, \"skip_reason\": \"\"}}` ({ENTRYPOINT})"
        )));
    }
    engine
        .compile_with_entrypoint(&ENTRYPOINT.into())
        .map_err(|e| err(format!("compile error: {}", first_line(&e))))?;
    Ok(RegoPolicy {
        rule: rule.to_string(),
        label: label.to_string(),
        source_digest: Digest::of(source.as_bytes()),
        engine: Arc::new(engine),
        limit,
    })
}

/// The upstream part of the input: which environment the candidate must come from and when it was
/// promoted there (RFC 3339), when known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamInput {
    pub environment: Option<String>,
    pub promoted_at: Option<time::OffsetDateTime>,
}

fn rfc3339(t: time::OffsetDateTime) -> serde_json::Value {
    t.format(&time::format_description::well_known::Rfc3339)
        .map(serde_json::Value::String)
        .unwrap_or(serde_json::Value::Null)
}

/// The `input` document of SPEC §6: `{environment, image: {repository, digest, tag}, materials:
/// [{kind, predicate_type, signer, digest, statement, certificate}], upstream: {environment, promoted_at}, now}`
/// (`certificate`: see [`crate::gate::CertificateIdentity`]).
/// `repository` is the image name as written (registry included); times are RFC 3339 in UTC.
pub fn input(
    candidate: &Candidate,
    materials: &[Material],
    upstream: &UpstreamInput,
    now: time::OffsetDateTime,
) -> serde_json::Value {
    serde_json::json!({
        "environment": candidate.environment,
        "image": {
            "repository": candidate.upstream_ref.name,
            "digest": candidate.digest.as_str(),
            "tag": candidate.upstream_ref.tag,
        },
        "materials": materials.iter().map(|m| serde_json::json!({
            "kind": m.kind.as_str(),
            "predicate_type": m.predicate_type,
            "signer": m.signer.signer,
            "digest": m.digest.as_str(),
            "statement": m.statement,
            // Additive to SPEC §6: the keyless certificate's identity and GitHub claims, `null` for keys.
            "certificate": m.signer.identity,
        })).collect::<Vec<_>>(),
        "upstream": {
            "environment": upstream.environment,
            "promoted_at": upstream.promoted_at.map_or(serde_json::Value::Null, rfc3339),
        },
        "now": rfc3339(now),
    })
}

fn fail(policy: &RegoPolicy, message: String) -> RuleResult {
    RuleResult {
        rule: policy.rule.clone(),
        outcome: Outcome::Fail,
        reason: Some(ReasonCode::RegoViolation),
        message,
        evidence: vec![],
    }
}

/// Reads `data.tollgate.result` (Chainloop's shape) into results. Anything else fails closed.
fn interpret(policy: &RegoPolicy, value: &serde_json::Value) -> Vec<RuleResult> {
    let shape = "expected {\"violations\": [string], \"skipped\": bool, \"skip_reason\": string}";
    let bad = |what: String| vec![fail(policy, format!("rego {}: {what}; {shape}", policy.label))];
    let Some(obj) = value.as_object() else {
        return bad(format!("result is {}", describe(value)));
    };
    let violations = match obj.get("violations") {
        None => Vec::new(),
        Some(serde_json::Value::Array(items)) => {
            let mut out = Vec::new();
            for item in items {
                match item.as_str() {
                    Some(s) => out.push(s.to_string()),
                    None => return bad(format!("a violation is {}, not a string", describe(item))),
                }
            }
            out
        }
        // A set of strings serialises as an array; anything else is a policy bug.
        Some(other) => return bad(format!("`violations` is {}", describe(other))),
    };
    let skipped = match obj.get("skipped") {
        None => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(other) => return bad(format!("`skipped` is {}", describe(other))),
    };
    let skip_reason = match obj.get("skip_reason") {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => return bad(format!("`skip_reason` is {}", describe(other))),
    };
    if !obj.contains_key("violations") && !obj.contains_key("skipped") {
        return bad("result has neither `violations` nor `skipped`".to_string());
    }
    // Violations win over `skipped`: a policy that reports both has found something.
    if !violations.is_empty() {
        return violations.into_iter().map(|v| fail(policy, v)).collect();
    }
    if skipped {
        let why = if skip_reason.is_empty() {
            "skipped (no reason given)".to_string()
        } else {
            format!("skipped: {skip_reason}")
        };
        return vec![RuleResult {
            rule: policy.rule.clone(),
            outcome: Outcome::Skip,
            reason: None,
            message: why,
            evidence: vec![],
        }];
    }
    vec![RuleResult {
        rule: policy.rule.clone(),
        outcome: Outcome::Pass,
        reason: None,
        message: format!("{}: no violations", policy.label),
        evidence: vec![],
    }]
}

fn describe(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "null".into(),
        serde_json::Value::Bool(b) => format!("the boolean {b}"),
        serde_json::Value::Number(n) => format!("the number {n}"),
        serde_json::Value::String(s) => format!("the string {s:?}"),
        serde_json::Value::Array(_) => "a list".into(),
        serde_json::Value::Object(_) => "an object".into(),
    }
}

enum Raw {
    Value(serde_json::Value),
    Undefined,
    Error(String),
}

fn run(engine: &regorus::Engine, input: regorus::Value) -> Raw {
    let mut engine = engine.clone();
    engine.set_input(input);
    match engine.eval_rule(ENTRYPOINT.to_string()) {
        Ok(regorus::Value::Undefined) => Raw::Undefined,
        Ok(v) => match v.to_json_str().map(|s| serde_json::from_str::<serde_json::Value>(&s)) {
            Ok(Ok(json)) => Raw::Value(json),
            Ok(Err(e)) => Raw::Error(format!("result is not JSON: {e}")),
            Err(e) => Raw::Error(format!("result is not JSON: {}", first_line(&e))),
        },
        Err(e) => Raw::Error(first_line(&e)),
    }
}

/// Evaluates one policy over `input`. Runs on its own thread so that a policy regorus cannot stop
/// in time costs a thread, not the gate.
pub fn evaluate_one(policy: &RegoPolicy, input: &serde_json::Value) -> Vec<RuleResult> {
    let value = regorus::Value::from(input.clone());
    let engine = policy.engine.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new().name("tollgate-rego".into()).spawn(move || {
        // The receiver may be gone after a timeout; nothing to do then.
        let _ = tx.send(run(&engine, value));
    });
    if let Err(e) = spawned {
        return vec![fail(
            policy,
            format!("rego {}: cannot start an evaluation: {e}", policy.label),
        )];
    }
    let hard = HARD_LIMIT.max(policy.limit * 2);
    match rx.recv_timeout(hard) {
        Ok(Raw::Value(v)) => interpret(policy, &v),
        Ok(Raw::Undefined) => vec![fail(
            policy,
            format!(
                "rego {}: {ENTRYPOINT} is undefined for this input (no `default result` and no rule body matched)",
                policy.label
            ),
        )],
        Ok(Raw::Error(e)) => {
            let message = if e.contains("time limit") {
                format!(
                    "rego {}: evaluation exceeded the {}s time limit: {e}",
                    policy.label,
                    policy.limit.as_secs_f64()
                )
            } else {
                format!("rego {}: evaluation error: {e}", policy.label)
            };
            vec![fail(policy, message)]
        }
        Err(_) => {
            tracing::error!(policy = %policy.label, "rego evaluation did not finish; failing closed");
            vec![fail(
                policy,
                format!(
                    "rego {}: evaluation did not finish within {}s; failing closed",
                    policy.label,
                    hard.as_secs_f64()
                ),
            )]
        }
    }
}

/// Evaluates every policy, in configuration order.
pub fn evaluate(policies: &[RegoPolicy], input: &serde_json::Value) -> Vec<RuleResult> {
    policies.iter().flat_map(|p| evaluate_one(p, input)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::{EvidenceSource, MaterialKind, SignerMatch};
    use crate::image::ImageRef;

    fn policy(src: &str) -> RegoPolicy {
        compile("rego:test.rego", "policies/test.rego", src).unwrap_or_else(|e| panic!("{e}"))
    }

    fn digest(n: u8) -> Digest {
        Digest::parse(&format!("sha256:{}", hex::encode([n; 32]))).unwrap()
    }

    fn candidate() -> Candidate {
        Candidate {
            environment: "prod".into(),
            upstream_ref: ImageRef::parse(&format!("ghcr.io/acme/api:1.2@{}", digest(1))).unwrap(),
            digest: digest(1),
            source_environment: Some("staging".into()),
            source_commit: None,
        }
    }

    fn now() -> time::OffsetDateTime {
        time::macros::datetime!(2025-03-01 12:00 UTC)
    }

    fn sbom() -> Material {
        Material {
            kind: MaterialKind::SbomCyclonedxJson,
            predicate_type: "https://cyclonedx.org/bom".into(),
            signer: SignerMatch {
                signer: "release-key".into(),
                method: "key",
                identity: None,
            },
            source: EvidenceSource::Att,
            digest: digest(2),
            statement: serde_json::json!({"predicate": {"components": []}}),
        }
    }

    fn input_doc() -> serde_json::Value {
        input(
            &candidate(),
            &[sbom()],
            &UpstreamInput {
                environment: Some("staging".into()),
                promoted_at: Some(time::macros::datetime!(2025-03-01 11:00 UTC)),
            },
            now(),
        )
    }

    fn outcomes(r: &[RuleResult]) -> Vec<(Outcome, Option<ReasonCode>, String)> {
        r.iter().map(|r| (r.outcome, r.reason, r.message.clone())).collect()
    }

    #[test]
    fn each_violation_is_a_rego_violation_failure() {
        let p = policy(
            r#"package tollgate
result := {"violations": v, "skipped": false, "skip_reason": ""}
v contains "no tag 1.2 in prod" if input.image.tag == "1.2"
v contains sprintf("environment %s", [input.environment])
"#,
        );
        let out = evaluate(&[p], &input_doc());
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|r| r.outcome == Outcome::Fail
            && r.reason == Some(ReasonCode::RegoViolation)
            && r.rule == "rego:test.rego"));
        let messages: Vec<_> = out.iter().map(|r| r.message.as_str()).collect();
        assert!(messages.contains(&"no tag 1.2 in prod"));
        assert!(messages.contains(&"environment prod"));
    }

    #[test]
    fn no_violations_passes() {
        let p = policy("package tollgate\nresult := {\"violations\": [], \"skipped\": false, \"skip_reason\": \"\"}\n");
        assert_eq!(evaluate_one(&p, &input_doc())[0].outcome, Outcome::Pass);
    }

    #[test]
    fn skipped_is_a_skip_with_the_reason() {
        let p = policy(
            "package tollgate\nresult := {\"violations\": [], \"skipped\": true, \"skip_reason\": \"no SARIF here\"}\n",
        );
        let out = evaluate_one(&p, &input_doc());
        assert_eq!(
            outcomes(&out),
            vec![(Outcome::Skip, None, "skipped: no SARIF here".into())]
        );
    }

    #[test]
    fn undefined_result_fails_closed() {
        let p = policy("package tollgate\nresult := {\"violations\": []} if input.environment == \"dev\"\n");
        let out = evaluate_one(&p, &input_doc());
        assert_eq!(out[0].outcome, Outcome::Fail);
        assert_eq!(out[0].reason, Some(ReasonCode::RegoViolation));
        assert!(out[0].message.contains("undefined"), "{}", out[0].message);
    }

    #[test]
    fn wrong_shapes_fail_closed() {
        for body in [
            "result := true",
            "result := {\"violations\": \"one\"}",
            "result := {\"violations\": [1]}",
            "result := {\"skipped\": \"yes\"}",
            "result := {\"allow\": true}",
        ] {
            let p = policy(&format!("package tollgate\n{body}\n"));
            let out = evaluate_one(&p, &input_doc());
            assert_eq!(out.len(), 1, "{body}");
            assert_eq!(
                (out[0].outcome, out[0].reason),
                (Outcome::Fail, Some(ReasonCode::RegoViolation)),
                "{body}"
            );
            assert!(
                out[0].message.starts_with("rego policies/test.rego: "),
                "{}",
                out[0].message
            );
        }
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let e = compile("rego:x.rego", "policies/x.rego", "package tollgate\nresult := {\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "rego policies/x.rego: syntax error: policies/x.rego:3:1: expecting expression"
        );
        let e = compile("rego:x.rego", "policies/x.rego", "package main\nresult := {}\n").unwrap_err();
        assert!(e.to_string().contains("expected `package tollgate`"), "{e}");
        let e = compile("rego:x.rego", "policies/x.rego", "package tollgate\nallow := true\n").unwrap_err();
        assert!(e.to_string().contains("defines no `result` rule"), "{e}");
    }

    #[test]
    fn runtime_errors_fail_closed_with_the_file_name() {
        let p = policy("package tollgate\nresult := {\"violations\": [sprintf(\"%d\", [1/0])]}\n");
        let out = evaluate_one(&p, &input_doc());
        assert_eq!(out[0].outcome, Outcome::Fail);
        assert!(
            out[0]
                .message
                .starts_with("rego policies/test.rego: evaluation error: "),
            "{}",
            out[0].message
        );
    }

    #[test]
    fn a_runaway_policy_is_stopped_and_fails_closed() {
        let src = r#"package tollgate
n := count([x | some x in numbers.range(1, 3000); some y in numbers.range(1, 3000); some z in numbers.range(1, 3000); x == y + z])
result := {"violations": [sprintf("%d", [n])]}
"#;
        let p = compile_with_limit("rego:slow.rego", "slow.rego", src, Duration::from_millis(200)).unwrap();
        let started = std::time::Instant::now();
        let out = evaluate_one(&p, &input_doc());
        assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].outcome, out[0].reason),
            (Outcome::Fail, Some(ReasonCode::RegoViolation))
        );
        assert!(
            out[0].message.contains("time limit") || out[0].message.contains("did not finish"),
            "{}",
            out[0].message
        );
    }

    #[test]
    fn input_has_the_spec_shape() {
        let doc = input_doc();
        assert_eq!(
            doc,
            serde_json::json!({
                "environment": "prod",
                "image": {"repository": "ghcr.io/acme/api", "digest": digest(1).as_str(), "tag": "1.2"},
                "materials": [{
                    "kind": "SBOM_CYCLONEDX_JSON",
                    "predicate_type": "https://cyclonedx.org/bom",
                    "signer": "release-key",
                    "digest": digest(2).as_str(),
                    "statement": {"predicate": {"components": []}},
                    "certificate": null,
                }],
                "upstream": {"environment": "staging", "promoted_at": "2025-03-01T11:00:00Z"},
                "now": "2025-03-01T12:00:00Z",
            })
        );
        // The policy sees the same document.
        let p = policy(
            r#"package tollgate
result := {"violations": [v]} if {
  m := input.materials[0]
  v := sprintf("%s %s %s %s", [m.kind, m.signer, input.upstream.promoted_at, input.now])
}
"#,
        );
        assert_eq!(
            evaluate_one(&p, &doc)[0].message,
            "SBOM_CYCLONEDX_JSON release-key 2025-03-01T11:00:00Z 2025-03-01T12:00:00Z"
        );
    }
}
