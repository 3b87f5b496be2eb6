"""The client's whole path, end to end: `vibeinsight upload` against the Edge Function served by
`deno serve … serve.ts` (the handler of index.ts), SeaweedFS's S3, a real Prefect server with a
process worker running the flow, PostgreSQL with every migration (the status rows), and the stand-ins of what cannot run here:
Supabase Auth, PostgREST and Realtime (the last two on the same PostgreSQL)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ffmpeg
from tests.fake_postgrest import FakePostgrest, fake_jwt
from tests.fake_realtime import FakeRealtime
from tests.fake_supabase_auth import FakeSupabaseAuth
from tests.prefect_server import FAST_WORKERS, ROOT, local_prefect
from tests.s3_server import free_port
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

BUCKET = "vibeinsight-audio"
FUNCTION = ROOT / "infra" / "supabase" / "functions" / "process-audio" / "index.ts"


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.options(url + "/uploads", timeout=2).status_code == 204
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def stack(tmp_path_factory, s3_server):
    from tests.pg import create_database, drop_database

    tmp = tmp_path_factory.mktemp("upload-e2e")
    s3_server.bucket(BUCKET)
    pg = create_database()
    user = str(uuid.uuid4())
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute("insert into auth.users (id) values (%s)", (user,))
    worker_env = {**FAST_WORKERS, **s3_server.env(), "FLY_S3_BUCKET_NAME": BUCKET, "FLY_S3_REGION": s3_server.region,
                  "VIBEINSIGHT_STATUS_URL": pg, "VIBEINSIGHT_STATUS_PG_ROLE": "service_role"}
    try:
        with FakePostgrest(pg) as rest, FakeSupabaseAuth(rest.url, {user}) as auth, \
                FakeRealtime(pg, rest.anon_key, rest_url=rest.url) as realtime, \
                local_prefect(tmp, workers=1, env=worker_env) as lp:
            port = free_port()
            fn_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(Path.home()), "NO_COLOR": "1",
                      "PORT": str(port), "SUPABASE_URL": auth.url, "SUPABASE_SERVICE_ROLE_KEY": rest.service_key,
                      "PREFECT_API_URL": lp.api_url, "FLY_S3_ENDPOINT": s3_server.endpoint,
                      "FLY_S3_ACCESS_KEY_ID": s3_server.access_key_id,
                      "FLY_S3_SECRET_ACCESS_KEY": s3_server.secret_access_key, "FLY_S3_BUCKET_NAME": BUCKET,
                      "FLY_S3_REGION": s3_server.region, "VIBEINSIGHT_S3_ADDRESSING_STYLE": "path"}
            deno = shutil.which("deno") or pytest.fail("deno not installed (bin/bootstrap test installs it)")
            # served by `deno serve` (serve.ts: the same handler as index.ts, Supabase's entrypoint)
            proc = lp.spawn("edge-function", [deno, "serve", "--allow-net", "--allow-env", "--allow-read",
                                              "--host", "127.0.0.1", "--port", str(port), str(FUNCTION.with_name("serve.ts"))],
                            fn_env)
            function_url = f"http://127.0.0.1:{port}"
            wait_for(lambda: proc.poll() is not None or _answers(function_url), 120, 0.3, "the Edge Function to serve")
            assert proc.poll() is None, lp.log("edge-function")
            yield {"function_url": function_url, "token": fake_jwt("authenticated", user), "user": user,
                   "anon_key": rest.anon_key, "supabase_url": realtime.url, "realtime": realtime, "lp": lp,
                   "pg": pg, "tmp": tmp}
    finally:
        drop_database(pg)


def run_upload(stack, path: Path, home: Path, *extra: str, realtime: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "VIBEINSIGHT_HOME": str(home), "SUPABASE_URL": stack["supabase_url"],
           "SUPABASE_ANON_KEY": stack["anon_key"]}
    for k in ("PREFECT_API_URL", "FLY_S3_ENDPOINT", "VIBEINSIGHT_STATUS_URL"):
        env.pop(k, None)  # the client knows only the function, its token and the Supabase pair
    stack["realtime"].refuse = not realtime
    return subprocess.run([sys.executable, "-m", "vibeinsight", "upload", str(path), "--function-url",
                           stack["function_url"], "--token", stack["token"], "--language", "en", "--poll-s", "0.5",
                           "--timeout-s", "300", *extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)


def progress_of(stderr: str) -> list[tuple[str, int]]:
    return [(m.group(1), int(m.group(2))) for m in re.finditer(r"^progress (\S+) (\d+)$", stderr, re.M)]


def test_12_mb_upload_is_multipart_and_reaches_completed_over_realtime(stack, audio, tmp_path):
    src = tmp_path / "standup-long.wav"
    # 11 s of speech, then quiet noise to 66 s: 48 kHz stereo 16-bit PCM is 12.1 MB of valid audio
    ffmpeg("-i", str(audio / "jfk.flac"), "-f", "lavfi", "-i", "anoisesrc=a=0.002:d=55:r=48000",
           "-filter_complex", "[0]aresample=48000,aformat=channel_layouts=stereo[a];"
           "[1]aformat=channel_layouts=stereo[b];[a][b]concat=n=2:v=0:a=1", "-c:a", "pcm_s16le", str(src))
    assert src.stat().st_size > 12 * 1000 * 1000
    sent_before = stack["realtime"].sent
    out = run_upload(stack, src, tmp_path / "client", "--json")
    assert out.returncode == 0, out.stderr[-4000:] + stack["lp"].log("edge-function")[-2000:]
    doc = json.loads(out.stdout)  # exactly one JSON document on stdout
    assert doc["status"] == "COMPLETED"
    assert doc["user_id"] == stack["user"]
    assert doc["source"]["bytes"] == src.stat().st_size
    assert re.match(rf"^s3://{BUCKET}/uploads/{stack['user']}/[0-9a-f-]{{36}}\.wav$", doc["source"]["uri"])
    assert "country" in doc["transcript"]["text"].lower()
    # what the user saw: stages in order, a percentage that never goes back, ending at 100
    shown = progress_of(out.stderr)
    percents = [p for _, p in shown]
    assert len(shown) >= 4, out.stderr
    assert percents == sorted(percents), shown
    assert percents[-1] == 100 and shown[-1][0] in ("completed", "publish", "done"), shown
    # the changes came over Realtime (the join carried the user's token), not only from polling
    assert stack["realtime"].sent > sent_before
    assert stack["realtime"].joins[-1]["access_token"] == stack["token"]
    # the upload itself was the function's multipart: nothing left to resume
    assert not list((tmp_path / "client" / "uploads").glob("*.json"))


def test_small_upload_without_realtime_falls_back_to_polling(stack, audio, tmp_path):
    src = tmp_path / "jfk.flac"
    shutil.copy(audio / "jfk.flac", src)
    joins_before = len(stack["realtime"].joins)
    out = run_upload(stack, src, tmp_path / "client", realtime=False)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "COMPLETED" in out.stdout
    percents = [p for _, p in progress_of(out.stderr)]
    assert percents and percents == sorted(percents) and percents[-1] == 100, out.stderr
    assert len(stack["realtime"].joins) == joins_before  # Realtime refused every socket


def test_a_rejected_recording_exits_2_with_the_flows_code(stack, tmp_path):
    bad = tmp_path / "not-audio.wav"
    bad.write_bytes(b"RIFF" + os.urandom(60_000))
    out = run_upload(stack, bad, tmp_path / "client", "--json")
    assert out.returncode == 2, out.stderr[-3000:]
    doc = json.loads(out.stdout)
    assert doc["status"] == "FAILED" and doc["error"]["code"] in ("not_audio", "corrupt")
    assert out.stderr.strip().splitlines()[-1].startswith(f"error: {doc['error']['code']}: ")


def test_an_interrupted_multipart_upload_resumes_where_it_stopped(stack, s3_server, tmp_path, monkeypatch):
    """The client's upload, in this process: the connection drops at part 2 until the client gives
    up; the next run of the client asks the function what S3 has and sends only the missing parts."""
    from vibeinsight.cli.upload import EdgeClient, Uploader

    src = tmp_path / "long.wav"
    ffmpeg("-f", "lavfi", "-i", "anoisesrc=a=0.01:d=60:r=48000", "-ac", "2", "-c:a", "pcm_s16le", str(src))
    assert 10 * 2**20 < src.stat().st_size < 15 * 2**20  # three parts: 5 + 5 + the rest
    sent: list[int] = []
    real_put = Uploader._put

    def dropping_put(self, url, headers, offset, length):
        part = offset // (5 * 2**20) + 1
        if part == 2 and self.drop:
            raise OSError("connection reset by peer")
        sent.append(part)
        return real_put(self, url, headers, offset, length)

    monkeypatch.setattr(Uploader, "_put", dropping_put)
    edge = EdgeClient(stack["function_url"], stack["token"])
    first = Uploader(edge, src, tmp_path / "state", lambda *_: None)
    first.drop = True
    with pytest.raises(RuntimeError, match="upload interrupted"):
        first.run()
    assert sent == [1] and first.state_file.is_file()
    second = Uploader(edge, src, tmp_path / "state", lambda *_: None)
    second.drop = False
    key = second.run()
    assert sent == [1, 2, 3]  # part 1 was not sent again
    assert not second.state_file.exists()
    body = s3_server.block(BUCKET).client().get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert body == src.read_bytes()
