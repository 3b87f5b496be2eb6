"""A real S3 server over HTTP for tests: moto's server mode on 127.0.0.1 (boto3 points at it by
endpoint_url, exactly as at Tigris). Import the fixture with `from tests.s3_server import s3_endpoint`."""

from __future__ import annotations

import socket

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def make_bucket(endpoint: str, name: str, region: str = "nrt"):
    """A bucket on the server, and the block that talks to it (path-style, test keys)."""
    from blocks.storage import S3Bucket

    store = S3Bucket(endpoint_url=endpoint, bucket=name, region=region, access_key_id="test",
                     secret_access_key="test", addressing_style="path")
    client = store.client()
    try:
        client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    return store
