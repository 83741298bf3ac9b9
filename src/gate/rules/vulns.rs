//! `max_vulnerabilities`: counts the candidate's vulnerabilities by severity from verified scan
//! reports (cosign `vuln/v1` holding Trivy or Grype JSON, in-toto `vulns/v0.1`, CycloneDX
//! `vulnerabilities[]`), minus what OpenVEX statements about the candidate declare not affected or fixed.
//!
//! Choices a reviewer should know about (mirrored in `docs/policy.md`):
//! - A finding is a (vulnerability id, package name@version) pair. The same pair reported by several
//!   reports counts once, at the highest severity any of them gives it. A report that names no
//!   package (in-toto `vulns`) adds its severity to the packaged findings of the same id, or counts
//!   once on its own.
//! - Severity of one CycloneDX vulnerability with several ratings: the ratings of the source the
//!   scanner itself names in `vulnerability.source` (the distribution or ecosystem advisory it
//!   matched, as Trivy does for its own `Severity`), else `nvd`, else every rating; within the chosen
//!   source the highest rating wins (Trivy's golden file has NVD CVSSv2 `high` and CVSSv31 `critical`
//!   for one CVE: that is `critical`). Ratings of `unknown` severity are ignored while choosing.
//! - A VEX statement suppresses a finding only when one of its products names the candidate's digest
//!   (`pkg:oci/…@sha256%3A…`, an `@id` or identifier holding `sha256:…`, or a `sha-256` hash); the
//!   repository name and qualifiers of that product are not compared, because the digest alone
//!   identifies the image. Subcomponents of that product narrow the statement to the packages they
//!   name (by package name, and version when given). A statement about a package or another image
//!   says nothing about this image and is ignored. The latest applicable statement wins.
//! - A report in a shape this module cannot read fails the rule: it may hold findings.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{array, distinct, embedded, enumerate, fail, is_kind, pass, predicate, str_at};
use crate::gate::{Material, MaterialKind, RuleResult};
use crate::image::Digest;
use crate::reason::ReasonCode;

pub const RULE: &str = "max_vulnerabilities";

const INTOTO_VULNS: &str = "https://in-toto.io/attestation/vulns";

/// Normalised severities, ordered so that `max` is the more severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Unknown,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// Most severe first: the order of messages.
    pub const ALL: [Severity; 5] = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Unknown,
    ];

    /// The config key (`critical`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
            Severity::Unknown => "unknown",
        }
    }

    /// A severity name or a CVSS base score as scanners write them. Names from Red Hat (`important`,
    /// `moderate`), GitHub (`moderate`) and Grype (`negligible`) map onto the five config keys;
    /// `negligible`, `info` and `none` count as `low` so that nothing reported is silently dropped.
    pub fn parse(s: &str) -> Severity {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "critical" => Severity::Critical,
            "high" | "important" => Severity::High,
            "medium" | "moderate" => Severity::Medium,
            "low" | "negligible" | "info" | "informational" | "none" => Severity::Low,
            _ => s.parse::<f64>().map_or(Severity::Unknown, Severity::from_score),
        }
    }

    /// CVSS v3 qualitative ranges (FIRST CVSS v3.1 specification §5).
    pub fn from_score(score: f64) -> Severity {
        match score {
            s if s.is_nan() => Severity::Unknown,
            s if s >= 9.0 => Severity::Critical,
            s if s >= 7.0 => Severity::High,
            s if s >= 4.0 => Severity::Medium,
            s if s >= 0.0 => Severity::Low,
            _ => Severity::Unknown,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An affected package, compared by name (case-insensitive) and version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Package {
    pub name: String,
    pub version: Option<String>,
}

impl Package {
    fn new(name: &str, version: Option<&str>) -> Option<Package> {
        let name = name.trim();
        (!name.is_empty()).then(|| Package {
            name: name.to_ascii_lowercase(),
            version: version.map(str::trim).filter(|v| !v.is_empty()).map(str::to_string),
        })
    }

    /// `pkg:type/namespace/name@version?qualifiers#subpath` → name and version (percent-decoded).
    pub fn from_purl(purl: &str) -> Option<Package> {
        let rest = purl.trim().strip_prefix("pkg:")?;
        let rest = rest.split(['?', '#']).next().unwrap_or(rest);
        let (path, version) = match rest.rsplit_once('@') {
            Some((p, v)) => (p, Some(percent_decode(v))),
            None => (rest, None),
        };
        let name = percent_decode(path.rsplit('/').next().unwrap_or(path));
        Package::new(&name, version.as_deref())
    }
}

impl fmt::Display for Package {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{}@{v}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// One vulnerability of one package as one report states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Upper-cased (`CVE-2019-14697`), so that reports and VEX compare equal.
    pub id: String,
    pub package: Option<Package>,
    pub severity: Severity,
}

impl Finding {
    fn new(id: &str, package: Option<Package>, severity: Severity) -> Option<Finding> {
        let id = id.trim();
        (!id.is_empty()).then(|| Finding {
            id: id.to_ascii_uppercase(),
            package,
            severity,
        })
    }
}

/// What one material says about vulnerabilities.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// A scan result (possibly empty: a clean scan is evidence too).
    Findings {
        format: &'static str,
        findings: Vec<Finding>,
    },
    /// A vulnerability report whose content this module cannot read.
    Unreadable(String),
    /// Not vulnerability evidence (an SBOM without `vulnerabilities`, another kind).
    None,
}

/// Reads the findings of one material.
pub fn read(m: &Material) -> Report {
    let p = predicate(m);
    if is_kind(m, MaterialKind::VulnerabilityReport) {
        if m.predicate_type.starts_with(INTOTO_VULNS) {
            let Some(results) = p.get("scanner").and_then(|s| s.get("result")).and_then(Value::as_array) else {
                return Report::Unreadable("in-toto vulns predicate without a scanner.result list".into());
            };
            return Report::Findings {
                format: "in-toto vulns",
                findings: results.iter().filter_map(intoto_finding).collect(),
            };
        }
        let Some(result) = p.get("scanner").and_then(|s| s.get("result")).and_then(embedded) else {
            return Report::Unreadable("cosign vuln predicate without scanner.result".into());
        };
        return match scanner_report(&result) {
            Some(report) => report,
            None => Report::Unreadable(
                "scanner.result is neither Trivy JSON (Results), Grype JSON (matches) nor CycloneDX (vulnerabilities)"
                    .into(),
            ),
        };
    }
    if is_kind(m, MaterialKind::SbomCyclonedxJson) && p.get("vulnerabilities").is_some() {
        return match p.get("vulnerabilities").and_then(Value::as_array) {
            Some(_) => Report::Findings {
                format: "CycloneDX",
                findings: cyclonedx(p),
            },
            None => Report::Unreadable("CycloneDX `vulnerabilities` is not a list".into()),
        };
    }
    Report::None
}

/// The raw report a scanner wrote, recognised by its shape.
fn scanner_report(v: &Value) -> Option<Report> {
    if v.get("Results").is_some() || (v.get("SchemaVersion").is_some() && v.get("ArtifactName").is_some()) {
        return Some(Report::Findings {
            format: "Trivy",
            findings: trivy(v),
        });
    }
    if v.get("matches").is_some_and(Value::is_array) {
        return Some(Report::Findings {
            format: "Grype",
            findings: grype(v),
        });
    }
    if v.get("vulnerabilities").is_some_and(Value::is_array) || str_at(v, &["bomFormat"]) == Some("CycloneDX") {
        return Some(Report::Findings {
            format: "CycloneDX",
            findings: cyclonedx(v),
        });
    }
    None
}

/// Trivy JSON (`--format json`, schema 2): `Results[].Vulnerabilities[]`.
fn trivy(v: &Value) -> Vec<Finding> {
    array(v, "Results")
        .iter()
        .flat_map(|r| array(r, "Vulnerabilities"))
        .filter_map(|vuln| {
            let package = match str_at(vuln, &["PkgName"]) {
                Some(name) => Package::new(name, str_at(vuln, &["InstalledVersion"])),
                None => str_at(vuln, &["PkgIdentifier", "PURL"]).and_then(Package::from_purl),
            };
            let severity = str_at(vuln, &["Severity"]).map_or(Severity::Unknown, Severity::parse);
            Finding::new(str_at(vuln, &["VulnerabilityID"])?, package, severity)
        })
        .collect()
}

/// Grype JSON (`-o json`): `matches[].vulnerability` and `matches[].artifact`.
fn grype(v: &Value) -> Vec<Finding> {
    array(v, "matches")
        .iter()
        .filter_map(|m| {
            let vuln = m.get("vulnerability")?;
            let artifact = m.get("artifact").unwrap_or(&Value::Null);
            let package = match str_at(artifact, &["name"]) {
                Some(name) => Package::new(name, str_at(artifact, &["version"])),
                None => str_at(artifact, &["purl"]).and_then(Package::from_purl),
            };
            let severity = str_at(vuln, &["severity"]).map_or(Severity::Unknown, Severity::parse);
            Finding::new(str_at(vuln, &["id"])?, package, severity)
        })
        .collect()
}

/// One entry of in-toto `vulns` v0.1 `scanner.result[]`: `{id, severity: [{method, score}]}`, or the
/// same under a `vulnerability` key as the field list of the specification spells it.
fn intoto_finding(item: &Value) -> Option<Finding> {
    let v = item.get("vulnerability").unwrap_or(item);
    let ratings: Vec<(Option<&str>, Severity)> = array(v, "severity")
        .iter()
        .filter_map(|s| {
            let score = match s.get("score")? {
                Value::String(s) => Severity::parse(s),
                Value::Number(n) => n.as_f64().map_or(Severity::Unknown, Severity::from_score),
                _ => return None,
            };
            Some((str_at(s, &["method"]), score))
        })
        .collect();
    Finding::new(str_at(v, &["id"])?, None, pick(&ratings, None))
}

/// CycloneDX 1.4+ `vulnerabilities[]`, each expanded over the components it `affects`.
fn cyclonedx(bom: &Value) -> Vec<Finding> {
    let mut components = BTreeMap::new();
    collect_components(bom.get("metadata").and_then(|m| m.get("component")), &mut components);
    for c in array(bom, "components") {
        collect_components(Some(c), &mut components);
    }
    let mut out = Vec::new();
    for vuln in array(bom, "vulnerabilities") {
        let Some(id) = str_at(vuln, &["id"]) else { continue };
        let ratings: Vec<(Option<&str>, Severity)> = array(vuln, "ratings")
            .iter()
            .map(|r| {
                let severity = match (str_at(r, &["severity"]), r.get("score").and_then(Value::as_f64)) {
                    (Some(s), _) => Severity::parse(s),
                    (None, Some(score)) => Severity::from_score(score),
                    (None, None) => Severity::Unknown,
                };
                (str_at(r, &["source", "name"]), severity)
            })
            .collect();
        let severity = pick(&ratings, str_at(vuln, &["source", "name"]));
        let affects = array(vuln, "affects");
        if affects.is_empty() {
            out.extend(Finding::new(id, None, severity));
        }
        for a in affects {
            let package = str_at(a, &["ref"])
                .and_then(|r| components.get(r).cloned().flatten().or_else(|| Package::from_purl(r)));
            out.extend(Finding::new(id, package, severity));
        }
    }
    out
}

fn collect_components(c: Option<&Value>, out: &mut BTreeMap<String, Option<Package>>) {
    let Some(c) = c else { return };
    if let Some(r) = str_at(c, &["bom-ref"]) {
        let package = match str_at(c, &["name"]) {
            Some(name) => Package::new(name, str_at(c, &["version"])),
            None => str_at(c, &["purl"]).and_then(Package::from_purl),
        };
        out.insert(r.to_string(), package);
    }
    for sub in array(c, "components") {
        collect_components(Some(sub), out);
    }
}

/// The severity of one vulnerability from its ratings: the highest rating of the first source in
/// `preferred`, `nvd`, any, that has a rating other than `unknown` (see the module comment for why).
fn pick(ratings: &[(Option<&str>, Severity)], preferred: Option<&str>) -> Severity {
    let known: Vec<&(Option<&str>, Severity)> = ratings.iter().filter(|(_, s)| *s != Severity::Unknown).collect();
    let of = |source: &str| {
        known
            .iter()
            .filter(|(s, _)| s.is_some_and(|s| s.eq_ignore_ascii_case(source)))
            .map(|(_, sev)| *sev)
            .max()
    };
    preferred
        .and_then(of)
        .or_else(|| of("nvd"))
        .or_else(|| known.iter().map(|(_, s)| *s).max())
        .unwrap_or(Severity::Unknown)
}

/// One OpenVEX statement that applies to the candidate image.
#[derive(Debug, Clone, PartialEq)]
pub struct VexStatement {
    /// Vulnerability name, `@id` and aliases, upper-cased.
    pub ids: Vec<String>,
    /// `None`: every package of the image; otherwise only these subcomponents.
    pub packages: Option<Vec<Package>>,
    pub status: String,
    pub timestamp: Option<OffsetDateTime>,
    /// Position among all statements read, the tie-breaker after the timestamp.
    pub order: (usize, usize),
    pub material: Digest,
}

impl VexStatement {
    /// `not_affected` and `fixed` take a finding out of the count; `affected` and
    /// `under_investigation` leave it in.
    pub fn suppresses(&self) -> bool {
        matches!(self.status.as_str(), "not_affected" | "fixed")
    }

    fn applies(&self, f: &Finding) -> bool {
        self.ids.contains(&f.id)
            && match (&self.packages, &f.package) {
                (None, _) => true,
                // A report without package names cannot be narrowed to a subcomponent: keep counting it.
                (Some(_), None) => false,
                (Some(subs), Some(p)) => subs
                    .iter()
                    .any(|s| s.name == p.name && (s.version.is_none() || s.version == p.version)),
            }
    }
}

/// The statements of one OpenVEX document (v0.0.1 or v0.2.0) that name the candidate digest.
pub fn vex_statements(doc: &Value, candidate: &Digest, material: &Digest, doc_index: usize) -> Vec<VexStatement> {
    let doc_time = str_at(doc, &["timestamp"]).and_then(parse_time);
    let mut out = Vec::new();
    for (i, st) in array(doc, "statements").iter().enumerate() {
        let Some(status) = str_at(st, &["status"]) else {
            continue;
        };
        let ids = vex_ids(st.get("vulnerability").unwrap_or(&Value::Null));
        if ids.is_empty() {
            continue;
        }
        // v0.0.1 put subcomponents on the statement, v0.2.0 on each product.
        let statement_subs = array(st, "subcomponents");
        for product in array(st, "products") {
            if !names_digest(product, candidate) {
                continue;
            }
            let subs: Vec<Package> = statement_subs
                .iter()
                .chain(array(product, "subcomponents"))
                .filter_map(component_package)
                .collect();
            let has_subs = !statement_subs.is_empty() || !array(product, "subcomponents").is_empty();
            out.push(VexStatement {
                ids: ids.clone(),
                // Subcomponents that cannot be read narrow the statement to nothing rather than widen it.
                packages: has_subs.then_some(subs),
                status: status.to_string(),
                timestamp: str_at(st, &["timestamp"]).and_then(parse_time).or(doc_time),
                order: (doc_index, i),
                material: material.clone(),
            });
        }
    }
    out
}

fn vex_ids(v: &Value) -> Vec<String> {
    let mut ids: Vec<String> = match v {
        Value::String(s) => vec![s.clone()],
        Value::Object(_) => ["name", "@id"]
            .iter()
            .filter_map(|k| str_at(v, &[k]))
            .map(str::to_string)
            .chain(array(v, "aliases").iter().filter_map(Value::as_str).map(str::to_string))
            .collect(),
        _ => vec![],
    };
    ids.retain(|s| !s.trim().is_empty());
    ids.iter_mut().for_each(|s| *s = s.trim().to_ascii_uppercase());
    ids
}

/// Does a VEX product (a string, or an object with `@id`, `identifiers`, `hashes`) name the digest?
fn names_digest(product: &Value, candidate: &Digest) -> bool {
    let wanted = candidate.as_str();
    let mut names: Vec<&str> = Vec::new();
    match product {
        Value::String(s) => names.push(s),
        Value::Object(o) => {
            names.extend(o.get("@id").and_then(Value::as_str));
            if let Some(ids) = o.get("identifiers").and_then(Value::as_object) {
                names.extend(ids.values().filter_map(Value::as_str));
            }
            if let Some(h) = o.get("hashes").and_then(|h| h.get("sha-256")).and_then(Value::as_str) {
                if h.eq_ignore_ascii_case(candidate.hex()) {
                    return true;
                }
            }
        }
        _ => {}
    }
    names
        .iter()
        .any(|n| percent_decode(n).to_ascii_lowercase().contains(wanted))
}

fn component_package(c: &Value) -> Option<Package> {
    let id = match c {
        Value::String(s) => s.as_str(),
        other => str_at(other, &["identifiers", "purl"]).or_else(|| str_at(other, &["@id"]))?,
    };
    Package::from_purl(id)
}

fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// `%3A` → `:` and the like; malformed escapes stay as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let (b'%', Some(Some(hi)), Some(Some(lo))) = (
            bytes[i],
            bytes.get(i + 1).map(|b| hex(*b)),
            bytes.get(i + 2).map(|b| hex(*b)),
        ) {
            // Both digits are below 16, so this fits a byte.
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The latest statement that applies to `f`, if it suppresses `f`.
pub fn suppressed_by<'a>(f: &Finding, statements: &'a [VexStatement]) -> Option<&'a VexStatement> {
    statements
        .iter()
        .filter(|s| s.applies(f))
        .max_by(|a, b| (a.timestamp, a.order).cmp(&(b.timestamp, b.order)))
        .filter(|s| s.suppresses())
}

/// Merged findings: one per (id, package), at the highest severity reported.
fn merge(findings: impl IntoIterator<Item = Finding>) -> Vec<Finding> {
    let mut by_key: BTreeMap<(String, Option<Package>), Severity> = BTreeMap::new();
    for f in findings {
        let s = by_key.entry((f.id, f.package)).or_insert(f.severity);
        *s = (*s).max(f.severity);
    }
    // A package-less finding of an id that other reports tie to packages adds to those instead.
    let packaged: BTreeSet<String> = by_key
        .keys()
        .filter(|(_, p)| p.is_some())
        .map(|(id, _)| id.clone())
        .collect();
    let mut unpackaged: BTreeMap<String, Severity> = BTreeMap::new();
    by_key.retain(|(id, p), s| {
        if p.is_none() && packaged.contains(id) {
            unpackaged.insert(id.clone(), *s);
            false
        } else {
            true
        }
    });
    by_key
        .into_iter()
        .map(|((id, package), severity)| {
            let severity = unpackaged.get(&id).map_or(severity, |u| severity.max(*u));
            Finding { id, package, severity }
        })
        .collect()
}

/// Evaluates `max_vulnerabilities` (severity → maximum count; severities not listed are unlimited).
pub fn evaluate(limits: &BTreeMap<String, u32>, materials: &[Material], candidate: &Digest) -> RuleResult {
    let mut reports: Vec<(&Material, &'static str)> = Vec::new();
    let mut unreadable: Vec<String> = Vec::new();
    let mut all = Vec::new();
    for m in distinct(materials, |_| true) {
        match read(m) {
            Report::Findings { format, findings } => {
                reports.push((m, format));
                all.extend(findings);
            }
            Report::Unreadable(why) => unreadable.push(format!("{} ({why})", m.digest.short())),
            Report::None => {}
        }
    }
    let mut vex = Vec::new();
    for (i, m) in distinct(materials, |m| is_kind(m, MaterialKind::Openvex))
        .into_iter()
        .enumerate()
    {
        vex.extend(vex_statements(predicate(m), candidate, &m.digest, i));
    }

    let used_reports = reports
        .iter()
        .map(|(m, format)| format!("{format} {}", m.digest.short()))
        .collect::<Vec<_>>();
    if reports.is_empty() {
        let mut message = format!("no vulnerability evidence to evaluate {RULE}");
        if !unreadable.is_empty() {
            message.push_str(&format!("; unreadable report(s): {}", unreadable.join("; ")));
        }
        return fail(RULE, ReasonCode::MaterialMissing, message, vec![]);
    }

    let merged = merge(all);
    let mut counted: BTreeMap<Severity, Vec<&Finding>> = BTreeMap::new();
    let mut suppressed = 0usize;
    let mut vex_used: BTreeSet<Digest> = BTreeSet::new();
    for f in &merged {
        match suppressed_by(f, &vex) {
            Some(s) => {
                suppressed += 1;
                vex_used.insert(s.material.clone());
            }
            None => counted.entry(f.severity).or_default().push(f),
        }
    }
    let mut evidence: Vec<Digest> = reports.iter().map(|(m, _)| m.digest.clone()).collect();
    evidence.extend(vex_used.iter().cloned());

    let count = |s: Severity| counted.get(&s).map_or(0, Vec::len);
    let mut over = Vec::new();
    let mut within = Vec::new();
    for s in Severity::ALL {
        let Some(limit) = limits.get(s.as_str()) else { continue };
        let n = count(s);
        if n as u64 > u64::from(*limit) {
            over.push((s, n, *limit));
        } else {
            within.push(format!("{s} {n} ≤ {limit}"));
        }
    }
    let totals = Severity::ALL
        .iter()
        .filter(|s| count(**s) > 0)
        .map(|s| format!("{} {s}", count(*s)))
        .collect::<Vec<_>>();
    let mut context = format!(
        "{} finding(s){} from {}",
        merged.len() - suppressed,
        if totals.is_empty() {
            String::new()
        } else {
            format!(" ({})", totals.join(", "))
        },
        enumerate(&used_reports, 4)
    );
    if suppressed > 0 {
        let docs: Vec<String> = vex_used.iter().map(Digest::short).collect();
        context.push_str(&format!("; {suppressed} suppressed by OpenVEX {}", docs.join(", ")));
    }

    if !over.is_empty() {
        let summary: Vec<String> = over.iter().map(|(s, n, l)| format!("{s} {n} > {l}")).collect();
        let examples: Vec<String> = over
            .iter()
            .flat_map(|(s, _, _)| counted.get(s).into_iter().flatten())
            .map(|f| match &f.package {
                Some(p) => format!("{} ({p})", f.id),
                None => f.id.clone(),
            })
            .collect();
        return fail(
            RULE,
            ReasonCode::VulnerabilitiesOverThreshold,
            format!("{}: {}; {context}", summary.join(", "), enumerate(&examples, 5)),
            evidence,
        );
    }
    if !unreadable.is_empty() {
        // Counting only what could be read would pass an image on the strength of a partial view.
        return fail(
            RULE,
            ReasonCode::MaterialMissing,
            format!(
                "cannot read every vulnerability report: {}; the rule fails closed ({context})",
                unreadable.join("; ")
            ),
            evidence,
        );
    }
    pass(
        RULE,
        format!("within limits ({}): {context}", within.join(", ")),
        evidence,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::rules::testing::{digest, material, vector};
    use serde_json::json;

    const COSIGN_VULN: &str = "https://cosign.sigstore.dev/attestation/vuln/v1";
    const CDX: &str = "https://cyclonedx.org/bom";
    const OPENVEX: &str = "https://openvex.dev/ns/v0.2.0";
    /// The image the vexctl samples are about.
    const NGINX: &str = "sha256:13d22ec63300e16014d4a42aed735207a8b33c223cff19627dd3042e5a10a3a0";

    fn cosign_vuln(result: Value, tag: u8) -> Material {
        material(
            COSIGN_VULN,
            json!({"scanner": {"uri": "pkg:github/aquasecurity/trivy", "result": result}}),
            tag,
        )
    }

    fn limits(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn counts(m: &Material) -> BTreeMap<Severity, usize> {
        let Report::Findings { findings, .. } = read(m) else {
            panic!("not readable: {:?}", read(m))
        };
        let mut out = BTreeMap::new();
        for f in merge(findings) {
            *out.entry(f.severity).or_insert(0) += 1;
        }
        out
    }

    fn candidate() -> Digest {
        Digest::parse(NGINX).unwrap()
    }

    #[test]
    fn severities_normalise_names_and_scores() {
        let cases = [
            ("CRITICAL", Severity::Critical),
            ("High", Severity::High),
            ("important", Severity::High),
            ("moderate", Severity::Medium),
            ("Negligible", Severity::Low),
            ("none", Severity::Low),
            ("UNKNOWN", Severity::Unknown),
            ("9.8", Severity::Critical),
            ("7.0", Severity::High),
            ("5.2", Severity::Medium),
            ("0.1", Severity::Low),
            ("bogus", Severity::Unknown),
        ];
        for (s, want) in cases {
            assert_eq!(Severity::parse(s), want, "{s}");
        }
    }

    #[test]
    fn counts_each_report_format_as_upstream_describes_it() {
        let sev = |c, h, m, l| {
            let mut out = BTreeMap::new();
            for (s, n) in [
                (Severity::Critical, c),
                (Severity::High, h),
                (Severity::Medium, m),
                (Severity::Low, l),
            ] {
                if n > 0 {
                    out.insert(s, n);
                }
            }
            out
        };
        let table: [(&str, Material, BTreeMap<Severity, usize>); 3] = [
            // CVE-2019-14697 on musl and musl-utils (2 critical), CVE-2019-1549/1551 on libcrypto and libssl.
            (
                "trivy json",
                cosign_vuln(vector("policy/trivy-alpine-39.json"), 1),
                sev(2, 0, 4, 0),
            ),
            (
                "grype json",
                cosign_vuln(vector("policy/grype-0.94.0-busybox-1.32.1.json"), 2),
                sev(1, 10, 2, 2),
            ),
            // libidn2 critical (NVD, debian has no rating), bash low (debian), activesupport high (ghsa).
            (
                "trivy cyclonedx",
                material(CDX, vector("policy/trivy-fluentd-multiple-lockfiles-short.cdx.json"), 3),
                sev(1, 1, 0, 1),
            ),
        ];
        for (name, m, want) in table {
            assert_eq!(counts(&m), want, "{name}");
        }
    }

    #[test]
    fn a_cyclonedx_rating_comes_from_the_scanners_own_source_then_nvd() {
        let bom = vector("policy/trivy-fluentd-multiple-lockfiles-short.cdx.json");
        let Report::Findings { findings, .. } = read(&material(CDX, bom, 1)) else {
            panic!()
        };
        let by_id: BTreeMap<&str, (Severity, String)> = findings
            .iter()
            .map(|f| (f.id.as_str(), (f.severity, f.package.as_ref().unwrap().to_string())))
            .collect();
        assert_eq!(
            by_id["CVE-2019-18224"],
            (Severity::Critical, "libidn2-0@2.0.5-1".into())
        );
        assert_eq!(by_id["CVE-2019-18276"], (Severity::Low, "bash@5.0-4".into()));
        assert_eq!(by_id["CVE-2020-8165"], (Severity::High, "activesupport@6.0.2.1".into()));
    }

    /// Name, materials, limits, expected reason, text the message must hold.
    type Row = (
        &'static str,
        Vec<Material>,
        BTreeMap<String, u32>,
        Option<ReasonCode>,
        &'static str,
    );

    #[test]
    fn thresholds_pass_and_fail_on_real_reports() {
        let trivy = cosign_vuln(vector("policy/trivy-alpine-39.json"), 1);
        let grype = cosign_vuln(vector("policy/grype-0.94.0-busybox-1.32.1.json"), 2);
        let cdx = material(CDX, vector("policy/trivy-fluentd-multiple-lockfiles-short.cdx.json"), 3);
        let table: Vec<Row> = vec![
            (
                "trivy over",
                vec![trivy.clone()],
                limits(&[("critical", 0)]),
                Some(ReasonCode::VulnerabilitiesOverThreshold),
                "critical 2 > 0",
            ),
            (
                "trivy within",
                vec![trivy.clone()],
                limits(&[("critical", 2), ("medium", 4)]),
                None,
                "critical 2 ≤ 2",
            ),
            (
                "grype over",
                vec![grype.clone()],
                limits(&[("critical", 0), ("high", 3)]),
                Some(ReasonCode::VulnerabilitiesOverThreshold),
                "critical 1 > 0, high 10 > 3",
            ),
            (
                "grype within",
                vec![grype.clone()],
                limits(&[("critical", 1), ("high", 10), ("low", 2)]),
                None,
                "15 finding(s)",
            ),
            (
                "cdx over",
                vec![cdx.clone()],
                limits(&[("critical", 0)]),
                Some(ReasonCode::VulnerabilitiesOverThreshold),
                "CVE-2019-18224 (libidn2-0@2.0.5-1)",
            ),
            (
                "cdx within",
                vec![cdx.clone()],
                limits(&[("critical", 1), ("high", 1)]),
                None,
                "3 finding(s)",
            ),
            (
                "all three add up",
                vec![trivy, grype, cdx],
                limits(&[("critical", 3)]),
                Some(ReasonCode::VulnerabilitiesOverThreshold),
                "critical 4 > 3",
            ),
        ];
        for (name, ms, lim, reason, needle) in table {
            let r = evaluate(&lim, &ms, &candidate());
            assert_eq!(r.reason, reason, "{name}: {}", r.message);
            assert!(r.message.contains(needle), "{name}: {}", r.message);
            assert_eq!(r.evidence.len(), ms.len(), "{name}");
        }
    }

    #[test]
    fn the_same_finding_in_two_reports_counts_once_at_its_highest_severity() {
        let a = cosign_vuln(vector("policy/trivy-alpine-39.json"), 1);
        let mut doc = vector("policy/trivy-alpine-39.json");
        // The same report seen by another scanner that rates CVE-2019-1549 high.
        doc["Results"][0]["Vulnerabilities"][0]["Severity"] = json!("HIGH");
        let b = cosign_vuln(doc, 2);
        let r = evaluate(&limits(&[("high", 0)]), &[a.clone(), b], &candidate());
        assert!(r.message.starts_with("high 1 > 0"), "{}", r.message);
        // The same envelope verified by two signers is one report.
        let mut twice = a.clone();
        twice.signer.signer = "ci-key".into();
        let r = evaluate(&limits(&[("critical", 2)]), &[a, twice], &candidate());
        assert_eq!(r.reason, None, "{}", r.message);
        assert_eq!(r.evidence.len(), 1);
    }

    #[test]
    fn intoto_vulns_use_their_severity_list_and_join_packaged_findings() {
        let intoto = material(
            "https://in-toto.io/attestation/vulns/v0.1",
            json!({"scanner": {"uri": "pkg:github/aquasecurity/trivy", "result": [
                {"id": "CVE-2019-14697", "severity": [{"method": "nvd", "score": "critical"}]},
                {"vulnerability": {"id": "CVE-123", "severity": [{"method": "nvd", "score": "medium"}, {"method": "cvss_score", "score": "9.1"}]}},
            ]}}),
            5,
        );
        assert_eq!(
            counts(&intoto),
            BTreeMap::from([(Severity::Critical, 1), (Severity::Medium, 1)])
        );
        let trivy = cosign_vuln(vector("policy/trivy-alpine-39.json"), 1);
        // CVE-2019-14697 is already tied to musl and musl-utils: it adds no third finding.
        let r = evaluate(&limits(&[("critical", 2)]), &[trivy, intoto], &candidate());
        assert_eq!(r.reason, None, "{}", r.message);
    }

    #[test]
    fn no_vulnerability_evidence_fails_closed() {
        let syft = material(CDX, vector("policy/syft-0.73.0.cyclonedx.json"), 1);
        let provenance = material("https://slsa.dev/provenance/v1", json!({}), 2);
        let r = evaluate(&limits(&[("critical", 0)]), &[syft, provenance], &candidate());
        assert_eq!(r.reason, Some(ReasonCode::MaterialMissing));
        assert_eq!(r.message, "no vulnerability evidence to evaluate max_vulnerabilities");
    }

    #[test]
    fn an_unreadable_report_fails_closed_even_beside_a_clean_one() {
        let odd = cosign_vuln(json!({"findings": []}), 1);
        let r = evaluate(&limits(&[("critical", 0)]), std::slice::from_ref(&odd), &candidate());
        assert_eq!(r.reason, Some(ReasonCode::MaterialMissing));
        assert!(r.message.contains("neither Trivy JSON"), "{}", r.message);
        let clean = cosign_vuln(json!({"SchemaVersion": 2, "ArtifactName": "x", "Results": []}), 2);
        let r = evaluate(&limits(&[("critical", 0)]), &[clean.clone(), odd], &candidate());
        assert_eq!(r.reason, Some(ReasonCode::MaterialMissing), "{}", r.message);
        let r = evaluate(&limits(&[("critical", 0)]), &[clean], &candidate());
        assert_eq!(r.reason, None, "{}", r.message);
    }

    #[test]
    fn a_report_embedded_as_json_text_is_read() {
        let text = serde_json::to_string(&vector("policy/trivy-alpine-39.json")).unwrap();
        assert_eq!(counts(&cosign_vuln(Value::String(text), 1))[&Severity::Critical], 2);
    }

    /// vexctl's own test filters the Trivy SARIF of this nginx image: 99 results, 98 after the
    /// one-statement VEX, 96 after the two-vulnerability one (`pkg/ctl/ctl_test.go::TestVexReport`).
    #[test]
    fn vex_statements_filter_the_nginx_sarif_as_vexctl_does() {
        let sarif = vector("policy/vexctl-nginx-trivy-0.42.1.sarif.json");
        let findings: Vec<Finding> = array(&sarif["runs"][0], "results")
            .iter()
            .filter_map(|r| Finding::new(str_at(r, &["ruleId"])?, None, Severity::Unknown))
            .collect();
        assert_eq!(findings.len(), 99);
        for (file, want) in [
            ("policy/vexctl-sample-1statement.openvex.json", 98),
            ("policy/vexctl-sample-2vulns.openvex.json", 96),
        ] {
            let st = vex_statements(&vector(file), &candidate(), &digest(7), 0);
            let left = findings.iter().filter(|f| suppressed_by(f, &st).is_none()).count();
            assert_eq!(left, want, "{file}");
        }
        // For another image the same documents suppress nothing.
        let st = vex_statements(
            &vector("policy/vexctl-sample-2vulns.openvex.json"),
            &digest(1),
            &digest(7),
            0,
        );
        assert!(st.is_empty());
    }

    #[test]
    fn two_vulns_vex_suppresses_cve_2023_27103_for_the_nginx_digest() {
        let report = cosign_vuln(
            json!({"SchemaVersion": 2, "ArtifactName": "nginx", "Results": [{"Target": "nginx (debian 12.0)", "Vulnerabilities": [
                {"VulnerabilityID": "CVE-2023-27103", "PkgName": "libde265-0", "InstalledVersion": "1.0.11-1", "Severity": "HIGH"},
                {"VulnerabilityID": "CVE-2007-5686", "PkgName": "login", "InstalledVersion": "1:4.13+dfsg1-1", "Severity": "LOW"},
                {"VulnerabilityID": "CVE-2007-5686", "PkgName": "passwd", "InstalledVersion": "1:4.13+dfsg1-1", "Severity": "LOW"},
            ]}]}),
            1,
        );
        let vex = material(OPENVEX, vector("policy/vexctl-sample-2vulns.openvex.json"), 9);
        let lim = limits(&[("high", 0), ("low", 0)]);
        let r = evaluate(&lim, std::slice::from_ref(&report), &candidate());
        assert_eq!(
            r.reason,
            Some(ReasonCode::VulnerabilitiesOverThreshold),
            "{}",
            r.message
        );
        assert!(r.message.starts_with("high 1 > 0, low 2 > 0"), "{}", r.message);
        let r = evaluate(&lim, &[report.clone(), vex.clone()], &candidate());
        assert_eq!(r.reason, None, "{}", r.message);
        assert!(r.message.contains("3 suppressed by OpenVEX"), "{}", r.message);
        assert_eq!(r.evidence, vec![digest(1), digest(9)]);
        // The one-statement VEX leaves the two `low` findings.
        let one = material(OPENVEX, vector("policy/vexctl-sample-1statement.openvex.json"), 8);
        let r = evaluate(&lim, &[report.clone(), one], &candidate());
        assert!(r.message.starts_with("low 2 > 0"), "{}", r.message);
        // Same VEX, another candidate: nothing suppressed.
        let r = evaluate(&lim, &[report, vex], &digest(1));
        assert_eq!(r.reason, Some(ReasonCode::VulnerabilitiesOverThreshold));
    }

    #[test]
    fn vex_about_packages_or_other_products_does_not_suppress() {
        // Product `pkg:golang/…testdata` with an opa subcomponent: not the candidate image.
        let st = vex_statements(
            &vector("policy/trivy-fixture.openvex.json"),
            &candidate(),
            &digest(7),
            0,
        );
        assert!(st.is_empty());
        // Products are apk purls, no image digest.
        let st = vex_statements(&vector("policy/vexctl-demo.vex.json"), &candidate(), &digest(7), 0);
        assert!(st.is_empty());
    }

    #[test]
    fn vex_subcomponents_of_the_image_narrow_the_statement_and_later_statements_win() {
        let purl = format!(
            "pkg:oci/api@sha256%3A{}?repository_url=ghcr.io/acme/api",
            candidate().hex()
        );
        let doc = json!({
            "@context": "https://openvex.dev/ns/v0.2.0",
            "timestamp": "2024-01-01T00:00:00Z",
            "statements": [
                {"vulnerability": {"@id": "CVE-2022-23628"}, "status": "not_affected",
                 "products": [{"@id": purl, "subcomponents": [{"@id": "pkg:golang/github.com/open-policy-agent/opa@v0.35.0"}]}]},
                {"vulnerability": {"name": "CVE-1"}, "status": "not_affected", "timestamp": "2024-01-02T00:00:00Z", "products": [{"@id": purl}]},
                {"vulnerability": {"name": "CVE-1"}, "status": "affected", "timestamp": "2024-01-03T00:00:00+01:00", "products": [{"@id": purl}]},
                {"vulnerability": "CVE-2", "status": "fixed", "products": [format!("pkg:oci/x@{}", candidate())]},
            ],
        });
        let st = vex_statements(&doc, &candidate(), &digest(7), 0);
        let f = |id: &str, pkg: Option<(&str, &str)>| Finding {
            id: id.into(),
            package: pkg.and_then(|(n, v)| Package::new(n, Some(v))),
            severity: Severity::High,
        };
        assert!(suppressed_by(&f("CVE-2022-23628", Some(("opa", "v0.35.0"))), &st).is_some());
        assert!(suppressed_by(&f("CVE-2022-23628", Some(("opa", "v0.36.0"))), &st).is_none());
        assert!(suppressed_by(&f("CVE-2022-23628", None), &st).is_none());
        assert!(
            suppressed_by(&f("CVE-1", None), &st).is_none(),
            "the later `affected` wins"
        );
        assert!(
            suppressed_by(&f("CVE-2", Some(("x", "1"))), &st).is_some(),
            "v0.0.1 string forms"
        );
    }

    #[test]
    fn purls_give_name_and_version() {
        assert_eq!(
            Package::from_purl("pkg:apk/alpine/musl@1.1.20-r4?arch=x86_64&distro=3.9.4"),
            Package::new("musl", Some("1.1.20-r4"))
        );
        assert_eq!(
            Package::from_purl("pkg:npm/%40babel/core@7.0.0"),
            Package::new("core", Some("7.0.0"))
        );
        assert_eq!(Package::from_purl("not-a-purl"), None);
        assert_eq!(percent_decode("sha256%3Aab%zz%4"), "sha256:ab%zz%4");
    }

    #[test]
    fn hostile_shapes_do_not_panic() {
        let shapes = [
            json!(null),
            json!([]),
            json!({"Results": "x"}),
            json!({"Results": [{"Vulnerabilities": [null, 1, {"VulnerabilityID": 5}]}]}),
            json!({"matches": [{"vulnerability": []}]}),
            json!({"bomFormat": "CycloneDX", "vulnerabilities": [{"id": "X", "ratings": [{"score": "nan"}], "affects": [{"ref": 3}]}]}),
            json!("{not json"),
        ];
        for s in shapes {
            let _ = evaluate(&limits(&[("critical", 0)]), &[cosign_vuln(s, 1)], &candidate());
        }
        let vex = material(
            OPENVEX,
            json!({"statements": [{"vulnerability": 1, "products": "x"}, null]}),
            2,
        );
        let _ = evaluate(&limits(&[("critical", 0)]), &[vex], &candidate());
    }
}
