"""Object storage for uploads and results: LocalBucket (a folder), S3Bucket (Fly.io Tigris or any
S3 endpoint, through boto3) and FallbackStorage (a primary with a second store behind it)."""

from __future__ import annotations

import json
import os
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Literal

from prefect.blocks.core import Block
from prefect.filesystems import WritableFileSystem
from pydantic import BaseModel, Field, PrivateAttr

from vibeinsight import tracing
from vibeinsight.errors import InputRejected, StorageFailed
from vibeinsight.fanout import FANOUT_PREFIX
from vibeinsight.hashing import copy_hashed
from vibeinsight.keys import InvalidKey, split_s3_uri, validate_upload_key
from vibeinsight.retry import outage_retrying
from vibeinsight.settings import S3Options

# What a run writes in the bucket: its result document, and its workspace (the chunk cache's records,
# BucketResultStorage). The runs' S3 identity may write and delete these two prefixes only, and read
# the upload prefixes besides (S3Options.upload_prefixes).
RESULTS_PREFIX = "results/"
WORKSPACE_PREFIX = "prefect-results/"
# Lifecycle of the workspace: the chunk cache's records (small) stay as long as the cache promises
# (flows/chunks.py: a session run again within the week pays for no finished chunk twice); a fanned-out
# run's part chunks (16 kHz PCM, ~115 MB an hour of audio) go after a day: where two Expiration rules
# overlap, S3 honours the shorter (docs.aws.amazon.com/AmazonS3/latest/userguide/lifecycle-conflicts.html).
CHUNK_CACHE_DAYS = 7
PART_CHUNKS_DAYS = 1
ABORT_MULTIPART_DAYS = 1


def run_prefixes(upload_prefixes: list[str]) -> dict[str, list[str]]:
    """The runs' identity's permissions by prefix: read the uploads, read and write its own output."""
    return {"read": [*upload_prefixes, RESULTS_PREFIX, WORKSPACE_PREFIX], "write": [RESULTS_PREFIX, WORKSPACE_PREFIX]}


def runs_policy(bucket: str, upload_prefixes: list[str]) -> dict:
    """run_prefixes as an IAM policy (AWS, Tigris): what to attach to the runs' access key or OIDC role."""
    granted = run_prefixes(upload_prefixes)
    arn = f"arn:aws:s3:::{bucket}/"
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "RunsRead", "Effect": "Allow", "Action": ["s3:GetObject"],
         "Resource": [arn + prefix + "*" for prefix in granted["read"]]},
        {"Sid": "RunsWrite", "Effect": "Allow",
         "Action": ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
         "Resource": [arn + prefix + "*" for prefix in granted["write"]]}]}


class FetchedObject(BaseModel):
    uri: str
    path: Path
    bytes: int
    sha256: str
    served_by: str = "local"  # local, primary or fallback (Usage.storage)


class ObjectStorage(Block):
    """Where uploads come from and results go. Never modifies or deletes an upload."""

    _block_type_name = "VibeInsight Object Storage"

    def fetch(self, uri: str, dest_dir: Path, max_bytes: int | None = None) -> FetchedObject:
        """Copy the upload at uri into dest_dir (streamed and hashed); too large is rejected before the copy."""
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / ("upload" + _suffix(uri))
        with tracing.span("storage.get", uri=uri, storage=type(self).__name__) as span:
            if max_bytes is not None and (size := self._size(uri)) is not None and size > max_bytes:
                raise InputRejected(f"{size} bytes is over the limit of {max_bytes}", "too_large")
            size, sha = self._download(uri, dest)
            tracing.set_attributes(span, bytes=size, served_by=self.role())
        return FetchedObject(uri=uri, path=dest, bytes=size, sha256=sha, served_by=self.role())

    def role(self) -> str:
        """What Usage.storage says when this store served the run."""
        return "local"

    def service_name(self, role: str) -> str:
        """The usage ledger's service for the store that played `role` (tigris, supabase, local…)."""
        return "local"

    def _size(self, uri: str) -> int | None:
        return None

    def _download(self, uri: str, dest: Path) -> tuple[int, str]:
        with self._open(uri) as src:
            return copy_hashed(src, dest)

    def put_json(self, key: str, document: Any) -> str:
        data = json.dumps(document, ensure_ascii=False, indent=2, default=str).encode()
        with tracing.span("storage.put", key=key, bytes=len(data), storage=type(self).__name__):
            return self.put_bytes(key, data, "application/json")

    @abstractmethod
    def _open(self, uri: str):  # -> BinaryIO context manager
        ...

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, content_type: str) -> str:
        ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        ...


class LocalBucket(ObjectStorage):
    """A folder standing in for the bucket: uploads/ (the only files a run may read), results/, reports/."""

    _block_type_name = "VibeInsight Local Bucket"

    root: str = Field(description="folder that holds uploads/, results/ and reports/")

    UPLOADS: ClassVar[str] = "uploads"  # the local twin of the bucket's upload prefix

    def uploads_dir(self) -> Path:
        return Path(self.root).resolve() / self.UPLOADS

    def _source(self, uri: str) -> Path:
        """The upload's path, resolved (symlinks included); InputRejected(source_not_allowed) unless it
        lies under the uploads folder: a run must never read any other file on the host."""
        given = Path(uri.removeprefix("file://")).expanduser()
        path, uploads = given.resolve(), self.uploads_dir().resolve()
        if uploads not in path.parents:
            raise InputRejected(f"{given} is not under the uploads folder {uploads}", "source_not_allowed")
        return path

    def _size(self, uri: str) -> int | None:
        path = self._source(uri)
        return path.stat().st_size if path.is_file() else None

    def _open(self, uri: str):
        path = self._source(uri)
        if not path.is_file():
            raise InputRejected(f"no such file: {path}", "not_found")
        if not os.access(path, os.R_OK):
            raise InputRejected(f"cannot read {path}", "not_found")
        return path.open("rb")

    def place_upload(self, file: str | Path, owner: str | None = None) -> str:
        """Put a local file among the uploads, as the app's upload would, and return the path a run reads:
        a hard link where the file system allows (no copy, and the file is never changed), else a copy.
        A file already among the uploads stays where it is; a missing one gets the path it would have
        had, so its run ends `not_found` like any missing upload."""
        import shutil
        import uuid

        src = Path(file).expanduser().resolve()
        uploads = self.uploads_dir().resolve()
        if uploads in src.parents:
            return str(src)
        dest = uploads / (owner or "local") / uuid.uuid4().hex / src.name
        if not src.is_file():
            return str(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dest)
        except OSError:  # another file system, or links not allowed: a copy, written whole before it appears
            tmp = dest.with_name(dest.name + ".tmp")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        return str(dest)

    def _path(self, key: str) -> Path:
        root = Path(self.root).resolve()
        path = (root / key).resolve()
        if root not in path.parents:
            raise ValueError(f"key {key!r} leaves the bucket")
        return path

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # readers never see half a document
        return key

    def get_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()


def as_upload(storage: ObjectStorage, source: str, owner: str | None = None) -> str:
    """What a run is given for `source`: with local storage, a local file placed among the uploads (as the
    app's upload would place it; LocalBucket.place_upload), since a run reads nothing else; otherwise
    `source` as given (an s3:// URI)."""
    if not isinstance(storage, LocalBucket) or "://" in source.removeprefix("file://"):
        return source
    return storage.place_upload(source.removeprefix("file://"), owner)


def _suffix(uri: str) -> str:
    name = uri.rsplit("/", 1)[-1]
    suffix = Path(name).suffix
    return suffix if 1 < len(suffix) <= 8 and suffix[1:].isalnum() else ""


class Presigned(BaseModel):
    """What a client needs to upload: PUT to url, or POST url with fields (multipart form, file last)."""

    method: Literal["PUT", "POST"]
    url: str
    key: str
    bucket: str
    expires_in: int
    headers: dict[str, str] = Field(default_factory=dict)
    fields: dict[str, str] = Field(default_factory=dict)
    max_bytes: int | None = None


class S3Bucket(ObjectStorage, S3Options):
    """An S3-compatible bucket through boto3: Fly.io's Tigris by default, any endpoint by URL.

    Without access keys boto3's own credential chain is used (on Fly Machines: the OIDC
    web-identity variables AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE).
    """

    _block_type_name = "VibeInsight S3 Bucket"

    multipart_threshold: int = 5 * 1024**2  # transfers above this go multipart, in parts of this size
    max_concurrency: int = 4  # parts in flight: memory stays near threshold x concurrency
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    max_attempts: int = 3  # botocore's standard retry mode (throttling and 5xx)
    served_as: Literal["primary", "fallback"] = "primary"
    service: str = Field("tigris", description="name in usage records: tigris, supabase, s3")

    def role(self) -> str:
        return self.served_as

    def service_name(self, role: str) -> str:
        return self.service

    _client: Any = PrivateAttr(None)
    _ride_out: bool = PrivateAttr(True)  # False under FallbackStorage, which rides out the pair

    def client(self):
        """One boto3 client per block (clients are thread-safe), from its own session so that
        credentials are resolved for this block, not cached process-wide."""
        if self._client is None:
            self._client = self._new_client()
        return self._client

    def _new_client(self):
        import boto3
        from botocore.config import Config

        creds = {}
        if self.access_key_id and self.secret_access_key:
            creds = dict(aws_access_key_id=self.access_key_id,
                         aws_secret_access_key=self.secret_access_key.get_secret_value())
        config = Config(region_name=self.region, signature_version="s3v4",
                        s3={"addressing_style": self.addressing_style},
                        connect_timeout=self.connect_timeout_s, read_timeout=self.read_timeout_s,
                        retries={"mode": "standard", "max_attempts": self.max_attempts})
        return boto3.session.Session().client("s3", endpoint_url=self.endpoint, config=config, **creds)

    def transfer_config(self):
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(multipart_threshold=self.multipart_threshold, multipart_chunksize=self.multipart_threshold,
                              max_concurrency=self.max_concurrency, use_threads=True)

    def _locate(self, uri: str) -> tuple[str, str]:
        try:
            return split_s3_uri(uri, self.bucket_name)
        except InvalidKey as exc:
            raise InputRejected(str(exc), "not_found") from exc

    def _ride(self, what: str, call):
        """The call, retried through an outage of the endpoint (VIBEINSIGHT_RETRY_OUTAGE_BUDGET_S); a
        missing object or a refused request fails at once. Every call wrapped is safe to repeat."""
        if not self._ride_out:
            return call()
        return outage_retrying(storage_may_pass, f"s3 {what}")(call)

    def _size(self, uri: str) -> int | None:
        bucket, key = self._locate(uri)

        def head() -> int:
            with _s3_errors(uri):
                return int(self.client().head_object(Bucket=bucket, Key=key)["ContentLength"])
        return self._ride(f"head {uri}", head)

    def _download(self, uri: str, dest: Path) -> tuple[int, str]:
        bucket, key = self._locate(uri)

        def download() -> None:
            with _s3_errors(uri):  # ranged GETs in parallel above the threshold, written straight to disk
                self.client().download_file(bucket, key, str(dest), Config=self.transfer_config())
        self._ride(f"get {uri}", download)
        return _hash_file(dest)  # from disk: ranged parts arrive out of order

    def _open(self, uri: str):
        bucket, key = self._locate(uri)

        def get():
            with _s3_errors(uri):
                return self.client().get_object(Bucket=bucket, Key=key)["Body"]
        return self._ride(f"get {uri}", get)

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        import io

        def put() -> None:
            with _s3_errors(key):
                self.client().upload_fileobj(io.BytesIO(data), self.bucket_name, key, Config=self.transfer_config(),
                                             ExtraArgs={"ContentType": content_type})
        self._ride(f"put {key}", put)
        return key

    def upload_file(self, path: Path, key: str, content_type: str = "application/octet-stream") -> str:
        def put() -> None:
            with _s3_errors(key):
                self.client().upload_file(str(path), self.bucket_name, key, Config=self.transfer_config(),
                                          ExtraArgs={"ContentType": content_type})
        self._ride(f"put {key}", put)
        return key

    def get_bytes(self, key: str) -> bytes:
        def read() -> bytes:
            with _s3_errors(key), self.client().get_object(Bucket=self.bucket_name, Key=key)["Body"] as body:
                return body.read()
        return self._ride(f"get {key}", read)

    def presign_upload(self, key: str, content_type: str, expires_in: int = 3600,
                       max_bytes: int | None = None) -> Presigned:
        """A presigned PUT, or a presigned POST whose policy bounds the size when max_bytes is given."""
        validate_upload_key(key, self.upload_prefixes)
        client = self.client()
        if max_bytes is None:
            url = client.generate_presigned_url(
                "put_object", Params={"Bucket": self.bucket_name, "Key": key, "ContentType": content_type},
                ExpiresIn=expires_in, HttpMethod="PUT")
            return Presigned(method="PUT", url=url, key=key, bucket=self.bucket_name, expires_in=expires_in,
                             headers={"Content-Type": content_type})
        post = client.generate_presigned_post(
            self.bucket_name, key, Fields={"Content-Type": content_type},
            Conditions=[{"Content-Type": content_type}, ["content-length-range", 1, max_bytes]],
            ExpiresIn=expires_in)
        return Presigned(method="POST", url=post["url"], key=key, bucket=self.bucket_name, expires_in=expires_in,
                         fields=post["fields"], max_bytes=max_bytes)


class BucketSetup(BaseModel):
    """What `vibeinsight storage setup` puts on the bucket (and reads back)."""

    cors_origins: list[str]
    upload_days: int = Field(ge=0, description="uploads are deleted this many days after they arrive; 0 keeps them")
    upload_prefixes: list[str]

    def cors_rules(self) -> list[dict]:
        # Browsers upload with presigned PUT/POST (multipart: PUT parts, then read each part's ETag).
        return [{"ID": "vibeinsight-uploads", "AllowedOrigins": list(self.cors_origins),
                 "AllowedMethods": ["GET", "HEAD", "PUT", "POST"], "AllowedHeaders": ["*"],
                 "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 3600}] if self.cors_origins else []

    def lifecycle_rules(self) -> list[dict]:
        rules = [{"ID": "abort-incomplete-multipart", "Status": "Enabled", "Filter": {"Prefix": ""},
                  "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_MULTIPART_DAYS}},
                 {"ID": "workspace", "Status": "Enabled", "Filter": {"Prefix": WORKSPACE_PREFIX},
                  "Expiration": {"Days": CHUNK_CACHE_DAYS}},
                 {"ID": "part-chunks", "Status": "Enabled", "Filter": {"Prefix": FANOUT_PREFIX},
                  "Expiration": {"Days": PART_CHUNKS_DAYS}}]
        if self.upload_days:
            rules += [{"ID": f"uploads-{i}", "Status": "Enabled", "Filter": {"Prefix": prefix},
                       "Expiration": {"Days": self.upload_days}} for i, prefix in enumerate(self.upload_prefixes)]
        return rules


def setup_bucket(store: S3Bucket, setup: BucketSetup) -> dict:
    """Create the bucket if missing, then put its CORS and lifecycle rules (each call replaces the
    whole configuration, so running it again changes nothing). Returns what the bucket then holds."""
    client, bucket = store.client(), store.bucket_name
    created = False
    with _s3_errors(bucket):
        try:
            client.head_bucket(Bucket=bucket)
        except Exception as exc:  # noqa: BLE001 - only "no such bucket" creates it
            if _status(exc) != 404:
                raise
            kwargs = ({"CreateBucketConfiguration": {"LocationConstraint": store.region}}
                      if store.region and store.region != "us-east-1" else {})
            client.create_bucket(Bucket=bucket, **kwargs)
            created = True
        if rules := setup.cors_rules():
            client.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": rules})
        else:
            client.delete_bucket_cors(Bucket=bucket)
        client.put_bucket_lifecycle_configuration(Bucket=bucket,
                                                  LifecycleConfiguration={"Rules": setup.lifecycle_rules()})
    return {"bucket": bucket, "created": created, **bucket_configuration(store)}


def bucket_configuration(store: S3Bucket) -> dict:
    """The bucket's CORS and lifecycle rules as the server reports them (empty lists when none)."""
    client, bucket = store.client(), store.bucket_name
    with _s3_errors(bucket):
        try:
            cors = client.get_bucket_cors(Bucket=bucket).get("CORSRules", [])
        except Exception as exc:  # noqa: BLE001 - NoSuchCORSConfiguration: none
            if _code(exc) != "NoSuchCORSConfiguration":
                raise
            cors = []
        try:
            lifecycle = client.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", [])
        except Exception as exc:  # noqa: BLE001 - NoSuchLifecycleConfiguration: none
            if _code(exc) != "NoSuchLifecycleConfiguration":
                raise
            lifecycle = []
    return {"cors": cors, "lifecycle": lifecycle}


def _code(exc: BaseException) -> str | None:
    return getattr(exc, "response", {}).get("Error", {}).get("Code")


def _status(exc: BaseException) -> int | None:
    return getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")


class FallbackStorage(ObjectStorage):
    """The design's fallback: when the primary fails with a storage error (not a missing or bad
    upload), the same call goes to the fallback (Supabase Storage's S3 endpoint, or any second S3)."""

    _block_type_name = "VibeInsight Fallback Storage"

    primary: S3Bucket
    fallback: S3Bucket
    _fell_back: bool = PrivateAttr(False)

    @property
    def fell_back(self) -> bool:
        """True once any call of this instance was served by the fallback."""
        return self._fell_back

    def role(self) -> str:
        return self.primary.role()

    def service_name(self, role: str) -> str:
        return (self.fallback if role == "fallback" else self.primary).service

    def model_post_init(self, context: Any) -> None:
        super().model_post_init(context)
        # one try of each store per round, and the pair retried through an outage: the fallback
        # serves at once when only the primary is down
        self.primary._ride_out = self.fallback._ride_out = False

    def _both(self, call):
        return outage_retrying(storage_may_pass, "storage (primary, then fallback)")(lambda: self._once(call))

    def _once(self, call):
        try:
            return call(self.primary)
        except StorageFailed as exc:
            import logging

            logging.getLogger("vibeinsight.storage").warning("primary storage failed, using the fallback: %s", exc)
            result = call(self.fallback)
            self._fell_back = True
            return result

    def fetch(self, uri: str, dest_dir: Path, max_bytes: int | None = None) -> FetchedObject:
        return self._both(lambda store: store.fetch(uri, dest_dir, max_bytes))

    def _open(self, uri: str):
        return self._both(lambda store: store._open(uri))

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        return self._both(lambda store: store.put_bytes(key, data, content_type))

    def get_bytes(self, key: str) -> bytes:
        return self._both(lambda store: store.get_bytes(key))

    def presign_upload(self, key: str, content_type: str, expires_in: int = 3600,
                       max_bytes: int | None = None) -> Presigned:
        return self.primary.presign_upload(key, content_type, expires_in, max_bytes)


class BucketResultStorage(WritableFileSystem):
    """Prefect result storage in the bucket (a task's `result_storage`): the chunk cache's records
    live beside the results, so a re-run on another Machine, whose disk starts empty, finds what an
    earlier run already paid for. Prefect reads and writes whole records by key; a missing key
    raises, which Prefect reads as "not cached".

    Prefect only takes a block saved server-side as a task's result storage, so the saved document
    holds nothing but the prefix: the I/O goes through the run's own storage block (`bind`), or,
    where the document is loaded elsewhere, through the one the environment describes. No bucket
    key is ever written into Prefect.
    """

    _block_type_name = "VibeInsight Bucket Result Storage"

    prefix: str = WORKSPACE_PREFIX
    _store: ObjectStorage | None = PrivateAttr(None)

    def bind(self, store: ObjectStorage) -> BucketResultStorage:
        self._store = store
        return self

    def _bucket(self) -> ObjectStorage:
        if self._store is None:
            from blocks import registry  # loaded from its document: the environment's bucket

            self._store = registry.storage()
        return self._store

    # Prefect calls these with `_sync=True` from sync code and their a-prefixed twins from async code.
    def read_path(self, path: str, _sync: bool | None = None) -> bytes:
        return self._bucket().get_bytes(self.prefix + path)

    def write_path(self, path: str, content: bytes, _sync: bool | None = None) -> str:
        return self._bucket().put_bytes(self.prefix + path, content, "application/octet-stream")

    async def aread_path(self, path: str) -> bytes:
        import asyncio

        return await asyncio.to_thread(self.read_path, path)

    async def awrite_path(self, path: str, content: bytes) -> str:
        import asyncio

        return await asyncio.to_thread(self.write_path, path, content)


class _s3_errors:
    """botocore errors as pipeline errors: a missing object is a rejected input, anything else a storage failure."""

    def __init__(self, what: str):
        self.what = what

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, (InputRejected, StorageFailed)):
            return False
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if err.get("Code") in ("NoSuchKey", "404", "NotFound") or status == 404:
                raise InputRejected(f"no such object: {self.what}", "not_found") from exc
            raise StorageFailed(f"{self.what}: {err.get('Code')} {err.get('Message', '')}".strip()) from exc
        if isinstance(exc, (BotoCoreError, OSError)):
            raise StorageFailed(f"{self.what}: {exc}") from exc
        return False


_TRANSIENT_S3_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling"}


def storage_may_pass(exc: BaseException | None) -> bool:
    """Whether a storage error may pass with time (the endpoint down or overloaded: a refused or
    dropped connection, a timeout, a 5xx); a missing object, a denied request or a bad key never does."""
    from boto3.exceptions import S3TransferFailedError, S3UploadFailedError
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, InputRejected):
            return False
        if isinstance(exc, (ConnectionError, HTTPClientError, ConnectionRefusedError, ConnectionResetError,
                            TimeoutError, S3TransferFailedError)):
            return True
        if isinstance(exc, ClientError):
            return (_status(exc) or 0) >= 500 or _code(exc) in _TRANSIENT_S3_CODES
        if isinstance(exc, S3UploadFailedError):  # boto3 keeps only the message of the error under it
            return any(word in str(exc) for word in ("Could not connect", "Connection", "timed out",
                                                     *_TRANSIENT_S3_CODES, " 50"))
        exc = exc.__cause__ or exc.__context__
    return False


def _hash_file(path: Path) -> tuple[int, str]:
    import hashlib

    digest, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()
