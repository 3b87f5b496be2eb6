"""The run Machines' S3 bucket for the fly-machines stack: the same SeaweedFS as tests/s3_server.py
(one access key, signatures really checked), as a plain context manager so the end-to-end test
and bench/fly_burst.py share it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.s3_server import REGION, S3Server, WeedS3


@dataclass
class S3:
    server: S3Server
    bucket_name: str = "vibeinsight-audio"

    def env(self) -> dict[str, str]:
        """The project's variables for this bucket (what the runs app's secrets hold in production)."""
        return {**self.server.env(), "FLY_S3_BUCKET_NAME": self.bucket_name, "FLY_S3_REGION": REGION}

    def block(self):
        return self.server.block(self.bucket_name)

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.block().client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket_name, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


@contextlib.contextmanager
def seaweed_s3(tmp: Path, bucket_name: str = "vibeinsight-audio") -> Iterator[S3]:
    weed = WeedS3(tmp)
    try:
        weed.start().bucket(bucket_name)
        yield S3(weed.server, bucket_name)
    finally:
        weed.stop()
