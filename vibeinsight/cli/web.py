"""`vibeinsight web`: serves the reference web page (clients/web) on 127.0.0.1.

The page is static (index.html, style.css and app.js, the bundle of the TypeScript client); its
configuration, /config.json, holds only what a browser may know: the Edge Function's URL, the
Supabase project URL and its anon key (VIBEINSIGHT_FUNCTION_URL, SUPABASE_URL, SUPABASE_ANON_KEY).
"""

from __future__ import annotations

import json
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import typer

from vibeinsight.cli.common import fail

app = typer.Typer()

PAGE_DIR = Path(__file__).resolve().parents[2] / "clients" / "web"
SERVED = {"/": "index.html", "/index.html": "index.html", "/app.js": "app.js", "/style.css": "style.css"}


def page_config() -> dict[str, str]:
    """/config.json; exits 2 naming the first variable that is not set."""
    from vibeinsight.settings import get_settings

    settings = get_settings()
    values = {"functionUrl": ("VIBEINSIGHT_FUNCTION_URL", settings.web.function_url),
              "supabaseUrl": ("SUPABASE_URL", settings.supabase.url),
              "anonKey": ("SUPABASE_ANON_KEY", anon.get_secret_value() if (anon := settings.supabase.anon_key) else None)}
    for env, value in values.values():
        if not value:
            fail("invalid_setting", f"{env} is not set (the page needs it)")
    return {name: value.rstrip("/") if name != "anonKey" else value for name, (_, value) in values.items()}


class PageHandler(SimpleHTTPRequestHandler):
    """The page's few files and /config.json; nothing else of the folder (no listing, no sources)."""

    config: bytes = b"{}"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/config.json":
            self._send(200, self.config, "application/json")
        elif path in SERVED:
            self.path = "/" + SERVED[path]
            super().do_GET()
        else:
            self._send(404, b"not found\n", "text/plain")

    def do_HEAD(self) -> None:
        self.do_GET()

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")  # a rebuilt bundle is used at the next load
        self.send_header("X-Content-Type-Options", "nosniff")
        super().end_headers()

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args) -> None:  # quiet: one line per request is noise here
        pass


def make_server(port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    if not (PAGE_DIR / "app.js").is_file():
        fail("not_found", f"{PAGE_DIR / 'app.js'} is missing (build it: cd clients/js && deno task build-web)")
    handler = type("ConfiguredPageHandler", (PageHandler,), {"config": json.dumps(page_config()).encode()})
    server = ThreadingHTTPServer((host, port), partial(handler, directory=str(PAGE_DIR)))
    server.daemon_threads = True
    return server


@app.command()
def web(
    port: int = typer.Option(8080, "--port", min=0, max=65535, help="port on 127.0.0.1 (0: any free one)"),
) -> None:
    """Serve the reference web page (sign in, upload, progress, transcript) on 127.0.0.1:PORT."""
    server = make_server(port)
    print(f"VibeInsight page on http://127.0.0.1:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
