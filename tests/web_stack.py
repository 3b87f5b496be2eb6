"""The whole local stack behind the reference web page, for the browser tests and for a person
trying the product on this machine:

    .venv/bin/python -m tests.web_stack [--port 8080]

starts PostgreSQL's database (every migration), SeaweedFS as S3 (with the CORS rules a browser
needs), the Supabase stand-ins (Auth, PostgREST, Realtime) behind one project URL, the Edge
Function under Deno, a Prefect server with a worker, and `vibeinsight web`; it prints the page's
URL and an access token to paste, and stops everything on Ctrl-C.

`SupabaseGateway` plays Supabase's API gateway: one origin for /auth/v1, /rest/v1 (with CORS, as
Supabase answers browsers) and /realtime/v1/websocket (tunnelled to the Realtime stand-in). Its
`realtime_down()` makes Realtime unreachable (open sockets cut, new ones refused) and
`realtime_up()` brings it back, as an outage of that one service would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
FUNCTION = ROOT / "infra" / "supabase" / "functions" / "process-audio" / "serve.ts"
BUCKET = "vibeinsight-audio"
# the one account of the local stack (Supabase Auth stand-in), for the page's sign-in form
EMAIL, PASSWORD = "demo@example.com", "vibeinsight-demo"
# What a browser needs of the bucket: presigned PUTs from the page's origin, and the ETag of each part
# (the multipart completion lists them). Tigris and Supabase Storage take the same rules.
BUCKET_CORS = {"CORSRules": [{"AllowedOrigins": ["*"], "AllowedMethods": ["GET", "PUT", "HEAD"],
                              "AllowedHeaders": ["*"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 3600}]}


class SupabaseGateway:
    def __init__(self, http_upstream: str, realtime_port: int) -> None:
        self.http_upstream = http_upstream.rstrip("/")
        self.realtime_port = realtime_port
        self.down = False
        self.tunnels: set[asyncio.StreamWriter] = set()
        self.upgrades = 0  # websocket upgrades tunnelled (each a socket of a client)
        self.requests: list[tuple[str, str]] = []  # (method, path) of the HTTP requests
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> SupabaseGateway:
        self._thread.start()
        self._ready.wait(30)
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set_result, None)
        self._thread.join(10)

    def realtime_down(self) -> None:
        self.down = True
        for w in list(self.tunnels):
            self._loop.call_soon_threadsafe(w.transport.abort)

    def realtime_up(self) -> None:
        self.down = False

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = self._loop.create_future()
        server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop

    @staticmethod
    def _cors(request_headers: dict[str, str]) -> dict[str, str]:
        return {"Access-Control-Allow-Origin": "*",
                "Access-Control-Allow-Methods": "GET, POST, PATCH, PUT, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": request_headers.get("access-control-request-headers", "*"),
                "Access-Control-Expose-Headers": "Content-Range, Content-Profile, X-Supabase-Api-Version",
                "Access-Control-Max-Age": "600"}

    @staticmethod
    async def _respond(writer: asyncio.StreamWriter, status: int, body: bytes, headers: dict[str, str]) -> None:
        lines = [f"HTTP/1.1 {status} {'OK' if status < 400 else 'Error'}", f"Content-Length: {len(body)}",
                 "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, path, _ = request_line.split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
            if headers.get("upgrade", "").lower() == "websocket" and path.startswith("/realtime/v1/"):
                return await self._tunnel(head, reader, writer)
            cors = self._cors(headers)
            if method == "OPTIONS":
                return await self._respond(writer, 204, b"", cors)
            body = await reader.readexactly(int(headers.get("content-length") or 0))
            self.requests.append((method, path))
            status, data, ctype = await asyncio.to_thread(self._forward, method, path, headers, body)
            await self._respond(writer, status, data, {**cors, "Content-Type": ctype})
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes, str]:
        keep = {k: v for k, v in headers.items() if k in ("apikey", "authorization", "content-type", "accept",
                                                          "prefer", "accept-profile", "content-profile")}
        req = urllib.request.Request(self.http_upstream + path, data=body or None, method=method, headers=keep)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read(), r.headers.get("Content-Type", "application/json")
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers.get("Content-Type", "application/json")

    async def _tunnel(self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            return await self._respond(writer, 503, b"Service Unavailable\n", {"Content-Type": "text/plain"})
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.realtime_port)
        self.upgrades += 1
        self.tunnels.add(writer)
        up_writer.write(head)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self.tunnels.discard(writer)


@dataclass
class WebStack:
    page_url: str
    function_url: str
    supabase_url: str
    anon_key: str
    token: str
    user: str
    gateway: SupabaseGateway
    realtime: object
    rest: object
    lp: object
    pg: str
    logs: dict[str, Path] = field(default_factory=dict)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except OSError:
        return False


@contextlib.contextmanager
def web_stack(tmp: Path, s3_server, worker_env: dict[str, str] | None = None, page_port: int = 0) -> Iterator[WebStack]:
    """Everything the page talks to, on free ports; `s3_server` is a running tests.s3_server.S3Server."""
    import psycopg

    from tests.fake_postgrest import FakePostgrest, fake_jwt
    from tests.fake_realtime import FakeRealtime
    from tests.fake_supabase_auth import FakeSupabaseAuth
    from tests.pg import create_database, drop_database
    from tests.prefect_server import FAST_WORKERS, local_prefect
    from tests.s3_server import free_port

    store = s3_server.bucket(BUCKET)
    store.client().put_bucket_cors(Bucket=BUCKET, CORSConfiguration=BUCKET_CORS)
    pg = create_database()
    user = str(uuid.uuid4())
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute("insert into auth.users (id) values (%s)", (user,))
    env = {**FAST_WORKERS, **s3_server.env(), "FLY_S3_BUCKET_NAME": BUCKET, "FLY_S3_REGION": s3_server.region,
           "VIBEINSIGHT_STATUS_URL": pg, "VIBEINSIGHT_STATUS_PG_ROLE": "service_role", **(worker_env or {})}
    try:
        with FakePostgrest(pg) as rest, FakeSupabaseAuth(rest.url, {user}, {EMAIL: (PASSWORD, user)}) as auth, \
                FakeRealtime(pg, rest.anon_key, rest_url=rest.url) as realtime, \
                SupabaseGateway(auth.url, realtime.port) as gateway, \
                local_prefect(tmp, workers=1, env=env) as lp:
            deno = shutil.which("deno") or sys.exit("deno is not installed")
            fn_port = free_port()
            base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(Path.home()), "NO_COLOR": "1"}
            fn = lp.spawn("edge-function", [deno, "serve", "--allow-net", "--allow-env", "--allow-read", "--host",
                                            "127.0.0.1", "--port", str(fn_port), str(FUNCTION)],
                          {**base, "SUPABASE_URL": auth.url, "SUPABASE_SERVICE_ROLE_KEY": rest.service_key,
                           "PREFECT_API_URL": lp.api_url, **s3_server.env(), "FLY_S3_BUCKET_NAME": BUCKET,
                           "FLY_S3_REGION": s3_server.region})
            function_url = f"http://127.0.0.1:{fn_port}"
            wait_for(lambda: fn.poll() is not None or _answers(function_url + "/uploads"), 120, 0.3,
                     "the Edge Function to serve")
            if fn.poll() is not None:
                raise RuntimeError(lp.log("edge-function"))
            page_port = page_port or free_port()
            # the page as a person starts it: `vibeinsight web`, configured from the environment
            page = lp.spawn("web", [sys.executable, "-m", "vibeinsight", "web", "--port", str(page_port)],
                            {**base, "VIRTUAL_ENV": os.environ.get("VIRTUAL_ENV", ""),
                             "VIBEINSIGHT_FUNCTION_URL": function_url, "SUPABASE_URL": gateway.url,
                             "SUPABASE_ANON_KEY": rest.anon_key, "VIBEINSIGHT_HOME": str(tmp / "web-home")})
            page_url = f"http://127.0.0.1:{page_port}/"
            wait_for(lambda: page.poll() is not None or _answers(page_url + "config.json"), 60, 0.2, "the page")
            if page.poll() is not None:
                raise RuntimeError(lp.log("web"))
            yield WebStack(page_url=page_url, function_url=function_url, supabase_url=gateway.url,
                           anon_key=rest.anon_key, token=fake_jwt("authenticated", user), user=user, gateway=gateway,
                           realtime=realtime, rest=rest, lp=lp, pg=pg)
    finally:
        drop_database(pg)


def main() -> None:
    import argparse
    import tempfile

    from tests.s3_server import WeedS3

    parser = argparse.ArgumentParser(description="the local stack and the reference page")
    parser.add_argument("--port", type=int, default=8080, help="the page's port")
    args = parser.parse_args()

    def interrupt(*_) -> None:
        raise KeyboardInterrupt

    # Ctrl-C, and SIGTERM too (a background start ignores SIGINT): every process and the database go
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    with tempfile.TemporaryDirectory(prefix="vibeinsight-web-") as tmp:
        weed = WeedS3(Path(tmp) / "seaweedfs")
        try:
            with web_stack(Path(tmp) / "stack", weed.start(), page_port=args.port) as stack:
                print(f"page:          {stack.page_url}\nsign in:       {EMAIL} / {PASSWORD}\n"
                      f"access token:  {stack.token}\n(Ctrl-C stops everything)", flush=True)
                threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            weed.stop()


if __name__ == "__main__":
    main()
