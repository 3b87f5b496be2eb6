"""The runs' S3 identity reaches only what a run needs (issue 19), on SeaweedFS with exactly those grants.

Three identities on one server: the admin (creates the bucket), the uploader (the Edge Function's:
it signs upload URLs, so it may write under uploads/ only) and the runs' (blocks.storage.run_prefixes:
read uploads/, read and write results/ and the workspace prefix). A whole session completes with the
runs' identity, and that identity is refused everything else.
"""

from __future__ import annotations

import urllib.request
import uuid

import pytest

from blocks.storage import RESULTS_PREFIX, WORKSPACE_PREFIX
from tests.fake_gemini import FakeGemini
from tests.fake_openai import FakeOpenAI
from tests.s3_server import WeedS3, runs_actions
from vibeinsight.errors import InputRejected

pytestmark = pytest.mark.integration

BUCKET = "vibeinsight-audio"
UPLOADS = "uploads/"
U1 = "5b0d9a7e-2c4f-4e1a-9b3d-7f6e5d4c3b21"


@pytest.fixture(scope="module")
def weed(tmp_path_factory):
    server = WeedS3(tmp_path_factory.mktemp("seaweedfs"), identities={
        "runs": runs_actions(BUCKET, [UPLOADS]),
        "uploader": [f"Write:{BUCKET}/{UPLOADS}*"],
    })
    try:
        admin = server.start()
        admin.bucket(BUCKET)
        yield server
    finally:
        server.stop()


def _upload(weed: WeedS3, path, key: str) -> None:
    """The way a client uploads: a presigned PUT signed with the uploader's (Edge Function's) key."""
    presigned = weed.identities["uploader"].block(BUCKET).presign_upload(key, "audio/flac", 600)
    request = urllib.request.Request(presigned.url, data=path.read_bytes(), method="PUT", headers=presigned.headers)
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 200


def _refused(call) -> str:
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as err:
        call()
    return err.value.response["Error"]["Code"]


@pytest.fixture()
def as_the_runs(weed, home, monkeypatch, prefect_harness):
    """The run's environment: the runs' key only, OpenAI and Gemini stand-ins."""
    with FakeOpenAI() as oa, FakeGemini() as gm:
        env = dict(**weed.identities["runs"].env(), OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=oa.url + "/v1",
                   GEMINI_API_KEY="g-test", GOOGLE_GEMINI_BASE_URL=gm.url, VIBEINSIGHT_OPENAI_CHUNK_S="60",
                   VIBEINSIGHT_API_CONCURRENCY_LIMIT=f"openai-{uuid.uuid4().hex[:8]}")
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
        from vibeinsight.settings import get_settings

        get_settings.cache_clear()
        yield oa
        get_settings.cache_clear()


def test_a_whole_session_completes_with_the_runs_identity(weed, as_the_runs, audio):
    from flows.process_audio import process_audio

    key = f"{UPLOADS}{U1}/meeting.flac"
    _upload(weed, audio / "ja_meeting.flac", key)
    sid = str(uuid.uuid4())
    state = process_audio(source=f"s3://{BUCKET}/{key}", session_id=sid, user_id=U1, language="ja",
                          return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["transcript"]["segments"]
    admin = weed.server.block(BUCKET).client()
    written = {o["Key"] for o in admin.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert f"{RESULTS_PREFIX}{sid}.json" in written
    assert any(k.startswith(WORKSPACE_PREFIX) for k in written)  # the chunk cache went to the workspace
    assert written <= {key} | {k for k in written if k.startswith((RESULTS_PREFIX, WORKSPACE_PREFIX))}


def test_the_runs_identity_cannot_write_uploads_nor_read_outside_its_prefixes(weed, audio, tmp_path):
    admin = weed.server.block(BUCKET).client()
    for other in ("reports/2026-12/quota-report.json", "other/secret.txt"):
        admin.put_object(Bucket=BUCKET, Key=other, Body=b"operator only")
    upload = f"{UPLOADS}{U1}/call.flac"
    _upload(weed, audio / "ja_meeting.flac", upload)
    runs = weed.identities["runs"].block(BUCKET).client()

    # what a run does
    assert runs.head_object(Bucket=BUCKET, Key=upload)["ContentLength"] > 0
    for prefix in (RESULTS_PREFIX, WORKSPACE_PREFIX):
        runs.put_object(Bucket=BUCKET, Key=f"{prefix}probe.json", Body=b"{}")
        assert runs.get_object(Bucket=BUCKET, Key=f"{prefix}probe.json")["Body"].read() == b"{}"
        runs.delete_object(Bucket=BUCKET, Key=f"{prefix}probe.json")

    # a missing upload is still the user's not_found, not a storage failure (no List grant needed)
    with pytest.raises(InputRejected) as missing:
        weed.identities["runs"].block(BUCKET).fetch(f"s3://{BUCKET}/{UPLOADS}{U1}/gone.flac", tmp_path)
    assert missing.value.code == "not_found"

    # and nothing else: an upload is never changed or deleted, nothing outside is read, nothing listed
    assert _refused(lambda: runs.put_object(Bucket=BUCKET, Key=f"{UPLOADS}{U1}/new.flac", Body=b"x")) == "AccessDenied"
    assert _refused(lambda: runs.put_object(Bucket=BUCKET, Key=upload, Body=b"x")) == "AccessDenied"
    assert _refused(lambda: runs.delete_object(Bucket=BUCKET, Key=upload)) == "AccessDenied"
    assert _refused(lambda: runs.put_object(Bucket=BUCKET, Key="reports/x.json", Body=b"x")) == "AccessDenied"
    for other in ("reports/2026-12/quota-report.json", "other/secret.txt"):
        assert _refused(lambda k=other: runs.get_object(Bucket=BUCKET, Key=k)) == "AccessDenied"
    assert _refused(lambda: runs.list_objects_v2(Bucket=BUCKET)) == "AccessDenied"
    assert admin.head_object(Bucket=BUCKET, Key=upload)["ContentLength"] == (audio / "ja_meeting.flac").stat().st_size

    # the uploader may only put uploads: it reads no result
    uploader = weed.identities["uploader"].block(BUCKET).client()
    admin.put_object(Bucket=BUCKET, Key=f"{RESULTS_PREFIX}someone.json", Body=b"{}")
    assert _refused(lambda: uploader.get_object(Bucket=BUCKET, Key=f"{RESULTS_PREFIX}someone.json")) == "AccessDenied"
