"""`pkggov-admin token`: a local demo issuer of workload tokens, for development only.

``token demo-issuer --out DIR`` makes (once) an ES256 key pair and, beside it, the JWKS and an
issuers file naming the issuer ``demo`` with a ``jwks_file`` (which the gateway accepts only
with ``identity.mode = dev``): what `make run` points the gateway at. ``token mint`` signs a
token with that key, as a CI system's token service would: a subject, an audience, a short
lifetime and any string claims (``--claim repository=acme/widgets``).

Nothing here is for production: the private key sits in a file beside the gateway.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "DEMO_AUDIENCE",
    "DEMO_ISSUER",
    "add_token_commands",
    "ensure_demo_issuer",
    "mint",
]

DEMO_ISSUER = "https://demo-issuer.pkggov.invalid"
"""The demo issuer's `iss` (the .invalid top-level domain can never resolve)."""
DEMO_AUDIENCE = "pkggov-demo"

_ISSUERS = """\
# The local demo issuer (`pkggov-admin token demo-issuer`): development only. Its tokens'
# principals are "demo:<sub>"; a token of repository acme/widgets on refs/heads/main is in
# group ci, as a CI pipeline's would be.
issuers:
  demo:
    issuer: {issuer}
    jwks_file: jwks.json
    audiences: [{audience}]
    algorithms: [ES256]
    clock_skew_seconds: 30
    max_lifetime_seconds: 3600
    principal: "{{sub}}"
    attributes: [repository, ref, environment]
    groups:
      - group: ci
        when: {{repository: acme/widgets, ref: refs/heads/main}}
"""


def ensure_demo_issuer(out: Path) -> bool:
    """Make the demo issuer in `out` unless it is there; True when it was made."""
    key_path = out / "private.pem"
    if key_path.exists():
        return False
    out.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    kid = uuid.uuid4().hex[:16]
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    public.update(kid=kid, use="sig", alg="ES256")
    (out / "jwks.json").write_text(json.dumps({"keys": [public]}, indent=2) + "\n")
    (out / "issuers.yaml").write_text(_ISSUERS.format(issuer=DEMO_ISSUER, audience=DEMO_AUDIENCE))
    key_path.touch(mode=0o600)
    key_path.write_bytes(pem)
    (out / "kid").write_text(kid + "\n")
    return True


def mint(
    out: Path,
    subject: str,
    *,
    claims: dict[str, str] | None = None,
    lifetime_seconds: int = 600,
    audience: str = DEMO_AUDIENCE,
) -> str:
    """A token of the demo issuer in `out` for `subject`, valid `lifetime_seconds` from now."""
    key = serialization.load_pem_private_key((out / "private.pem").read_bytes(), None)
    kid = (out / "kid").read_text().strip()
    now = int(time.time())
    payload: dict[str, Any] = {
        **(claims or {}),
        "iss": DEMO_ISSUER,
        "sub": subject,
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + lifetime_seconds,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(payload, key, algorithm="ES256", headers={"kid": kid})  # type: ignore[arg-type]


def add_token_commands(subparsers: Any) -> None:
    """`token demo-issuer` and `token mint`."""
    token = subparsers.add_parser(
        "token",
        help="a local demo issuer of workload tokens (development only)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    commands = token.add_subparsers(dest="token_command", required=True, metavar="COMMAND")
    issuer = commands.add_parser(
        "demo-issuer", help="make the demo issuer's key, JWKS and issuers file (once)"
    )
    issuer.add_argument("--out", type=Path, default=Path(".run/demo-issuer"), metavar="DIR")
    issuer.set_defaults(func=_run_demo_issuer)
    minted = commands.add_parser("mint", help="print a token of the demo issuer")
    minted.add_argument("--out", type=Path, default=Path(".run/demo-issuer"), metavar="DIR")
    minted.add_argument("--subject", required=True, help="the token's sub")
    minted.add_argument(
        "--claim",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a string claim (repeatable), e.g. repository=acme/widgets",
    )
    minted.add_argument("--lifetime", type=int, default=600, metavar="SECONDS")
    minted.set_defaults(func=_run_mint)


def _run_demo_issuer(args: argparse.Namespace) -> int:
    made = ensure_demo_issuer(args.out)
    print(f"demo issuer {'made' if made else 'already'} in {args.out}")
    return 0


def _run_mint(args: argparse.Namespace) -> int:
    claims = {}
    for item in args.claim:
        name, sep, value = str(item).partition("=")
        if not sep or not name:
            print(f"--claim {item!r}: expected NAME=VALUE", flush=True)
            return 2
        claims[name] = value
    if not (args.out / "private.pem").exists():
        print(f"no demo issuer in {args.out}: run `pkggov-admin token demo-issuer` first")
        return 2
    print(mint(args.out, args.subject, claims=claims, lifetime_seconds=args.lifetime))
    return 0
