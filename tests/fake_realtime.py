"""A Supabase Realtime stand-in on 127.0.0.1, fed by the real test PostgreSQL.

Supabase Realtime cannot run here, so supabase-py's realtime client talks to this server. It speaks
the Phoenix channel protocol as Realtime documents it and as the installed `realtime` package
sends and parses it (realtime/_async/client.py, channel.py, message.py):

- the socket is `ws://…/realtime/v1/websocket?apikey=<anon key>&vsn=1.0.0`; another key is refused;
- `phx_join` on `realtime:<name>` carries `{config: {postgres_changes: [{event, schema, table,
  filter?}], …}, access_token}`; the reply is `phx_reply {status: "ok", response:
  {postgres_changes: [{id, event, schema, table, filter}]}}` with the same ref, then a `system`
  message; a join without a valid user token is answered `{status: "error"}`;
- each change is `postgres_changes {ids: [id], data: {schema, table, commit_timestamp, type,
  errors, columns, record, old_record}}`, and, as RLS does, only to the row's own user
  (record.user_id = the token's sub); filters `col=eq.value` are applied;
- a join may be refused as Realtime's rate limits refuse it, before the token is checked:
  `phx_reply {status: "error", response: {reason}}` with the reason as supabase/realtime words it
  (`ClientJoinRateLimitReached: Too many joins per second`, `ConnectionRateLimitReached: Too many
  connected users`, `ChannelRateLimitReached: Too many channels`); `refuse_joins` holds the reasons for
  the next joins, and `join_log` what each join got, and on which socket;
- `heartbeat` on topic `phoenix` and `phx_leave` get an ok reply; `access_token` replaces the token;
- `vsn=2.0.0` (supabase-js's realtime-js default) frames each text message as the Phoenix V2 JSON array
  `[join_ref, ref, topic, event, payload]` (realtime-js lib/serializer.js) instead of an object.

Changes come from PostgreSQL itself: a trigger on processing_status NOTIFYs each inserted or
updated row, and a listener thread hands them to the websocket loop.
"""

from __future__ import annotations

import asyncio
import base64
import http
import itertools
import json
import threading
import urllib.error
import urllib.request
from datetime import datetime, timezone
from typing import NamedTuple
from urllib.parse import parse_qs, urlsplit

import psycopg
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response

CHANNEL = "vi_realtime_standin"

TRIGGER_SQL = f"""
create or replace function public.vi_realtime_standin_notify() returns trigger language plpgsql as $$
begin
  perform pg_notify('{CHANNEL}', json_build_object('type', tg_op, 'table', tg_table_name,
                                                   'schema', tg_table_schema, 'record', row_to_json(new))::text);
  return new;
end $$;
drop trigger if exists vi_realtime_standin on public.processing_status;
create trigger vi_realtime_standin after insert or update on public.processing_status
  for each row execute function public.vi_realtime_standin_notify();
"""

COLUMNS = [{"name": n, "type": t} for n, t in (
    ("session_id", "uuid"), ("user_id", "uuid"), ("flow_run_id", "text"), ("deployment", "text"),
    ("status", "text"), ("stage", "text"), ("progress", "int4"), ("error_code", "text"),
    ("error_message", "text"), ("result_key", "text"), ("seq", "int8"), ("created_at", "timestamptz"),
    ("updated_at", "timestamptz"))]


def _claims(token: str | None) -> dict:
    try:
        return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    except Exception:  # noqa: BLE001 - not a JWT
        return {}


class Join(NamedTuple):
    topic: str
    socket: int  # numbered in the order the sockets opened
    outcome: str  # "ok", or the reason the join was refused


class FakeRealtime:
    def __init__(self, pg_url: str, anon_key: str, rest_url: str | None = None) -> None:
        self.pg_url = pg_url
        self.rest_url = rest_url  # GET /rest/v1/… is passed on there, so one project URL serves both
        self.anon_key = anon_key
        self.joins: list[dict] = []  # join payloads received (tests assert on them)
        self.sent = 0  # postgres_changes messages sent
        self.refuse = False  # refuse new sockets (Realtime down) when set
        self.refuse_joins: list[str] = []  # the reasons the next joins are refused with, in order
        self.join_log: list[Join] = []  # every join: its topic, its socket's number, "ok" or the reason refused
        self._socket_numbers = itertools.count(1)
        self._ids = itertools.count(1)
        self._subs: list[dict] = []  # {ws, topic, id, filter, sub}
        self._sockets: dict = {}  # each open socket: its number, in the order they opened
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Future | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._listener = threading.Thread(target=self._listen, daemon=True)
        self._closing = threading.Event()
        self.port = 0

    @property
    def url(self) -> str:
        """The project URL whose /realtime/v1 this server answers (the PostgREST stand-in has /rest/v1)."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeRealtime:
        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            conn.execute(TRIGGER_SQL)
        self._thread.start()
        self._ready.wait(30)
        self._listener.start()
        return self

    def __exit__(self, *exc) -> None:
        self._closing.set()
        self._loop.call_soon_threadsafe(self._stop.set_result, None)
        self._thread.join(10)
        with psycopg.connect(self.pg_url, autocommit=True) as conn:  # wakes the listener
            conn.execute(f"notify {CHANNEL}, '{{}}'")
        self._listener.join(10)

    # --- the websocket server ---

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = self._loop.create_future()
        async with serve(self._connection, "127.0.0.1", 0, process_request=self._handshake) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop

    def _handshake(self, connection: ServerConnection, request):
        parts = urlsplit(request.path)
        query = parse_qs(parts.query)
        if parts.path.startswith("/rest/v1/") and self.rest_url:
            return self._forward(request)
        if self.refuse:
            return connection.respond(503, "Service Unavailable\n")
        if parts.path != "/realtime/v1/websocket" or query.get("apikey") != [self.anon_key]:
            return connection.respond(403, "Forbidden\n")
        if query.get("vsn") not in (["1.0.0"], ["2.0.0"]):
            return connection.respond(400, "unsupported vsn\n")
        return None

    def _forward(self, request):
        """A REST read, forwarded to the PostgREST stand-in (the client's polling fallback)."""
        headers = {k: v for k, v in request.headers.raw_items() if k.lower() in ("apikey", "authorization", "accept")}
        req = urllib.request.Request(self.rest_url + request.path, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status, body, ctype = r.status, r.read(), r.headers.get("Content-Type", "application/json")
        except urllib.error.HTTPError as e:
            status, body, ctype = e.code, e.read(), e.headers.get("Content-Type", "application/json")
        return Response(status, http.HTTPStatus(status).phrase,
                        Headers({"Content-Type": ctype, "Content-Length": str(len(body))}), body)

    async def _connection(self, ws: ServerConnection) -> None:
        self._sockets[ws] = next(self._socket_numbers)
        try:
            async for raw in ws:
                msg = json.loads(raw)
                if isinstance(msg, list):  # vsn 2.0.0
                    msg = dict(zip(("join_ref", "ref", "topic", "event", "payload"), msg, strict=False))
                await self._on_message(ws, msg)
        except ConnectionClosed:  # the client (or the network between) went away without a close frame
            pass
        finally:
            self._sockets.pop(ws, None)
            self._subs = [s for s in self._subs if s["ws"] is not ws]

    @staticmethod
    async def _send(ws, msg: dict) -> None:
        """A message in the socket's protocol version (an object in 1.0.0, an array in 2.0.0)."""
        if "vsn=2.0.0" in (ws.request.path if ws.request else ""):
            msg = [msg.get("join_ref"), msg.get("ref"), msg["topic"], msg["event"], msg["payload"]]
        await ws.send(json.dumps(msg))

    async def _reply(self, ws, msg: dict, status: str, response: dict) -> None:
        await self._send(ws, {"event": "phx_reply", "topic": msg["topic"], "ref": msg.get("ref"),
                              "join_ref": msg.get("join_ref"), "payload": {"status": status, "response": response}})

    async def _on_message(self, ws, msg: dict) -> None:
        event, topic, payload = msg.get("event"), msg.get("topic"), msg.get("payload") or {}
        if event == "heartbeat" and topic == "phoenix":
            return await self._reply(ws, msg, "ok", {})
        if event == "phx_join":
            self.joins.append(payload)
            claims = _claims(payload.get("access_token"))
            if self.refuse_joins:  # a rate limit, checked before the token as Realtime does
                outcome = self.refuse_joins.pop(0)
            elif claims.get("role") != "authenticated" or not claims.get("sub"):
                outcome = "Invalid token"
            else:
                outcome = "ok"
            self.join_log.append(Join(topic, self._sockets[ws], outcome))
            if outcome != "ok":
                return await self._reply(ws, msg, "error", {"reason": outcome})
            bindings = []
            for b in (payload.get("config") or {}).get("postgres_changes") or []:
                binding = {"id": next(self._ids), **{k: b[k] for k in ("event", "schema", "table", "filter") if k in b}}
                bindings.append(binding)
                self._subs.append({"ws": ws, "topic": topic, "id": binding["id"], "binding": b, "sub": claims["sub"]})
            await self._reply(ws, msg, "ok", {"postgres_changes": bindings})
            await self._send(ws, {"event": "system", "topic": topic, "ref": None, "join_ref": msg.get("join_ref"),
                                  "payload": {"channel": topic.removeprefix("realtime:"), "extension": "postgres_changes",
                                              "message": "Subscribed to PostgreSQL", "status": "ok"}})
            return None
        if event == "phx_leave":
            self._subs = [s for s in self._subs if not (s["ws"] is ws and s["topic"] == topic)]
            return await self._reply(ws, msg, "ok", {})
        if event == "access_token":
            for s in self._subs:
                if s["ws"] is ws and s["topic"] == topic:
                    s["sub"] = _claims(payload.get("access_token")).get("sub")
            return None
        return None

    # --- changes from PostgreSQL ---

    def _listen(self) -> None:
        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            conn.execute(f"listen {CHANNEL}")
            for note in conn.notifies():
                if self._closing.is_set():
                    return
                change = json.loads(note.payload)
                if change:
                    asyncio.run_coroutine_threadsafe(self._deliver(change), self._loop)

    @staticmethod
    def _matches(binding: dict, change: dict) -> bool:
        if binding.get("event") not in ("*", change["type"]):
            return False
        if binding.get("schema", "public") != change["schema"] or binding.get("table") not in (None, "*", change["table"]):
            return False
        if binding.get("filter"):
            col, _, cond = binding["filter"].partition("=")
            op, _, value = cond.partition(".")
            if op != "eq" or str(change["record"].get(col)) != value:
                return False
        return True

    async def _deliver(self, change: dict) -> None:
        record = change["record"]
        stamp = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        for s in list(self._subs):
            # RLS: a subscriber sees only the rows of its own user
            if str(record.get("user_id")) != s["sub"] or not self._matches(s["binding"], change):
                continue
            msg = {"event": "postgres_changes", "topic": s["topic"], "ref": None, "payload": {
                "ids": [s["id"]], "data": {"schema": change["schema"], "table": change["table"],
                                           "commit_timestamp": stamp, "type": change["type"], "errors": None,
                                           "columns": COLUMNS, "record": record, "old_record": {}}}}
            try:
                await self._send(s["ws"], msg)
                self.sent += 1
            except Exception:  # noqa: BLE001 - the client went away
                pass
