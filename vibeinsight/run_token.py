"""The run Machines' Supabase credential: a JWT for the database role vibeinsight_run.

PostgREST switches to the role named by a valid token's `role` claim (its signature checked with the
project's JWT secret), so a run holding this token may do exactly what migration
20261204000300_runs_role grants that role: write status rows and book usage, nothing else.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import jwt

from vibeinsight.settings import RUN_ROLE

ALGORITHM = "HS256"  # what Supabase's legacy JWT secret signs with
MIN_SECRET_CHARS = 32  # Supabase's JWT secrets are at least this long; a shorter one is a mistake


class RunTokenError(ValueError):
    """The secret or the lifetime cannot make a usable token."""


def mint_run_token(secret: str, days: float, now: datetime | None = None) -> str:
    """A token for RUN_ROLE valid `days` from `now`; rotate it by minting another before it expires."""
    if len(secret) < MIN_SECRET_CHARS:
        raise RunTokenError(f"the JWT secret has {len(secret)} characters; Supabase's has at least {MIN_SECRET_CHARS}")
    if not 0 < days <= 3660:
        raise RunTokenError(f"--days must be within (0, 3660], got {days}")
    issued = (now or datetime.now(timezone.utc)).replace(microsecond=0)
    claims = {"role": RUN_ROLE, "iss": "vibeinsight", "sub": "vibeinsight-runs",
              "iat": int(issued.timestamp()), "exp": int((issued + timedelta(days=days)).timestamp())}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_run_token(token: str, secret: str, now: datetime | None = None) -> dict:
    """The token's claims, checked as PostgREST checks them at `now` (signature, expiry, a role claim)."""
    claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["role", "exp"], "verify_exp": False})
    if claims["exp"] <= (now or datetime.now(timezone.utc)).timestamp():  # PyJWT's own check reads the clock
        raise jwt.ExpiredSignatureError("Signature has expired")
    if claims["role"] != RUN_ROLE:
        raise RunTokenError(f"the token's role is {claims['role']!r}, not {RUN_ROLE!r}")
    return claims
