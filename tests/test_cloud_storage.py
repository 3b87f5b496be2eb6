"""S3Bucket and FallbackStorage against a real S3 server over HTTP (SeaweedFS, signatures checked)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys

import httpx
import pytest

from blocks.storage import FallbackStorage, S3Bucket
from tests.conftest import ROOT
from tests.s3_server import REGION, free_port
from vibeinsight.errors import InputRejected, StorageFailed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bucket(s3_server):
    return s3_server.bucket("vibeinsight-audio")


def test_fetch_streams_multipart_download_and_hash(bucket, tmp_path):
    data = os.urandom(12 * 1024**2 + 123)  # above the 5 MB threshold: three ranged parts
    src = tmp_path / "big.wav"
    src.write_bytes(data)
    bucket.upload_file(src, "uploads/big.wav", "audio/wav")
    head = bucket.client().head_object(Bucket=bucket.bucket_name, Key="uploads/big.wav")
    assert head["ETag"].strip('"').endswith("-3")  # the transfer manager uploaded it in 3 parts
    assert head["ContentType"] == "audio/wav"

    got = bucket.fetch("s3://vibeinsight-audio/uploads/big.wav", tmp_path / "ws")
    assert got.bytes == len(data) and got.sha256 == hashlib.sha256(data).hexdigest()
    assert got.path.read_bytes() == data and got.path.name == "upload.wav"
    assert got.served_by == "primary"
    # the upload is untouched
    assert bucket.client().head_object(Bucket=bucket.bucket_name, Key="uploads/big.wav")["ETag"] == head["ETag"]


def test_fetch_rejects_missing_and_too_large_before_download(bucket, tmp_path):
    with pytest.raises(InputRejected) as e:
        bucket.fetch("s3://vibeinsight-audio/uploads/nope.wav", tmp_path)
    assert e.value.code == "not_found"
    bucket.put_bytes("uploads/small.ogg", b"x" * 2000, "audio/ogg")
    with pytest.raises(InputRejected) as e:
        bucket.fetch("uploads/small.ogg", tmp_path / "a", max_bytes=1000)
    assert e.value.code == "too_large"
    assert not (tmp_path / "a" / "upload.ogg").exists()  # rejected from HEAD, nothing downloaded
    with pytest.raises(InputRejected):
        bucket.fetch("https://example.com/x.wav", tmp_path)


def test_results_round_trip_as_json(bucket):
    bucket.put_json("results/abc.json", {"status": "COMPLETED", "text": "会議"})
    obj = bucket.client().get_object(Bucket=bucket.bucket_name, Key="results/abc.json")
    assert obj["ContentType"] == "application/json"
    assert json.loads(obj["Body"].read())["text"] == "会議"
    assert json.loads(bucket.get_bytes("results/abc.json"))["status"] == "COMPLETED"


def test_wrong_secret_is_refused_by_the_server(s3_server, bucket):
    """The server checks signatures: a block with the right key id and a wrong secret gets nothing."""
    bucket.put_bytes("results/secret.json", b"{}", "application/json")
    wrong = s3_server.block("vibeinsight-audio", secret_access_key="not-the-secret", max_attempts=1)
    with pytest.raises(StorageFailed, match="SignatureDoesNotMatch"):
        wrong.get_bytes("results/secret.json")
    assert httpx.get(f"{s3_server.endpoint}/vibeinsight-audio/results/secret.json").status_code == 403  # anonymous


def test_presigned_put_works_with_a_real_http_client(bucket):
    p = bucket.presign_upload("uploads/u1/call.m4a", "audio/mp4", expires_in=600)
    assert p.method == "PUT" and "X-Amz-Signature=" in p.url and "X-Amz-Expires=600" in p.url
    r = httpx.put(p.url, content=b"\x00audio", headers=p.headers)
    assert r.status_code == 200, r.text
    obj = bucket.client().get_object(Bucket=bucket.bucket_name, Key="uploads/u1/call.m4a")
    assert obj["Body"].read() == b"\x00audio" and obj["ContentType"] == "audio/mp4"
    assert "content-type%3Bhost" in p.url  # the content type is signed: a client cannot change it …
    changed = httpx.put(p.url, content=b"MZ", headers={"Content-Type": "application/x-msdownload"})
    assert changed.status_code == 403, changed.text  # … the server refuses it when one tries
    assert bucket.get_bytes("uploads/u1/call.m4a") == b"\x00audio"


def test_presigned_post_carries_the_size_policy(bucket, tmp_path):
    p = bucket.presign_upload("uploads/u1/meeting.wav", "audio/wav", expires_in=300, max_bytes=1024)
    assert p.method == "POST" and p.fields["key"] == "uploads/u1/meeting.wav"
    policy = json.loads(base64.b64decode(p.fields["policy"]))
    assert ["content-length-range", 1, 1024] in policy["conditions"]
    assert {"Content-Type": "audio/wav"} in policy["conditions"]
    r = httpx.post(p.url, data=p.fields, files={"file": ("meeting.wav", b"RIFF" + b"\0" * 100, "audio/wav")})
    assert r.status_code in (200, 204), r.text
    assert bucket.get_bytes("uploads/u1/meeting.wav").startswith(b"RIFF")
    # over the policy's size: the server refuses it (as Tigris does) and the first upload stays
    big = httpx.post(p.url, data=p.fields, files={"file": ("meeting.wav", b"\0" * 4096, "audio/wav")})
    assert big.status_code == 400 and "EntityTooLarge" in big.text, big.text
    assert bucket.get_bytes("uploads/u1/meeting.wav").startswith(b"RIFF")
    # a store that let it through anyway would still be caught by ingest, which re-checks the size itself
    bucket.put_bytes("uploads/u1/oversized.wav", b"\0" * 4096, "audio/wav")
    with pytest.raises(InputRejected) as e:
        bucket.fetch("uploads/u1/oversized.wav", tmp_path, max_bytes=1024)
    assert e.value.code == "too_large"


def test_dead_endpoint_is_a_storage_error(tmp_path, monkeypatch):
    monkeypatch.setenv("VIBEINSIGHT_RETRY_OUTAGE_BUDGET_S", "2")  # an outage past the budget (60 s by default)
    dead = S3Bucket(endpoint=f"http://127.0.0.1:{free_port()}", access_key_id="t", secret_access_key="t",
                    addressing_style="path", max_attempts=1, connect_timeout_s=1)
    with pytest.raises(StorageFailed):
        dead.fetch("uploads/a.wav", tmp_path)
    with pytest.raises(StorageFailed):
        dead.put_json("results/a.json", {})


def test_fallback_serves_when_the_primary_is_down(s3_server, tmp_path):
    fb = s3_server.bucket("fallback-bucket", served_as="fallback", service="supabase")
    fb.put_bytes("uploads/f.ogg", b"OggS-fallback", "audio/ogg")
    dead = S3Bucket(endpoint=f"http://127.0.0.1:{free_port()}", bucket_name="fallback-bucket", access_key_id="t",
                    secret_access_key="t", addressing_style="path", max_attempts=1, connect_timeout_s=1)
    store = FallbackStorage(primary=dead, fallback=fb)
    got = store.fetch("uploads/f.ogg", tmp_path)
    assert got.served_by == "fallback" and got.path.read_bytes() == b"OggS-fallback" and store.fell_back
    store.put_json("results/f.json", {"ok": True})
    assert json.loads(fb.get_bytes("results/f.json")) == {"ok": True}
    assert store.service_name("fallback") == "supabase"
    # a missing object is not a storage failure: no fallback, a clear rejection
    live = FallbackStorage(primary=s3_server.bucket("vibeinsight-audio"), fallback=fb)
    with pytest.raises(InputRejected):
        live.fetch("uploads/missing.ogg", tmp_path)
    assert not live.fell_back


def test_credentials_from_boto3_chain_when_no_keys(s3_server, bucket, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_access_key)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    store = S3Bucket(endpoint=s3_server.endpoint, bucket_name="vibeinsight-audio", addressing_style="path")
    creds = store.client()._request_signer._credentials
    assert creds.access_key == s3_server.access_key_id and creds.method == "env"
    assert store.client().head_bucket(Bucket="vibeinsight-audio")["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_web_identity_credentials_on_fly(moto_sts_endpoint, monkeypatch, tmp_path):
    """Fly Machines: AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE, exchanged at STS. moto here, not
    SeaweedFS: the exchange needs an STS, and S3 must accept the credentials that STS hands out."""
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJub25lIn0.eyJzdWIiOiJmbHkifQ.")
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/fly")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto_sts_endpoint)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    store = S3Bucket(endpoint=moto_sts_endpoint, bucket_name="fly-bucket", addressing_style="path")
    client = store.client()
    client.create_bucket(Bucket="fly-bucket", CreateBucketConfiguration={"LocationConstraint": REGION})
    assert client.head_bucket(Bucket="fly-bucket")["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert client._request_signer._credentials.method == "assume-role-with-web-identity"


def test_upload_url_cli(s3_server, bucket):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(s3_server.env())

    def run(*a):
        return subprocess.run([sys.executable, "-m", "vibeinsight", "upload-url", *a], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)

    r = run("uploads/u2/a.ogg", "--content-type", "audio/ogg", "--expires", "120")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["method"] == "PUT" and out["expires_in"] == 120
    assert httpx.put(out["url"], content=b"OggS", headers=out["headers"]).status_code == 200
    assert bucket.get_bytes("uploads/u2/a.ogg") == b"OggS"
    r = run("uploads/u2/b.ogg", "--content-type", "audio/ogg", "--max-bytes", "5000000")
    post = json.loads(r.stdout)
    assert post["method"] == "POST" and post["max_bytes"] == 5000000 and "policy" in post["fields"]
    r = run("../secret", "--content-type", "audio/ogg")
    assert r.returncode == 2 and "invalid_key" in r.stderr
    r = run("uploads/x.exe", "--content-type", "application/x-msdownload")
    assert r.returncode == 2 and "content type" in r.stderr
    # the Edge Function's list, not any audio/*: a type ingest has no demuxer for is refused here too
    r = run("uploads/u2/c.mid", "--content-type", "audio/midi")
    assert r.returncode == 2 and "invalid_content_type" in r.stderr
    r = run("uploads/u2/d.ogg", "--content-type", "audio/ogg", "--max-bytes", str(3 * 1024**3))
    assert r.returncode == 2 and "too_large" in r.stderr
