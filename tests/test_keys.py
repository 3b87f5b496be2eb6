"""Upload keys: what a client may be handed a presigned URL for (no server: refused before any call)."""

from __future__ import annotations

import pytest

from blocks.storage import S3Bucket
from vibeinsight.keys import InvalidKey, split_s3_uri, validate_upload_key

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("key", ["../etc/passwd", "/uploads/a.wav", "uploads/../results/x.json", "results/x.json",
                                 "uploads//a.wav", "uploads/a\\b.wav", "uploads/\x00.wav", "", "s3://b/uploads/a"])
def test_bad_upload_keys_are_refused(key):
    # nothing listens at this endpoint: a key that got past the check would fail differently
    bucket = S3Bucket(endpoint="http://127.0.0.1:9", access_key_id="t", secret_access_key="t",
                      addressing_style="path", max_attempts=1, connect_timeout_s=1)
    with pytest.raises(InvalidKey):
        bucket.presign_upload(key, "audio/wav")


def test_key_helpers():
    assert validate_upload_key("uploads/u/ja 会議.wav", ["uploads/"]) == "uploads/u/ja 会議.wav"
    assert split_s3_uri("s3://b/uploads/x.wav", "d") == ("b", "uploads/x.wav")
    assert split_s3_uri("uploads/x.wav", "d") == ("d", "uploads/x.wav")
    with pytest.raises(InvalidKey):
        split_s3_uri("s3://b", "d")
