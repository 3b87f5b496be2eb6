"""Supabase Auth's `GET /auth/v1/user` on 127.0.0.1, in front of the PostgREST stand-in.

The Edge Function reads the caller with `GET /auth/v1/user` (`Authorization: Bearer <user JWT>`,
`apikey`), as supabase-js's `auth.getUser(jwt)` does; Auth answers the user object (id, aud, role,
email, app_metadata, user_metadata, created_at) or 401 `{code, error_code: "bad_jwt", msg}`. Tokens
are tests.fake_postgrest.fake_jwt tokens of known users (role `authenticated`, `sub` = the user id),
so the same token also passes the PostgREST stand-in's RLS. Every other path (`/rest/v1/…`) is
forwarded to the PostgREST stand-in, so one project URL serves the function as Supabase's does.

Sign-in, as supabase-js's `auth.signInWithPassword` calls it: `POST /auth/v1/token?grant_type=password`
with `apikey` and `{email, password}` answers a session `{access_token, token_type: "bearer",
expires_in, expires_at, refresh_token, user}`, or 400 `{code, error_code: "invalid_credentials", msg}`,
for the accounts given as `passwords` (email: (password, user id)).
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request

from tests.http_standin import HTTPStandin, QuietHandler


class FakeSupabaseAuth(HTTPStandin):
    def __init__(self, rest_url: str, users: set[str], passwords: dict[str, tuple[str, str]] | None = None) -> None:
        self.rest_url = rest_url
        self.users = users
        self.passwords = passwords or {}
        self.calls = 0
        super().__init__(self._handler())

    def user_for(self, authorization: str | None) -> str | None:
        token = (authorization or "").removeprefix("Bearer ")
        try:
            claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        except Exception:  # noqa: BLE001 - not a JWT
            return None
        sub = claims.get("sub")
        return sub if claims.get("role") == "authenticated" and sub in self.users else None

    def _handler(self):
        fake = self

        class Handler(QuietHandler):
            def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_body(status, body, ctype)

            def _forward(self) -> None:
                data = self.read_body() or None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                req = urllib.request.Request(fake.rest_url + self.path, data=data, method=self.command, headers=headers)
                try:
                    with urllib.request.urlopen(req, timeout=30) as r:
                        self._send(r.status, r.read(), r.headers.get("Content-Type", "application/json"))
                except urllib.error.HTTPError as e:
                    self._send(e.code, e.read(), e.headers.get("Content-Type", "application/json"))

            def do_GET(self):
                if self.path.split("?")[0] != "/auth/v1/user":
                    return self._forward()
                fake.calls += 1
                user = fake.user_for(self.headers.get("Authorization")) if self.headers.get("apikey") else None
                if user is None:
                    return self._send(401, json.dumps({"code": 401, "error_code": "bad_jwt",
                                                       "msg": "invalid JWT: unable to parse or verify signature"}).encode())
                self._send(200, json.dumps({"id": user, "aud": "authenticated", "role": "authenticated",
                                            "email": f"{user[:8]}@example.com", "app_metadata": {"provider": "email"},
                                            "user_metadata": {}, "created_at": "2026-11-01T00:00:00Z"}).encode())

            def do_POST(self):
                if self.path.split("?")[0] != "/auth/v1/token":
                    return self._forward()
                body = json.loads(self.read_body() or b"{}")
                account = fake.passwords.get(str(body.get("email")))
                if "grant_type=password" not in self.path or not self.headers.get("apikey") or account is None \
                        or account[0] != body.get("password"):
                    return self._send(400, json.dumps({"code": 400, "error_code": "invalid_credentials",
                                                       "msg": "Invalid login credentials"}).encode())
                from tests.fake_postgrest import fake_jwt

                user = account[1]
                now = int(time.time())
                self._send(200, json.dumps({
                    "access_token": fake_jwt("authenticated", user), "token_type": "bearer", "expires_in": 3600,
                    "expires_at": now + 3600, "refresh_token": f"refresh-{user[:8]}",
                    "user": {"id": user, "aud": "authenticated", "role": "authenticated", "email": body["email"],
                             "app_metadata": {"provider": "email"}, "user_metadata": {},
                             "created_at": "2026-11-01T00:00:00Z"}}).encode())

        return Handler
