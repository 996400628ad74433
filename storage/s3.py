"""S3-compatible store (AWS S3, MinIO, Ceph RGW, Backblaze B2, moto): the Store interface over boto3.

A PUT is atomic on S3 (an object appears whole or not at all), so no temporary name is needed. Blocking:
call every method off the event loop.
"""
from __future__ import annotations

import errno
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from storage.local import check_key
from storage.store import StorageError, StorageFullError

# Error codes S3-compatible stores answer when a quota or the bucket's space is exhausted.
QUOTA_CODES = {"QuotaExceeded", "XMinioStorageFull", "XMinioAdminBucketQuotaExceeded", "StorageFull",
               "InsufficientStorage", "EntityTooLarge"}
DENIED_CODES = {"AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                "AccountProblem", "ExpiredToken"}
MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
# Types S3 hands back on a GET (the origin redirects players there, so they must be right).
CONTENT_TYPES = {".m3u8": "application/vnd.apple.mpegurl", ".m4s": "video/iso.segment", ".mp4": "video/mp4",
                 ".m4a": "audio/mp4", ".jpg": "image/jpeg", ".vtt": "text/vtt", ".json": "application/json"}
DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys


def content_type(key: str) -> str:
    suffix = Path(key).suffix.lower()
    return CONTENT_TYPES.get(suffix) or mimetypes.guess_type(key)[0] or "application/octet-stream"


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    endpoint_url: str = ""      # empty: AWS; else e.g. http://minio:9000
    region: str = ""
    prefix: str = ""            # every key is stored under this folder of the bucket
    access_key_id: str = ""     # empty: boto3's own chain (AWS_ACCESS_KEY_ID/..., ~/.aws, instance role)
    secret_access_key: str = ""


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Store:
    """Objects in one bucket under an optional prefix; keys as in LocalStore (checked the same way)."""

    def __init__(self, settings: S3Settings, client: Any = None) -> None:
        if not settings.bucket:
            raise ValueError("an S3 store needs a bucket")
        self.settings = settings
        self.bucket = settings.bucket
        self.prefix = settings.prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self.client = client or self._client(settings)

    @staticmethod
    def _client(settings: S3Settings) -> Any:
        kwargs: dict[str, Any] = {}
        if settings.endpoint_url:
            kwargs["endpoint_url"] = settings.endpoint_url
        if settings.region:
            kwargs["region_name"] = settings.region
        if settings.access_key_id:
            kwargs["aws_access_key_id"] = settings.access_key_id
            kwargs["aws_secret_access_key"] = settings.secret_access_key
        # Path-style addressing for custom endpoints: MinIO and most self-hosted stores have no per-bucket DNS.
        style = "path" if settings.endpoint_url else "auto"
        config = BotoConfig(s3={"addressing_style": style}, signature_version="s3v4",
                            retries={"max_attempts": 3, "mode": "standard"})
        return boto3.client("s3", config=config, **kwargs)

    # -- keys ---------------------------------------------------------------------------------
    def object_name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _folder(self, prefix: str) -> str:
        """The object-name prefix of a folder key ('' = everything): 'a/b' must not match 'a/bc'."""
        if not prefix:
            return f"{self.prefix}/" if self.prefix else ""
        return self.object_name(prefix) + "/"

    def _key_of(self, name: str) -> str:
        return name[len(self.prefix) + 1:] if self.prefix else name

    def _error(self, exc: Exception, doing: str, key: str) -> StorageError:
        if isinstance(exc, ClientError):
            code = _code(exc)
            if code in QUOTA_CODES:
                return StorageFullError(errno.ENOSPC, f"storage full {doing} {key} (S3 {code})")
            if code in DENIED_CODES:
                return StorageError(errno.EACCES, f"permission denied {doing} {key} (S3 {code})")
            if code == "NoSuchBucket":
                return StorageError(errno.ENOENT, f"bucket {self.bucket} does not exist ({doing} {key})")
            return StorageError(errno.EIO, f"cannot {doing.split()[0]} {key}: S3 {code}")
        return StorageError(errno.EIO, f"cannot reach S3 {doing} {key}: {exc}")

    # -- the Store interface ------------------------------------------------------------------
    def write(self, key: str, data: bytes, *, use_reserve: bool = False) -> None:
        """use_reserve has no meaning here (no local disk to keep space on)."""
        name = self.object_name(key)
        try:
            self.client.put_object(Bucket=self.bucket, Key=name, Body=data, ContentType=content_type(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "writing", key) from exc

    def upload_file(self, key: str, path: Path) -> None:
        """A local file to key (multipart for big MP4s, so memory stays flat)."""
        name = self.object_name(key)
        try:
            self.client.upload_file(str(path), self.bucket, name, ExtraArgs={"ContentType": content_type(key)})
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "uploading", key) from exc
        except Exception as exc:  # boto3's transfer manager wraps ClientError in S3UploadFailedError
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, (ClientError, BotoCoreError)):
                raise self._error(cause, "uploading", key) from exc
            raise StorageError(errno.EIO, f"cannot upload {key}: {exc}") from exc

    def read(self, key: str) -> bytes:
        name = self.object_name(key)
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=name)["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()
        except ClientError as exc:
            if _code(exc) in MISSING_CODES:
                raise FileNotFoundError(errno.ENOENT, f"no such object {key}") from exc
            raise self._error(exc, "reading", key) from exc
        except BotoCoreError as exc:
            raise self._error(exc, "reading", key) from exc

    def size(self, key: str) -> int | None:
        """The object's size in bytes, or None when there is none."""
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self.object_name(key))["ContentLength"])
        except ClientError as exc:
            if _code(exc) in MISSING_CODES:
                return None
            raise self._error(exc, "checking", key) from exc
        except BotoCoreError as exc:
            raise self._error(exc, "checking", key) from exc

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.object_name(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "deleting", key) from exc

    def objects(self, prefix: str) -> Iterator[tuple[str, int, str]]:
        """(key, size, ETag) of every object under a folder key, through every page of the listing."""
        folder = self._folder(prefix)
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=folder)
            for page in pages:
                for item in page.get("Contents", []):
                    yield self._key_of(item["Key"]), int(item["Size"]), str(item.get("ETag", "")).strip('"')
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "listing", prefix or "/") from exc

    def list(self, prefix: str) -> list[str]:
        # Names starting with '.' are hidden, as LocalStore hides its temporary files.
        return sorted(key for key, _size, _etag in self.objects(prefix)
                      if not key.rsplit("/", 1)[-1].startswith("."))

    def delete_prefix(self, prefix: str, *, keep: tuple[str, ...] = ()) -> int:
        """Delete every object under a folder key except the keys in keep (batched); the bytes freed."""
        check_key(prefix)
        kept = {self.object_name(key) for key in keep}
        doomed = [(self.object_name(key), size) for key, size, _etag in self.objects(prefix)]
        doomed = [(name, size) for name, size in doomed if name not in kept]
        freed = 0
        for start in range(0, len(doomed), DELETE_BATCH):
            batch = doomed[start:start + DELETE_BATCH]
            try:
                answer = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": name} for name, _ in batch], "Quiet": True})
            except (ClientError, BotoCoreError) as exc:
                raise self._error(exc, "deleting under", prefix) from exc
            failed = {error["Key"] for error in answer.get("Errors", [])}
            freed += sum(size for name, size in batch if name not in failed)
            if failed:
                raise StorageError(errno.EIO, f"cannot delete {len(failed)} objects under {prefix}, "
                                              f"e.g. {sorted(failed)[0]}")
        return freed

    def usage(self, prefix: str) -> int:
        return sum(size for _key, size, _etag in self.objects(prefix))

    def local_path(self, key: str) -> Path | None:
        check_key(key)
        return None

    # -- serving and start-up -----------------------------------------------------------------
    def presigned_url(self, key: str, expires: int, *, download_name: str | None = None) -> str:
        """A GET URL valid for `expires` seconds; no S3 call is made (signing is local)."""
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self.object_name(key)}
        if download_name:
            params["ResponseContentDisposition"] = f'attachment; filename="{download_name}"'
        return str(self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires))

    def check(self) -> None:
        """Raise StorageError saying what is wrong unless the bucket answers (server start-up)."""
        where = self.settings.endpoint_url or "AWS"
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = _code(exc)
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise StorageError(errno.ENOENT, f"S3 bucket {self.bucket!r} not found at {where}") from exc
            if code in ("403", *DENIED_CODES):
                raise StorageError(errno.EACCES, f"S3 bucket {self.bucket!r} at {where}: access denied "
                                                 "(check the credentials)") from exc
            raise StorageError(errno.EIO, f"S3 bucket {self.bucket!r} at {where}: {code}") from exc
        except BotoCoreError as exc:
            raise StorageError(errno.EIO, f"cannot reach the S3 store at {where} (bucket {self.bucket!r}): "
                                          f"{exc}") from exc
