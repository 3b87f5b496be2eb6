"""A small PostgREST stand-in on 127.0.0.1 that forwards to the real test PostgreSQL.

Supabase's REST path cannot be reached from here, so supabase-py talks to this server
instead. It follows PostgREST's documented shapes: RPC is `POST /rest/v1/rpc/<fn>` with the
named arguments as a JSON object and a scalar function's result as a bare JSON value; table
reads are `GET /rest/v1/<table>?select=…&<col>=eq.<v>&order=<col>&limit=<n>`; a request must
carry `apikey` and `Authorization: Bearer <jwt>`; errors are JSON {code, details, hint, message}.
Requests are recorded so tests can assert on what was sent.
"""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import parse_qsl, urlsplit

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.http_standin import HTTPStandin, QuietHandler

_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


def fake_jwt(role: str, sub: str | None = None) -> str:
    """A JWT-shaped key (unsigned: the stand-in maps keys to roles itself)."""
    def b64(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    claims = {"role": role, "iss": "supabase", **({"sub": sub} if sub else {})}
    return f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(claims)}.c2lnbmF0dXJl"


class FakePostgrest(HTTPStandin):
    def __init__(self, pg_url: str) -> None:
        self.pg_url = pg_url
        self.service_key = fake_jwt("service_role")
        self.anon_key = fake_jwt("anon")
        self.requests: list[dict] = []
        self.down = False  # answer 503 like a gateway when the project is unreachable
        super().__init__(self._handler())

    def _role_for(self, headers) -> tuple[str | None, str | None]:
        apikey = headers.get("apikey")
        auth = headers.get("Authorization", "")
        if not apikey or not auth.startswith("Bearer "):
            return None, None
        token = auth.removeprefix("Bearer ")
        try:
            claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        except Exception:  # noqa: BLE001
            return None, None
        if apikey not in (self.service_key, self.anon_key):
            return None, None
        return claims.get("role"), claims.get("sub")

    def _handler(self):
        fake = self

        class Handler(QuietHandler):
            def _send(self, status: int, body, headers: dict | None = None) -> None:
                self.send_body(status, json.dumps(body, default=str).encode(), "application/json; charset=utf-8",
                               headers)

            def _error(self, status: int, code: str, message: str, details=None, hint=None) -> None:
                self._send(status, {"code": code, "details": details, "hint": hint, "message": message})

            def _record(self, body) -> None:
                fake.requests.append({"method": self.command, "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                      "body": body})

            def _session(self, role: str, sub: str | None):
                conn = psycopg.connect(fake.pg_url, autocommit=False)
                conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
                conn.execute("SELECT set_config('request.jwt.claims', %s, true)",
                             (json.dumps({"role": role, "sub": sub}),))
                return conn

            def do_POST(self):
                body = json.loads(self.read_body() or b"{}")
                self._record(body)
                if fake.down:
                    return self._error(503, "PGRST000", "Could not connect with the database")
                role, sub = fake._role_for(self.headers)
                if role is None:
                    return self._error(401, "PGRST301", "JWT invalid")
                m = re.fullmatch(r"/rest/v1/rpc/([a-z_][a-z0-9_]*)", urlsplit(self.path).path)
                if not m:
                    return self._error(404, "PGRST125", "Invalid path specified in request URL")
                if not all(_IDENT.match(k) for k in body):
                    return self._error(400, "PGRST102", "Invalid body")
                # JSON objects and arrays of objects are jsonb arguments (PostgREST casts by the function's types)
                body = {k: Jsonb(v) if isinstance(v, dict) or (isinstance(v, list) and any(isinstance(x, dict) for x in v))
                        else v for k, v in body.items()}
                query = sql.SQL("SELECT public.{}({})").format(
                    sql.Identifier(m.group(1)),
                    sql.SQL(", ").join(sql.SQL("{} => {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in body))
                try:
                    with self._session(role, sub) as conn:
                        value = conn.execute(query, body).fetchone()[0]
                except psycopg.errors.InsufficientPrivilege as exc:
                    return self._error(401 if role == "anon" else 403, "42501", str(exc).splitlines()[0])
                except psycopg.Error as exc:
                    return self._error(400, exc.sqlstate or "P0001", str(exc).splitlines()[0])
                self._send(200, value)

            def do_GET(self):
                self._record(None)
                if fake.down:
                    return self._error(503, "PGRST000", "Could not connect with the database")
                role, sub = fake._role_for(self.headers)
                if role is None:
                    return self._error(401, "PGRST301", "JWT invalid")
                parts = urlsplit(self.path)
                m = re.fullmatch(r"/rest/v1/([a-z_][a-z0-9_]*)", parts.path)
                if not m:
                    return self._error(404, "PGRST125", "Invalid path specified in request URL")
                cols, where, params, order, limit, offset = sql.SQL("*"), [], [], None, None, None
                for key, value in parse_qsl(parts.query):
                    if key == "select":
                        cols = sql.SQL(", ").join(sql.Identifier(c) for c in value.split(","))
                    elif key == "order":
                        order = sql.Identifier(value.split(".")[0])
                    elif key == "limit":
                        limit = int(value)
                    elif key == "offset":
                        offset = int(value)
                    elif value.startswith("lt."):
                        where.append(sql.SQL("{} < %s").format(sql.Identifier(key)))
                        params.append(value[3:])
                    elif value.startswith("eq."):
                        where.append(sql.SQL("{} = %s").format(sql.Identifier(key)))
                        params.append(value[3:])
                    elif value.startswith("in.(") and value.endswith(")"):
                        where.append(sql.SQL("{}::text = ANY(%s)").format(sql.Identifier(key)))
                        params.append([v.strip('"') for v in value[4:-1].split(",")])
                    else:
                        return self._error(400, "PGRST100", f"unsupported filter {key}={value}")
                query = sql.SQL("SELECT coalesce(json_agg(t), '[]') FROM (SELECT {} FROM public.{}").format(
                    cols, sql.Identifier(m.group(1)))
                if where:
                    query += sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where)
                if order is not None:
                    query += sql.SQL(" ORDER BY {}").format(order)
                if limit is not None:
                    query += sql.SQL(" LIMIT {}").format(sql.Literal(limit))
                if offset is not None:
                    query += sql.SQL(" OFFSET {}").format(sql.Literal(offset))
                query += sql.SQL(") t")
                try:
                    with self._session(role, sub) as conn:
                        rows = conn.execute(query, params).fetchone()[0]
                except psycopg.errors.InsufficientPrivilege as exc:
                    return self._error(401 if role == "anon" else 403, "42501", str(exc).splitlines()[0])
                except psycopg.Error as exc:
                    return self._error(400, exc.sqlstate or "P0001", str(exc).splitlines()[0])
                self._send(200, rows, {"Content-Range": f"0-{max(len(rows) - 1, 0)}/*"})

        return Handler
