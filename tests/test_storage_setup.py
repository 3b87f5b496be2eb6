"""`vibeinsight storage setup` (and the deploy's setup_storage): bucket, CORS and lifecycle, idempotent.

On SeaweedFS, which implements PutBucketCors and PutBucketLifecycleConfiguration (and their GETs):
what the command leaves is read back from the server, not from the command's own output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "vibeinsight", "storage", "setup"]


def setup_cli(s3_server, tmp_path, bucket: str, **env: str) -> dict:
    full = {**os.environ, **s3_server.env(), "FLY_S3_BUCKET_NAME": bucket, "VIBEINSIGHT_HOME": str(tmp_path),
            "PREFECT_API_URL": "", **env}
    done = subprocess.run(CLI, capture_output=True, text=True, env=full, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def read_back(s3_server, bucket: str) -> dict:
    from blocks.storage import bucket_configuration

    return bucket_configuration(s3_server.block(bucket))


def test_setup_twice_gives_the_same_bucket_configuration(s3_server, tmp_path):
    bucket = f"vi-setup-{uuid.uuid4().hex[:8]}"
    origins = json.dumps(["https://app.example.com", "http://localhost:5173"])
    first = setup_cli(s3_server, tmp_path, bucket, VIBEINSIGHT_BUCKET_CORS_ORIGINS=origins)
    assert first["created"] is True
    after_first = read_back(s3_server, bucket)
    second = setup_cli(s3_server, tmp_path, bucket, VIBEINSIGHT_BUCKET_CORS_ORIGINS=origins)
    assert second["created"] is False
    assert read_back(s3_server, bucket) == after_first

    [cors] = after_first["cors"]
    assert sorted(cors["AllowedOrigins"]) == ["http://localhost:5173", "https://app.example.com"]
    assert cors["ExposeHeaders"] == ["ETag"] and {"PUT", "POST"} <= set(cors["AllowedMethods"])
    rules = {r["Filter"]["Prefix"]: r for r in after_first["lifecycle"]}
    assert rules[""]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    # The chunk cache's records stay as long as the chunk task's cache promises (a re-run within it pays
    # for no finished chunk twice); a fanned-out run's bulky part chunks go after a day.
    from flows.chunks import transcribe_chunk

    assert rules["prefect-results/"]["Expiration"] == {"Days": transcribe_chunk.cache_expiration.days} == {"Days": 7}
    assert rules["prefect-results/fanout/"]["Expiration"] == {"Days": 1}
    assert rules["uploads/"]["Expiration"] == {"Days": 30}  # the default
    assert all(r["Status"] == "Enabled" for r in after_first["lifecycle"])


def test_upload_retention_is_a_setting_and_zero_keeps_uploads(s3_server, tmp_path):
    bucket = f"vi-setup-{uuid.uuid4().hex[:8]}"
    setup_cli(s3_server, tmp_path, bucket, VIBEINSIGHT_BUCKET_UPLOAD_RETENTION_DAYS="7")
    rules = {r["Filter"]["Prefix"]: r for r in read_back(s3_server, bucket)["lifecycle"]}
    assert rules["uploads/"]["Expiration"] == {"Days": 7}

    setup_cli(s3_server, tmp_path, bucket, VIBEINSIGHT_BUCKET_UPLOAD_RETENTION_DAYS="0")
    rules = {r["Filter"]["Prefix"]: r for r in read_back(s3_server, bucket)["lifecycle"]}
    assert "uploads/" not in rules and set(rules) == {"", "prefect-results/", "prefect-results/fanout/"}


def test_the_deploy_sets_the_bucket_up_and_keeps_what_it_holds(s3_server, monkeypatch):
    """deploy_all's first step on a bucket that already holds an upload: configured, nothing lost."""
    from deployments.deploy import setup_storage
    from vibeinsight.settings import Settings

    bucket = f"vi-setup-{uuid.uuid4().hex[:8]}"
    store = s3_server.bucket(bucket)
    store.put_bytes("uploads/u/a.wav", b"RIFF", "audio/wav")
    for k, v in {**s3_server.env(), "FLY_S3_BUCKET_NAME": bucket}.items():
        monkeypatch.setenv(k, v)
    done = setup_storage(Settings())
    assert done["created"] is False and done["lifecycle"] == read_back(s3_server, bucket)["lifecycle"]
    assert store.get_bytes("uploads/u/a.wav") == b"RIFF"


def test_setup_without_object_storage_is_a_clear_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLY_S3_")}
    done = subprocess.run(CLI, capture_output=True, text=True, timeout=120,
                          env={**env, "VIBEINSIGHT_HOME": str(tmp_path), "VIBEINSIGHT_STORAGE": "local"})
    assert done.returncode == 1 and "error: no_cloud_storage:" in done.stderr
