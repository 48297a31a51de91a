"""In-network S3 storage (``STORAGE_ENV=s3``), with boto3.

The staging, link following, upload and error rules are the object-store ones
(:mod:`.objectstore`, shared with Swift); this module is the S3 client behind them: one
bucket, path-style addressing and checksums only when required (pfcon's settings, for
MinIO, Ceph and SeaweedFS with boto3 ≥ 1.36), botocore's standard retry mode (exponential
backoff with jitter). Objects stream through files: a small one in one GET signed by
botocore's SigV4 signer and sent over kept-alive connections (:mod:`.objectget`), a large one
(from ``multipart_threshold``) through one shared s3transfer manager, as ranged parallel
GETs or a multipart upload, with bounded concurrency and a bounded write queue, so memory
stays small whatever the sizes.

Credentials live in the client and the signer only: never in a ``repr``, a log line or an error.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import boto3
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError, ClientError
from s3transfer.exceptions import RetriesExceededError, TransferNotDoneError
from s3transfer.subscribers import BaseSubscriber

from .local import StoreBase
from .objectget import ObjectGets, ObjectHTTPError
from .objectstore import ObjectInfo, ObjectStorage

MiB = 1024**2


@dataclass(frozen=True)
class S3Settings:
    endpoint_url: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    bucket: str
    region: str = "us-east-1"
    retries: int = 5  # botocore max_attempts: retries after the first try
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    multipart_threshold: int = 64 * MiB
    multipart_chunksize: int = 16 * MiB
    concurrency: int = 8  # requests at once across all transfers
    io_queue: int = 32  # 256 KiB writes waiting for the disk, per download (8 MiB)


class _KnownSize(BaseSubscriber):  # type: ignore[misc]  # s3transfer has no types
    """Tells s3transfer an object's size (from the listing): no HEAD before each GET."""

    def __init__(self, size: int) -> None:
        self.size = size

    def on_queued(self, future: Any, **kwargs: Any) -> None:
        future.meta.provide_transfer_size(self.size)


def _client(s: S3Settings, retries: int, connect_timeout: float, read_timeout: float, pool: int) -> Any:
    config = Config(
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": retries, "mode": "standard"},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=pool,
    )
    session = boto3.session.Session()  # the default session is not thread-safe to create clients from
    return session.client(
        "s3",
        endpoint_url=s.endpoint_url,
        aws_access_key_id=s.access_key,
        aws_secret_access_key=s.secret_key,
        region_name=s.region,
        config=config,
    )


class S3Store:
    """One S3 bucket (implements :class:`~.objectstore.ObjectStore`)."""

    name = "S3"
    errors: tuple[type[BaseException], ...] = (
        BotoCoreError, ClientError, RetriesExceededError, TransferNotDoneError, ObjectHTTPError, OSError,
        http.client.HTTPException,
    )  # fmt: skip

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        s = settings
        self.client = _client(s, s.retries, s.connect_timeout, s.read_timeout, pool=s.concurrency + 8)
        self._ping_client: Any = None
        self._ping_lock = threading.Lock()
        self.transfers = create_transfer_manager(
            self.client,
            TransferConfig(
                multipart_threshold=s.multipart_threshold,
                multipart_chunksize=s.multipart_chunksize,
                max_concurrency=s.concurrency,
                max_io_queue=s.io_queue,
                use_threads=True,
                preferred_transfer_client="classic",
            ),
        )
        # Small objects: signed GETs over kept-alive connections (botocore's own SigV4
        # signer, path-style URLs as the client's), see .objectget.
        endpoint = urlsplit(s.endpoint_url)
        self._origin = f"{endpoint.scheme}://{endpoint.netloc}"
        self._bucket_path = f"{endpoint.path.rstrip('/')}/{quote(s.bucket, safe='')}/"
        self._signer = S3SigV4Auth(Credentials(s.access_key, s.secret_key), "s3", s.region)
        self.gets = ObjectGets(
            s.endpoint_url,
            connect_timeout=s.connect_timeout,
            read_timeout=s.read_timeout,
            retries=s.retries,
            backoff=0.5,
            max_backoff=20.0,
        )

    def __repr__(self) -> str:
        return f"S3Store(endpoint_url={self.settings.endpoint_url!r}, bucket={self.settings.bucket!r})"

    @staticmethod
    def describe(error: BaseException) -> str:
        if isinstance(error, ObjectHTTPError):
            return str(error)
        if isinstance(error, ClientError):
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = error.response.get("Error", {}).get("Code", "")
            text = f"HTTP {status}" if status else "error"
            return f"{text} {code}" if code and code != str(status) else text
        return type(error).__name__

    def ensure_container(self) -> None:
        bucket = self.settings.bucket
        try:
            self.client.head_bucket(Bucket=bucket)
            return
        except ClientError as e:
            if self.describe(e) not in ("HTTP 404", "HTTP 404 NoSuchBucket"):
                raise
        if self.settings.region == "us-east-1":
            self.client.create_bucket(Bucket=bucket)
        else:
            self.client.create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": self.settings.region}
            )

    def list(self, prefix: str, limit: int | None = None) -> Sequence[ObjectInfo]:
        bucket = self.settings.bucket
        if limit is not None:
            page = self.client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=limit)
            return [ObjectInfo(o["Key"], int(o["Size"])) for o in page.get("Contents", ())]
        found: list[ObjectInfo] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            found.extend(ObjectInfo(o["Key"], int(o["Size"])) for o in page.get("Contents", ()))
        return found

    def exists(self, name: str) -> bool:
        try:
            self.client.head_object(Bucket=self.settings.bucket, Key=name)
        except ClientError as e:
            if e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise
        return True

    def read(self, name: str, limit: int) -> bytes:
        body = self.client.get_object(Bucket=self.settings.bucket, Key=name)["Body"]
        try:
            return bytes(body.read(limit))
        finally:
            body.close()  # never more of a (hostile) large object than the limit

    def get(self, name: str, path: str, size: int) -> None:
        if size >= self.settings.multipart_threshold:
            # Ranged GETs in parallel into a temporary file next to ``path``, renamed when
            # complete; a broken stream is retried; writes wait in a bounded queue.
            self.transfers.download(self.settings.bucket, name, path, subscribers=[_KnownSize(size)]).result()
            return
        # A small object: one signed GET streamed into the file (most inputs are small:
        # this is the hot path), without boto3's per-request machinery.
        self.gets.get(self._bucket_path + quote(name, safe="/~"), self._signed, path)

    def _signed(self, path: str) -> Mapping[str, str]:
        request = AWSRequest("GET", self._origin + path)
        self._signer.add_auth(request)  # stateless: safe from every staging thread
        return dict(request.headers.items())

    def put(self, path: str, name: str, size: int) -> None:
        # One PUT below the threshold, else a multipart upload whose parts are read from
        # the file as they are sent (never held in memory).
        self.transfers.upload(path, self.settings.bucket, name).result()

    def ping(self) -> None:
        with self._ping_lock:
            if self._ping_client is None:
                self._ping_client = _client(self.settings, 0, 5.0, 5.0, pool=2)
        self._ping_client.head_bucket(Bucket=self.settings.bucket)


class S3Storage(ObjectStorage):
    """In-network storage on S3 (``STORAGE_ENV=s3``)."""

    store: S3Store

    def __init__(self, storebase: StoreBase, settings: S3Settings, workers: int = 8, compression: int = 0) -> None:
        super().__init__(storebase, S3Store(settings), workers=workers, compression=compression)
        self.settings = settings
