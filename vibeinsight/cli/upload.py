"""`vibeinsight upload`: the reference client, doing what the app does.

Ask the Edge Function for an upload URL, upload (one PUT up to 5 MB, else multipart, resumed after
an interruption), start the run with /process, follow the session's row (Supabase Realtime through
supabase-py, the row re-read after subscribing, polling when Realtime fails), then fetch the result
document through /results/{session_id}. Only the user's JWT and the anon key are used here.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import mimetypes
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import typer

from vibeinsight.cli.common import EXIT_FAILED, EXIT_OK, EXIT_REJECTED, fail

app = typer.Typer()

TERMINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
# what the client reads of its row (the compact columns it shows; RLS lets it read only its own)
ROW_COLUMNS = "session_id,status,stage,progress,error_code,error_message,flow_run_id,seq,updated_at"
# The flow's input rejections (InputRejected codes): exit 2, as `process` does.
REJECTED_CODES = {"not_found", "empty", "too_large", "not_audio", "corrupt", "too_short", "too_long",
                  "unsupported_language", "rejected", "invalid_argument"}
# Edge Function answers that mean the request itself was refused (exit 2, like a rejected input).
REFUSED_STATUS = {400, 403, 409, 413, 415}
# Types mimetypes does not know on every system.
CONTENT_TYPES = {"m4a": "audio/mp4", "opus": "audio/ogg", "oga": "audio/ogg", "ogg": "audio/ogg",
                 "wav": "audio/wav", "flac": "audio/flac", "webm": "audio/webm", "mov": "video/quicktime"}


class EdgeError(Exception):
    """An error answer of the Edge Function: its fixed code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message


class EdgeClient:
    """The Edge Function's routes, with the user's JWT."""

    def __init__(self, function_url: str, token: str, timeout_s: float = 30.0) -> None:
        import httpx

        self.http = httpx.Client(base_url=function_url.rstrip("/"), timeout=timeout_s,
                                 headers={"Authorization": f"Bearer {token}"})

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        import httpx

        try:
            res = self.http.request(method, path, json=body)
        except httpx.TransportError as exc:  # unreachable, reset, timed out: callers handle OSError
            raise OSError(f"{path}: {exc}") from exc
        try:
            data = res.json()
        except ValueError:
            data = {}
        if res.status_code >= 400:
            raise EdgeError(res.status_code, str(data.get("error", f"http_{res.status_code}")),
                            str(data.get("message", res.reason_phrase)))
        return data


# --- uploading ---

def content_type(path: Path) -> str:
    ext = path.suffix.lower().lstrip(".")
    return CONTENT_TYPES.get(ext) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


class Uploader:
    """Uploads one file through the function; a multipart upload's place is kept in a state file
    (under VIBEINSIGHT_HOME/uploads) so a later run resumes it instead of starting over."""

    PART_ATTEMPTS = 3

    def __init__(self, edge: EdgeClient, path: Path, state_dir: Path, on_bytes: Callable[[int, int], None]) -> None:
        import httpx

        self.edge, self.path, self.on_bytes = edge, path, on_bytes
        self.size = path.stat().st_size
        self.s3 = httpx.Client(timeout=120.0)  # presigned URLs carry their own auth
        st = path.stat()
        ident = f"{edge.http.base_url}|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        self.state_file = state_dir / f"{hashlib.sha256(ident.encode()).hexdigest()[:32]}.json"

    def run(self) -> str:
        """Upload the file; answer its object key."""
        state = self._load_state()
        resume = None
        if state is not None:
            try:
                resume = self._parts(state)
            except EdgeError as exc:  # the upload expired, or was completed by a run that then died
                if exc.status != 404:
                    raise
                self.state_file.unlink(missing_ok=True)
                state = None
        if state is None:
            up = self.edge.call("POST", "/uploads", {"filename": self.path.name, "content_type": content_type(self.path),
                                                     "bytes": self.size})
            if up["method"] == "PUT":
                self._put(up["url"], up["headers"], 0, self.size)
                self.on_bytes(self.size, self.size)
                return up["key"]
            state = {"key": up["key"], "upload_id": up["upload_id"]}
            self._save_state(state)
            return self._multipart(state, up["parts"], [])
        return self._multipart(state, resume["parts"], resume["parts_done"])

    def _parts(self, state: dict) -> dict:
        return self.edge.call("POST", "/uploads/parts", {"key": state["key"], "upload_id": state["upload_id"],
                                                         "bytes": self.size})

    def _multipart(self, state: dict, todo: list[dict], done: list[dict]) -> str:
        etags = {p["part_number"]: p["etag"] for p in done}
        sent = sum(p["bytes"] for p in done)
        self.on_bytes(sent, self.size)
        part_size = max([p["bytes"] for p in todo + done] or [self.size])
        for attempt in range(self.PART_ATTEMPTS):
            try:
                for part in todo:
                    etags[part["part_number"]] = self._put(part["url"], {}, (part["part_number"] - 1) * part_size,
                                                           part["bytes"])
                    sent += part["bytes"]
                    self.on_bytes(sent, self.size)
                break
            except (OSError, RuntimeError) as exc:  # a dropped connection or a refused part: ask S3 where we are
                if attempt == self.PART_ATTEMPTS - 1:
                    raise RuntimeError(f"upload interrupted: {exc}") from exc
                resume = self._parts(state)
                todo, etags = resume["parts"], {p["part_number"]: p["etag"] for p in resume["parts_done"]}
                sent = sum(p["bytes"] for p in resume["parts_done"])
        parts = [{"part_number": n, "etag": etags[n]} for n in sorted(etags)]
        self.edge.call("POST", "/uploads/complete", {"key": state["key"], "upload_id": state["upload_id"], "parts": parts})
        self.state_file.unlink(missing_ok=True)
        return state["key"]

    def _put(self, url: str, headers: dict, offset: int, length: int) -> str:
        import httpx

        with self.path.open("rb") as f:
            f.seek(offset)
            data = f.read(length)
        try:
            res = self.s3.put(url, content=data, headers=headers)
        except httpx.TransportError as exc:
            raise OSError(str(exc)) from exc
        if res.status_code != 200:
            raise RuntimeError(f"storage answered HTTP {res.status_code}")
        return res.headers.get("etag", "")

    def _load_state(self) -> dict | None:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None

    def _save_state(self, state: dict) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(state))


# --- following the session's row ---

class RowFollower:
    """Keeps the newest row of one session: older or repeated rows (by seq) are dropped, since
    Realtime, the re-read after subscribing and polling may each deliver the same change."""

    def __init__(self, on_row: Callable[[dict], None]) -> None:
        self.on_row = on_row
        self.row: dict | None = None
        self.done = asyncio.Event()

    def offer(self, row: dict | None) -> None:
        if not row:
            return
        if self.row is not None:
            seq, last = int(row.get("seq") or 0), int(self.row.get("seq") or 0)
            if seq < last or (seq == last and row.get("status") == self.row.get("status")
                              and row.get("progress") == self.row.get("progress")):
                return
        self.row = row
        self.on_row(row)
        if row.get("status") in TERMINAL:
            self.done.set()


async def follow(supabase_url: str, anon_key: str, token: str, session_id: str, on_row: Callable[[dict], None],
                 poll_s: float, timeout_s: float) -> tuple[dict, bool]:
    """The session's terminal row, and whether Realtime delivered; polls the row over REST every
    `poll_s` seconds while Realtime is down (and every 5 × poll_s as a safety net while it is up)."""
    from realtime import RealtimeSubscribeStates
    from supabase import AsyncClientOptions, acreate_client

    client = await acreate_client(supabase_url, anon_key,
                                  AsyncClientOptions(headers={"Authorization": f"Bearer {token}"}))
    follower = RowFollower(on_row)
    last_error: list[str] = []

    async def read_row() -> dict | None:
        try:
            res = await client.table("processing_status").select(ROW_COLUMNS).eq("session_id", session_id).execute()
        except Exception as exc:  # noqa: BLE001 - a failed poll is retried at the next tick
            last_error[:] = [f"{type(exc).__name__}: {exc}"]
            return None
        return res.data[0] if res.data else None

    subscribed = asyncio.Event()

    def on_state(state, _err) -> None:
        if state == RealtimeSubscribeStates.SUBSCRIBED:
            subscribed.set()
        else:
            subscribed.clear()

    channel = None
    try:
        await client.realtime.set_auth(token)
        channel = client.channel(f"status:{session_id}")
        channel.on_postgres_changes("*", schema="public", table="processing_status",
                                    filter=f"session_id=eq.{session_id}",
                                    callback=lambda payload: follower.offer(payload["data"].get("record")))
        await asyncio.wait_for(channel.subscribe(on_state), timeout=10)
    except Exception:  # noqa: BLE001 - Realtime unreachable or refused: polling carries on alone
        subscribed.clear()
    realtime = subscribed.is_set()
    follower.offer(await read_row())  # Realtime does not replay what changed before the join
    deadline = time.monotonic() + timeout_s
    try:
        while not follower.done.is_set():
            if time.monotonic() > deadline:
                why = f" (last read of the row: {last_error[0]})" if last_error else ""
                raise TimeoutError(f"session {session_id} did not finish within {timeout_s:.0f} s{why}")
            wait = poll_s * 5 if subscribed.is_set() else poll_s
            try:
                await asyncio.wait_for(follower.done.wait(), timeout=wait)
            except asyncio.TimeoutError:
                follower.offer(await read_row())
    finally:
        try:
            await client.remove_all_channels()
        except Exception:  # noqa: BLE001 - closing a socket that already failed
            pass
    return follower.row, realtime


# --- the command ---

class ProgressLines:
    """The session's progress on stderr: the `process` bar on a terminal, else one line per change."""

    def __init__(self) -> None:
        from vibeinsight.cli.progress import ProgressView

        self.tty = sys.stderr.isatty()
        self.view = ProgressView(enabled=self.tty)
        self._last: tuple | None = None

    def __enter__(self) -> ProgressLines:
        self.view.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.view.__exit__(*exc)

    def show(self, stage: str, percent: int) -> None:
        if (stage, percent) == self._last:
            return
        self._last = (stage, percent)
        self.view.update(stage, percent)
        if not self.tty:
            print(f"progress {stage} {percent}", file=sys.stderr, flush=True)


@app.command()
def upload(
    file: Path = typer.Argument(..., help="the recording to upload and process"),
    function_url: str = typer.Option(..., "--function-url", envvar="VIBEINSIGHT_FUNCTION_URL",
                                     help="the Edge Function, e.g. https://<ref>.supabase.co/functions/v1/process-audio"),
    token: str = typer.Option(..., "--token", envvar="VIBEINSIGHT_TOKEN", help="the signed-in user's JWT"),
    supabase_url: Optional[str] = typer.Option(None, "--supabase-url", envvar="SUPABASE_URL"),
    anon_key: Optional[str] = typer.Option(None, "--anon-key", envvar="SUPABASE_ANON_KEY"),
    language: str = typer.Option("auto", "--language", help="auto, ja, en, …"),
    vocabulary: Optional[list[str]] = typer.Option(None, "--vocabulary", help="a word or name to expect (repeatable)"),
    as_json: bool = typer.Option(False, "--json", help="print exactly the result document on stdout"),
    poll_s: float = typer.Option(3.0, "--poll-s", min=0.2, help="seconds between reads of the row without Realtime"),
    timeout_s: float = typer.Option(3600.0, "--timeout-s", min=1, help="give up following the session after this"),
) -> None:
    """Upload FILE as the app does, start its run through the Edge Function and follow it to the end."""
    from vibeinsight.settings import get_settings

    if not file.is_file():
        fail("not_found", f"{file} is not a file")
    edge = EdgeClient(function_url, token)
    phase = "upload_failed"
    with ProgressLines() as progress:
        try:
            key = Uploader(edge, file, get_settings().home / "uploads",
                           lambda sent, total: progress.view.update("upload", int(100 * sent / max(total, 1)))).run()
            session_id = start_run(edge, {"key": key, "language": language,
                                          **({"vocabulary": vocabulary} if vocabulary else {})})
            phase = "follow_failed"
            progress.show("queued", 0)
            if supabase_url and anon_key:
                row, _ = asyncio.run(follow(supabase_url, anon_key, token, session_id,
                                            lambda r: progress.show(r.get("stage") or r["status"].lower(),
                                                                    int(r.get("progress") or 0)),
                                            poll_s, timeout_s))
                status = row["status"]
            else:  # no Supabase pair: the function's /results answers once the session has ended
                status = _wait_result(edge, session_id, poll_s, timeout_s)
            doc = _result_document(edge, session_id)
        except EdgeError as exc:
            fail(exc.code, exc.message, EXIT_REJECTED if exc.status in REFUSED_STATUS else EXIT_FAILED)
        except (OSError, RuntimeError, TimeoutError) as exc:
            fail(phase, str(exc), EXIT_FAILED)
    _finish(doc, status, as_json)


def start_run(edge: EdgeClient, body: dict, attempts: int = 3) -> str:
    """POST /process with a session id made here, so a call whose answer was lost (a 502, a dropped
    connection) can be repeated: the function answers the same run for the same session."""
    body = {**body, "session_id": str(uuid.uuid4())}
    for attempt in range(attempts):
        try:
            return edge.call("POST", "/process", body)["session_id"]
        except EdgeError as exc:
            if exc.status < 500 or attempt == attempts - 1:
                raise
        except OSError:
            if attempt == attempts - 1:
                raise
        time.sleep(2**attempt)  # back off before the same request again
    raise AssertionError("unreachable")


def _wait_result(edge: EdgeClient, session_id: str, poll_s: float, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return edge.call("GET", f"/results/{session_id}")["status"]
        except EdgeError as exc:
            if exc.code != "not_ready" or time.monotonic() > deadline:
                raise
        time.sleep(poll_s)  # the function has no push channel: polling is the only way here


def _result_document(edge: EdgeClient, session_id: str) -> dict:
    import httpx

    link = edge.call("GET", f"/results/{session_id}")
    res = httpx.get(link["url"], timeout=60)
    res.raise_for_status()
    return res.json()


def _finish(doc: dict, status: str, as_json: bool) -> None:
    from vibeinsight.cli.process import _print_summary

    if as_json:
        print(json.dumps(doc, ensure_ascii=False))
    if status == "COMPLETED" and doc.get("status") == "COMPLETED":
        if not as_json:
            _print_summary(doc)
        raise typer.Exit(EXIT_OK)
    error = doc.get("error") or {"code": status.lower(), "message": f"the session ended {status}"}
    print(f"error: {error['code']}: {error['message']}", file=sys.stderr)
    raise typer.Exit(EXIT_REJECTED if error["code"] in REJECTED_CODES else EXIT_FAILED)
