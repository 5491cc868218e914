"""A moto S3 server on loopback for the storage suites (one per test session).

Import the fixtures into a test module to use them. Credentials are dummy values set
per test; each test gets its own bucket.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

MiB = 1024 * 1024
REGION = "us-east-1"
DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


@dataclass(frozen=True)
class S3Bucket:
    endpoint_url: str
    bucket: str
    client: Any

    def keys(self) -> list[str]:
        listed = self.client.list_objects_v2(Bucket=self.bucket)
        return [item["Key"] for item in listed.get("Contents", [])]

    def pending_multipart_uploads(self) -> int:
        listed = self.client.list_multipart_uploads(Bucket=self.bucket)
        return len(listed.get("Uploads", []))


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3Bucket:
    for name, value in DUMMY_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    name = f"tf-test-{uuid.uuid4().hex[:16]}"
    client = boto3.session.Session().client("s3", region_name=REGION, endpoint_url=moto_endpoint)
    client.create_bucket(Bucket=name)
    return S3Bucket(moto_endpoint, name, client)


def s3_settings(bucket: S3Bucket, *, prefix: str = "") -> dict[str, Any]:
    """``make_server`` overrides for S3 storage in ``bucket``."""
    return {
        "file_storage_type": "s3",
        "s3_bucket": bucket.bucket,
        "s3_endpoint_url": bucket.endpoint_url,
        "s3_region": REGION,
        "s3_path_prefix": prefix,
    }


def write_file(path: Path, size: int) -> str:
    """Write ``size`` bytes of varied content in 1 MiB blocks; return their sha256."""
    digest = hashlib.sha256()
    seed = os.urandom(MiB)
    with path.open("wb") as handle:
        for index in range(0, size, MiB):
            block = (index // MiB).to_bytes(8, "big") + seed[8:]
            block = block[: min(MiB, size - index)]
            digest.update(block)
            handle.write(block)
    return digest.hexdigest()


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """``make_server`` overrides selecting the storage backend."""
    if request.param == "local":
        yield {}
    else:
        bucket: S3Bucket = request.getfixturevalue("s3_bucket")
        yield {**s3_settings(bucket, prefix="tf"), "_bucket": bucket}
