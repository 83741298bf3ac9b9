# Example promotion policy for the `prod` policy in config/tollgate.yaml (SPEC §6).
# tollgate reads data.tollgate.result; each violation becomes a `rego-violation` reason.
package tollgate

import rego.v1

result := {"violations": violations, "skipped": false, "skip_reason": ""}

# Releases reach prod from tags only, never from a moving tag such as `main`.
violations contains msg if {
	input.image.tag == "main"
	msg := sprintf("%s was built from the main branch tag, not a release tag", [input.image.repository])
}

# Belt and braces over the contract: prod wants an SBOM among the verified materials.
violations contains "no verified CycloneDX SBOM" if {
	not has_sbom
}

has_sbom if {
	some m in input.materials
	m.kind == "SBOM_CYCLONEDX_JSON"
}
