#!/usr/bin/env python3
"""Independent producer of in-toto attestations for tollgate's tests (run with .tools/venv/bin/python).

It signs an in-toto Statement v1 into a DSSE envelope with PyPI securesystemslib 1.6 (the library the
in-toto 3.1 reference implementation signs with), so tollgate's verifier is tested against bytes
that no tollgate code produced: its JSON layout, base64 flavour, PAE and ECDSA encoding are
securesystemslib's, not ours.

The statement is built as plain JSON: PyPI in-toto 3.1 has no `in_toto.attestation` module (that is
the separate `in-toto-attestation` package, which scripts/setup-test-deps.sh does not install).

Usage:
  intoto_attest.py --subject-name N --digest sha256:HEX --predicate-type T --predicate FILE
                   --out ENVELOPE --pubkey-out PEM [--key-out PRIVPEM | --key-in PRIVPEM]
"""

import argparse
import json
import sys

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.dsse import Envelope
from securesystemslib.signer import CryptoSigner

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"


def build_statement(subject_name, algorithm, hex_digest, predicate_type, predicate):
    return {
        "_type": STATEMENT_V1,
        "subject": [{"name": subject_name, "digest": {algorithm: hex_digest}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    }


def load_signer(args):
    if args.key_in:
        with open(args.key_in, "rb") as f:
            private_key = load_pem_private_key(f.read(), password=None)
        # The public half (and its securesystemslib key id) is derived from the private key.
        return CryptoSigner(private_key)
    signer = CryptoSigner.generate_ecdsa()  # ecdsa-sha2-nistp256, as cosign generate-key-pair
    if args.key_out:
        with open(args.key_out, "wb") as f:
            f.write(signer.private_bytes)
    return signer


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subject-name", required=True)
    p.add_argument("--digest", required=True, help="ALGO:HEX, e.g. sha256:…")
    p.add_argument("--predicate-type", required=True)
    p.add_argument("--predicate", required=True, help="a JSON file")
    p.add_argument("--out", required=True, help="where to write the DSSE envelope JSON")
    p.add_argument("--pubkey-out", required=True, help="where to write the PEM public key")
    keys = p.add_mutually_exclusive_group()
    keys.add_argument("--key-out", help="also write the generated private key (PKCS#8 PEM)")
    keys.add_argument("--key-in", help="sign with this private key (PKCS#8 PEM) instead of a new one")
    args = p.parse_args(argv)

    algorithm, sep, hex_digest = args.digest.partition(":")
    if not sep or not hex_digest:
        p.error(f"--digest must be ALGO:HEX, got {args.digest!r}")
    with open(args.predicate, "rb") as f:
        predicate = json.load(f)

    signer = load_signer(args)
    statement = build_statement(args.subject_name, algorithm, hex_digest, args.predicate_type, predicate)
    payload = json.dumps(statement, separators=(",", ":"), sort_keys=True).encode("utf-8")

    envelope = Envelope(payload=payload, payload_type=PAYLOAD_TYPE, signatures={})
    envelope.sign(signer)
    text = json.dumps(envelope.to_dict())

    with open(args.out, "w") as f:
        f.write(text)
    with open(args.pubkey_out, "w") as f:
        f.write(signer.public_key.keyval["public"])
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
