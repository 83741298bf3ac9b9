#!/usr/bin/env python3
"""sigstore-python (PyPI `sigstore` 4.5) as a second, independent producer and verifier of keyless
bundles, driven by produce.mjs against the same mock Fulcio and Rekor. Test-only.

  sign   --trust-config F --token-file F --statement F --out F
         signs the in-toto statement (DSSE) with the Fulcio and Rekor named in the client trust config
  verify --trusted-root F --bundle F --issuer I --subject S
         verifies offline against the pinned trusted root only (no TUF, no network); prints
         {"ok": true} and exits 0, or {"ok": false, "error": ...} and exits 1
"""

import argparse
import json
import sys
from pathlib import Path

from sigstore.dsse import Statement
from sigstore.errors import Error as SigstoreError
from sigstore.models import Bundle, ClientTrustConfig, TrustedRoot
from sigstore.oidc import IdentityToken
from sigstore.sign import SigningContext
from sigstore.verify import Verifier, policy


def sign(args: argparse.Namespace) -> int:
    config = ClientTrustConfig.from_json(Path(args.trust_config).read_text())
    context = SigningContext.from_trust_config(config)
    token = IdentityToken(Path(args.token_file).read_text().strip())
    statement = Statement(Path(args.statement).read_bytes())
    with context.signer(token, cache=True) as signer:
        bundle = signer.sign_dsse(statement)
    Path(args.out).write_text(bundle.to_json())
    return 0


def verify(args: argparse.Namespace) -> int:
    try:
        verifier = Verifier(trusted_root=TrustedRoot.from_file(args.trusted_root))
        bundle = Bundle.from_json(Path(args.bundle).read_bytes())
        verifier.verify_dsse(bundle, policy.Identity(identity=args.subject, issuer=args.issuer))
    except (SigstoreError, ValueError) as e:
        print(json.dumps({"ok": False, "code": type(e).__name__, "error": str(e)}))
        return 1
    print(json.dumps({"ok": True}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sign")
    s.add_argument("--trust-config", required=True)
    s.add_argument("--token-file", required=True)
    s.add_argument("--statement", required=True)
    s.add_argument("--out", required=True)
    v = sub.add_parser("verify")
    v.add_argument("--trusted-root", required=True)
    v.add_argument("--bundle", required=True)
    v.add_argument("--issuer", required=True)
    v.add_argument("--subject", required=True)
    args = parser.parse_args()
    return sign(args) if args.command == "sign" else verify(args)


if __name__ == "__main__":
    sys.exit(main())
