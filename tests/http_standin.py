"""The HTTP plumbing every stand-in shares: a threaded server on 127.0.0.1 (a port the OS picks) that
runs as a context manager, and a quiet request handler with one way to read and to send a body."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that logs nothing (pytest shows a failing test's own output instead)."""

    def log_message(self, *args) -> None:
        pass

    def read_body(self) -> bytes:
        """The request's body (empty without a Content-Length)."""
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def send_body(self, status: int, data: bytes, content_type: str = "application/json",
                  headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


class HTTPStandin:
    """Serves `handler` on 127.0.0.1 from `with` to its end; `url` is where."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self._serving = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        self._serving.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
