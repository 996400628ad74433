"""An S3-API server on loopback for tests: moto in server mode (a real HTTP S3 endpoint, in this process)."""
from __future__ import annotations

import os
import socket
import uuid
from typing import Any, Iterator

import boto3
from moto.server import ThreadedMotoServer

from storage.s3 import S3Settings

# moto accepts any credentials; boto3 only needs some.
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def moto_endpoint() -> Iterator[str]:
    """Start moto's S3 server on a free port; yields its endpoint URL (use as a generator fixture body)."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def client(endpoint: str) -> Any:
    """An independent boto3 client, to look at the bucket without the server's code."""
    return boto3.client("s3", endpoint_url=endpoint, **CREDENTIALS)


def new_bucket(endpoint: str) -> S3Settings:
    name = f"test-{uuid.uuid4().hex[:12]}"
    client(endpoint).create_bucket(Bucket=name)
    return S3Settings(bucket=name, endpoint_url=endpoint, region="us-east-1",
                      access_key_id="testing", secret_access_key="testing")
