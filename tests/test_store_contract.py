"""One set of store tests, run against every back-end: LocalStore and S3Store (against moto's S3 server)."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
from botocore.exceptions import ClientError

from storage.local import LocalStore
from storage.s3 import S3Settings, S3Store
from storage.store import InvalidKeyError, StorageError, StorageFullError, Store
from storage.tiered import TieredStore
from tests.s3_server import client, moto_endpoint, new_bucket


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    yield from moto_endpoint()


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        return LocalStore(tmp_path / "data")
    return S3Store(new_bucket(request.getfixturevalue("endpoint")))


def test_write_read_and_overwrite(store: Store) -> None:
    store.write("media/s/b/720p/seg-1.m4s", b"x" * 10)
    assert store.read("media/s/b/720p/seg-1.m4s") == b"x" * 10
    store.write("media/s/b/720p/seg-1.m4s", b"y" * 3)  # an overwrite replaces the whole file
    assert store.read("media/s/b/720p/seg-1.m4s") == b"yyy"
    store.write("empty", b"")
    assert store.read("empty") == b""


def test_a_missing_key_reads_as_file_not_found(store: Store) -> None:
    with pytest.raises(FileNotFoundError):
        store.read("media/none/master.m3u8")
    assert not store.exists("media/none/master.m3u8")
    store.write("media/s/b/master.m3u8", b"#EXTM3U\n")
    assert store.exists("media/s/b/master.m3u8") and not store.exists("media/s/b")  # a folder is no file


@pytest.mark.parametrize("bad", ["", "/etc/passwd", "a/../b", "../x", "a//b", "a/./b", "a\\b", "a\x00b", "a/"])
def test_keys_that_could_escape_are_refused(store: Store, bad: str) -> None:
    with pytest.raises(InvalidKeyError):
        store.write(bad, b"x")
    with pytest.raises(InvalidKeyError):
        store.read(bad)
    with pytest.raises(InvalidKeyError):
        store.delete(bad)
    with pytest.raises(InvalidKeyError):
        store.delete_prefix(bad)
    with pytest.raises(InvalidKeyError):
        store.local_path(bad)


def test_list_is_sorted_and_a_folder_is_not_a_name_prefix(store: Store) -> None:
    for key in ("media/a/2.m4s", "media/a/1.m4s", "media/a/sub/3.m4s", "media/ab/4.m4s", "top.json"):
        store.write(key, b"1")
    assert store.list("media/a") == ["media/a/1.m4s", "media/a/2.m4s", "media/a/sub/3.m4s"]
    assert store.list("media/ab") == ["media/ab/4.m4s"]
    assert store.list("media/none") == []
    assert store.list("") == ["media/a/1.m4s", "media/a/2.m4s", "media/a/sub/3.m4s", "media/ab/4.m4s", "top.json"]


def test_delete_is_idempotent(store: Store) -> None:
    store.write("clips/s/c.json", b"{}")
    store.delete("clips/s/c.json")
    store.delete("clips/s/c.json")
    assert store.list("clips") == []
    with pytest.raises(FileNotFoundError):
        store.read("clips/s/c.json")


def test_delete_prefix_keeps_what_it_is_told_and_counts_bytes(store: Store) -> None:
    store.write("media/s/b/720p/seg-1.m4s", b"x" * 10)
    store.write("media/s/b/master.m3u8", b"y" * 5)
    store.write("media/s/b/recording.mp4", b"z" * 7)
    store.write("media/s2/b/seg-1.m4s", b"w" * 4)  # a sibling whose name starts the same
    assert store.usage("media/s") == 22 and store.usage("media/none") == 0 and store.usage("media/s2") == 4
    assert store.delete_prefix("media/s/b", keep=("media/s/b/recording.mp4",)) == 15
    assert store.list("media/s") == ["media/s/b/recording.mp4"]
    assert store.read("media/s/b/recording.mp4") == b"z" * 7
    assert store.delete_prefix("media/s") == 7
    assert store.list("media/s") == [] and store.usage("media/s") == 0
    assert store.delete_prefix("media/missing") == 0
    assert store.list("media/s2") == ["media/s2/b/seg-1.m4s"]


def test_many_files_list_and_delete_past_one_page(store: Store) -> None:
    # S3 lists and deletes 1000 keys per call: 1001 files need the second page and a second batch.
    from concurrent.futures import ThreadPoolExecutor

    keys = [f"media/p/b/180p/seg-{i}.m4s" for i in range(1001)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: store.write(key, b"ab"), keys))
    assert store.list("media/p") == sorted(keys)
    assert store.usage("media/p") == 2002
    assert store.delete_prefix("media/p") == 2002
    assert store.list("media/p") == []


def test_a_reader_never_sees_half_a_write(store: Store) -> None:
    size = 1 << 20
    versions = (b"a" * size, b"b" * size)
    store.write("media/s/b/seg-9.m4s", versions[0])
    seen: list[bytes] = []
    done = threading.Event()

    def writer() -> None:
        for i in range(12):
            store.write("media/s/b/seg-9.m4s", versions[i % 2])
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    while not done.is_set():
        seen.append(store.read("media/s/b/seg-9.m4s"))
    thread.join()
    assert seen and all(data in versions for data in seen), {len(d) for d in seen if d not in versions}


def test_a_write_that_cannot_happen_raises_storage_error_naming_the_key(store: Store, tmp_path: Path) -> None:
    if isinstance(store, S3Store):
        client(store.settings.endpoint_url).delete_bucket(Bucket=store.bucket)  # the bucket is gone
    else:
        store.write("media/blocker", b"a file where a folder must go")
    with pytest.raises(StorageError, match="media/blocker/seg-1.m4s"):
        store.write("media/blocker/seg-1.m4s", b"x")


def test_local_path_is_a_file_for_local_and_none_for_s3(store: Store) -> None:
    store.write("media/s/b/poster.jpg", b"jpg")
    path = store.local_path("media/s/b/poster.jpg")
    if isinstance(store, S3Store):
        assert path is None
    else:
        assert path is not None and path.read_bytes() == b"jpg"


# -- S3 specifics ------------------------------------------------------------------------------------------
def test_s3_keys_live_under_the_prefix_with_their_content_type(endpoint: str) -> None:
    settings = new_bucket(endpoint)
    store = S3Store(S3Settings(**{**settings.__dict__, "prefix": "church-a/"}))
    store.write("media/s/b/master.m3u8", b"#EXTM3U\n")
    s3 = client(endpoint)
    names = [o["Key"] for o in s3.list_objects_v2(Bucket=settings.bucket)["Contents"]]
    assert names == ["church-a/media/s/b/master.m3u8"]
    head = s3.head_object(Bucket=settings.bucket, Key="church-a/media/s/b/master.m3u8")
    assert head["ContentType"] == "application/vnd.apple.mpegurl"
    assert store.list("") == ["media/s/b/master.m3u8"]


def test_s3_presigned_url_fetches_the_object(endpoint: str) -> None:
    import urllib.request

    store = S3Store(new_bucket(endpoint))
    store.write("media/s/b/recording.mp4", b"\x00\x00\x00\x18ftypmp42")
    url = store.presigned_url("media/s/b/recording.mp4", 60, download_name="s-b.mp4")
    assert "X-Amz-Signature" in url
    with urllib.request.urlopen(url) as answer:
        assert answer.read() == b"\x00\x00\x00\x18ftypmp42"
        assert answer.headers["Content-Type"] == "video/mp4"
    # moto ignores response-content-disposition (AWS and MinIO honour it): only its presence is checked.
    assert "response-content-disposition=attachment" in url


def test_s3_start_up_check_names_the_problem(endpoint: str) -> None:
    settings = new_bucket(endpoint)
    S3Store(settings).check()
    with pytest.raises(StorageError, match="'no-such-bucket' not found"):
        S3Store(S3Settings(**{**settings.__dict__, "bucket": "no-such-bucket"})).check()
    with pytest.raises(StorageError, match="cannot reach the S3 store at http://127.0.0.1:9"):
        S3Store(S3Settings(**{**settings.__dict__, "endpoint_url": "http://127.0.0.1:9"})).check()


@pytest.mark.parametrize("code,kind", [("QuotaExceeded", StorageFullError), ("XMinioStorageFull", StorageFullError),
                                       ("AccessDenied", StorageError), ("InternalError", StorageError)])
def test_s3_errors_map_to_storage_errors_with_the_key(endpoint: str, code: str, kind: type[Exception]) -> None:
    # No local S3 server can be made to run out of quota: the mapping of the answer is checked as a function.
    store = S3Store(new_bucket(endpoint))
    exc = ClientError({"Error": {"Code": code, "Message": "no"}}, "PutObject")
    mapped: Any = store._error(exc, "writing", "media/s/b/seg-1.m4s")
    assert type(mapped) is kind and "media/s/b/seg-1.m4s" in str(mapped)


def test_tiered_offload_moves_a_folder_and_reads_fall_through(endpoint: str, tmp_path: Path) -> None:
    settings = new_bucket(endpoint)
    store = TieredStore(tmp_path / "data", S3Store(settings))
    store.write("media/s/b/180p/seg-1.m4s", b"s" * 100)
    store.write("media/s/b/master.m3u8", b"#EXTM3U\n")
    report = store.offload("media/s/b")
    assert (report.files, report.bytes, report.local_removed) == (2, 108, True)
    assert not (tmp_path / "data/media/s/b").exists()
    listed = client(endpoint).list_objects_v2(Bucket=settings.bucket)["Contents"]
    assert sorted((o["Key"], o["Size"]) for o in listed) == [("media/s/b/180p/seg-1.m4s", 100),
                                                            ("media/s/b/master.m3u8", 8)]
    assert store.read("media/s/b/master.m3u8") == b"#EXTM3U\n"
    assert store.usage("media/s") == 108
    assert store.delete_prefix("media/s") == 108
    assert client(endpoint).list_objects_v2(Bucket=settings.bucket).get("KeyCount") == 0
