"""Tests for selfcorrect.storage against local paths, a GCS emulator and an S3 server.

The GCS emulator (gcp-storage-emulator) and the S3 server (moto's, over HTTP on loopback)
run in this process: the `gcs`/`gs_prefix` and `s3`/`s3_prefix` fixtures in conftest.py.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from selfcorrect import storage


def _gcs_names(prefix: str) -> list[str]:
    from conftest import gcs_client

    bucket, name = storage.split_gcs(prefix)
    return sorted(b.name for b in gcs_client().list_blobs(bucket, prefix=name + "/"))


# --- local ------------------------------------------------------------------


def test_local_round_trip(tmp_path):
    p = storage.join(str(tmp_path), "sub", "dir", "a.txt")
    storage.write_text(p, "héllo\nwörld\n")
    assert storage.read_text(p) == "héllo\nwörld\n"
    b = storage.join(str(tmp_path), "b.bin")
    storage.write_bytes(b, bytes(range(256)))
    assert storage.read_bytes(b) == bytes(range(256))
    # Overwrite replaces the content.
    storage.write_text(p, "new")
    assert storage.read_text(p) == "new"
    # No temp files remain next to the targets.
    assert sorted(os.listdir(tmp_path)) == ["b.bin", "sub"]
    assert os.listdir(tmp_path / "sub" / "dir") == ["a.txt"]


def test_local_exists(tmp_path):
    p = tmp_path / "x.txt"
    assert not storage.exists(str(p))
    storage.write_text(str(p), "x")
    assert storage.exists(str(p))
    assert storage.exists(p)  # Path objects are accepted too


def test_local_missing_raises_file_not_found(tmp_path):
    p = str(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        storage.read_bytes(p)
    with pytest.raises(FileNotFoundError) as ei:
        storage.read_text(p)
    assert p in str(ei.value)


def test_local_non_utf8_names_uri_and_line(tmp_path):
    p = str(tmp_path / "bad.txt")
    storage.write_bytes(p, b"ok line\nsecond\nthird \xff\xfe here\n")
    with pytest.raises(storage.StorageError) as ei:
        storage.read_text(p)
    msg = str(ei.value)
    assert p in msg
    assert "line 3" in msg


# --- gs:// ------------------------------------------------------------------


def test_gcs_exists(gs_prefix):
    uri = storage.join(gs_prefix, "e.txt")
    assert storage.exists(uri) is False
    storage.write_text(uri, "e")
    assert storage.exists(uri) is True


def test_gcs_missing_raises_file_not_found(gs_prefix):
    uri = storage.join(gs_prefix, "missing.txt")
    with pytest.raises(FileNotFoundError) as ei:
        storage.read_bytes(uri)
    assert uri in str(ei.value)
    with pytest.raises(FileNotFoundError) as ei:
        storage.read_text(uri)
    assert uri in str(ei.value)
    # A bucket that does not exist is reported the same way.
    nob = "gs://no-such-bucket-xyz/a.txt"
    with pytest.raises(FileNotFoundError) as ei:
        storage.read_bytes(nob)
    assert nob in str(ei.value)


def test_gcs_non_utf8_names_uri_and_line(gs_prefix):
    uri = storage.join(gs_prefix, "bad.txt")
    storage.write_bytes(uri, b"line one\n\xc3\x28 broken\n")
    with pytest.raises(storage.StorageError) as ei:
        storage.read_text(uri)
    msg = str(ei.value)
    assert uri in msg
    assert "line 2" in msg
    assert isinstance(ei.value, OSError)


def test_split_gcs_needs_bucket():
    assert storage.split_gcs("gs://b/x/y.txt") == ("b", "x/y.txt")
    with pytest.raises(storage.StorageError, match="gs:///x"):
        storage.split_gcs("gs:///x")


# --- upload_tree ------------------------------------------------------------


def _make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def test_upload_tree_to_gcs(tmp_path, gs_prefix):
    files = {"a.txt": b"A", "sub/b.json": b'{"b": 1}', "sub/deep/c.bin": b"\x00\x01"}
    src = _make_tree(tmp_path / "src", files)
    out = storage.upload_tree(str(src), gs_prefix + "/")  # trailing slash tolerated
    expected = [storage.join(gs_prefix, rel) for rel in sorted(files)]
    assert out == expected
    name_prefix = storage.split_gcs(gs_prefix)[1]
    assert _gcs_names(gs_prefix) == [f"{name_prefix}/{rel}" for rel in sorted(files)]
    for rel, data in files.items():
        assert storage.read_bytes(storage.join(gs_prefix, rel)) == data


def test_upload_tree_local_new_destination(tmp_path):
    src = _make_tree(tmp_path / "src", {"a.txt": b"A", "x/y.txt": b"Y"})
    dest = tmp_path / "out" / "tree"
    out = storage.upload_tree(str(src), str(dest))
    assert out == [str(dest / "a.txt"), str(dest / "x" / "y.txt")]
    assert (dest / "a.txt").read_bytes() == b"A"
    assert (dest / "x" / "y.txt").read_bytes() == b"Y"
    assert os.listdir(tmp_path / "out") == ["tree"]  # no temp folder left


def test_upload_tree_local_replaces_existing_tree_whole(tmp_path):
    dest = _make_tree(tmp_path / "dest", {"old.txt": b"old", "keep/same.txt": b"v1",
                                           "gone/deep.txt": b"gone"})
    src = _make_tree(tmp_path / "src", {"new.txt": b"new", "keep/same.txt": b"v2"})
    out = storage.upload_tree(str(src), str(dest))
    assert out == [str(dest / "keep" / "same.txt"), str(dest / "new.txt")]
    got = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert got == ["keep/same.txt", "new.txt"]
    assert (dest / "keep" / "same.txt").read_bytes() == b"v2"
    # Only src and dest remain: no temp or .old folder left behind.
    assert sorted(os.listdir(tmp_path)) == ["dest", "src"]
    # Source untouched.
    assert (src / "new.txt").read_bytes() == b"new"


def test_upload_tree_local_failure_keeps_old_tree(tmp_path, monkeypatch):
    dest = _make_tree(tmp_path / "dest", {"old.txt": b"old"})
    src = _make_tree(tmp_path / "src", {"new.txt": b"new"})

    def boom(*a, **k):
        raise OSError("simulated copy failure")

    monkeypatch.setattr(storage.shutil, "copytree", boom)
    with pytest.raises(OSError, match="simulated"):
        storage.upload_tree(str(src), str(dest))
    assert (dest / "old.txt").read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["dest", "src"]


def test_upload_tree_local_failed_swap_restores_old_tree(tmp_path, monkeypatch):
    """If the new tree cannot be renamed into place, the old tree is put back."""
    dest = _make_tree(tmp_path / "dest", {"old.txt": b"old"})
    src = _make_tree(tmp_path / "src", {"new.txt": b"new"})
    real_replace = os.replace

    def replace(a, b):
        if Path(a).name.startswith(".dest.") and not Path(a).name.endswith(".old") \
                and Path(b) == dest:
            raise OSError("simulated failure renaming the new tree into place")
        return real_replace(a, b)

    monkeypatch.setattr(storage.os, "replace", replace)
    with pytest.raises(OSError, match="simulated"):
        storage.upload_tree(str(src), str(dest))
    monkeypatch.undo()
    assert (dest / "old.txt").read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["dest", "src"]


def test_upload_tree_missing_source_raises(tmp_path, gs_prefix):
    missing = str(tmp_path / "no-such-dir")
    with pytest.raises(FileNotFoundError) as ei:
        storage.upload_tree(missing, str(tmp_path / "dest"))
    assert missing in str(ei.value)
    with pytest.raises(FileNotFoundError) as ei:
        storage.upload_tree(missing, gs_prefix)
    assert missing in str(ei.value)
    assert _gcs_names(gs_prefix) == []


# --- atomic local writes ----------------------------------------------------


def test_atomic_write_crash_in_replace_keeps_old_file(tmp_path, monkeypatch):
    p = tmp_path / "f.txt"
    storage.write_text(str(p), "original")

    def boom(*a, **k):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(storage.os, "replace", boom)
    with pytest.raises(OSError, match="simulated crash"):
        storage.write_text(str(p), "replacement that never lands")
    monkeypatch.undo()
    assert p.read_text() == "original"
    assert os.listdir(tmp_path) == ["f.txt"]  # temp file cleaned up


def test_atomic_write_crash_mid_write_keeps_old_file(tmp_path, monkeypatch):
    p = tmp_path / "f.bin"
    storage.write_bytes(str(p), b"original")

    def fsync_boom(fd):
        raise KeyboardInterrupt("simulated crash during fsync")

    # Crash during fsync, after the bytes have been written to the temp file.
    monkeypatch.setattr(storage.os, "fsync", fsync_boom)
    with pytest.raises(KeyboardInterrupt):
        storage.write_bytes(str(p), b"partial" * 1000)
    monkeypatch.undo()
    assert p.read_bytes() == b"original"
    assert os.listdir(tmp_path) == ["f.bin"]

    # Data that is not bytes at all fails inside f.write.
    with pytest.raises(TypeError):
        storage.write_bytes(str(p), "not bytes")  # type: ignore[arg-type]
    assert p.read_bytes() == b"original"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_atomic_write_crash_half_written_keeps_old_file(tmp_path, monkeypatch):
    """The temp file gets half the data, then the write dies: target is untouched."""
    p = tmp_path / "f.txt"
    storage.write_text(str(p), "original")
    real_fdopen = os.fdopen
    seen = {}

    class HalfWriter:
        def __init__(self, f):
            self._f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()
            return False

        def write(self, data):
            self._f.write(data[: len(data) // 2])
            self._f.flush()
            seen["tmp"] = os.readlink(f"/proc/self/fd/{self._f.fileno()}") \
                if os.path.exists("/proc/self/fd") else None
            raise OSError("simulated crash mid-write (disk full)")

        def __getattr__(self, name):
            return getattr(self._f, name)

    monkeypatch.setattr(storage.os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    with pytest.raises(OSError, match="mid-write"):
        storage.write_text(str(p), "a much longer replacement " * 50)
    monkeypatch.undo()
    assert p.read_text() == "original"
    assert os.listdir(tmp_path) == ["f.txt"]
    if seen.get("tmp"):  # the half-written temp file lived next to the target
        assert Path(seen["tmp"]).parent == tmp_path.resolve()
        assert not Path(seen["tmp"]).exists()


def _umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


def test_atomic_write_file_mode_like_a_plain_write(tmp_path):
    """A temp-file-and-rename write must not leave the file 0600 (mkstemp's mode)."""
    p = tmp_path / "new.txt"
    storage.write_text(str(p), "x")
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~_umask()
    # Overwriting an existing file keeps that file's mode.
    q = tmp_path / "existing.txt"
    q.write_text("old")
    os.chmod(q, 0o640)
    storage.write_text(str(q), "new")
    assert q.read_text() == "new"
    assert stat.S_IMODE(q.stat().st_mode) == 0o640


def test_atomic_write_into_new_folder(tmp_path):
    p = tmp_path / "a" / "b" / "c.txt"
    storage.write_text(str(p), "deep")
    assert p.read_text() == "deep"


# --- join -------------------------------------------------------------------


def test_join_local(tmp_path):
    assert storage.join(str(tmp_path), "a", "b.txt") == str(tmp_path / "a" / "b.txt")
    assert storage.join(tmp_path, "x") == str(tmp_path / "x")
    assert storage.join("rel", "a/b", "c") == str(Path("rel", "a", "b", "c"))


def test_join_gcs():
    assert storage.join("gs://b", "a", "c.txt") == "gs://b/a/c.txt"
    assert storage.join("gs://b/", "a/", "/c.txt") == "gs://b/a/c.txt"
    assert storage.join("gs://b/pre//", "x") == "gs://b/pre/x"
    assert storage.join("gs://b/pre") == "gs://b/pre"
    assert storage.is_gcs(storage.join("gs://b", "x"))


def test_records_read_and_write_gcs_through_the_same_code(gs_prefix):
    from selfcorrect.records import Problem, RecordError, read, write_jsonl

    rows = [Problem("p1", "math", "What is 1 + 1?", "2"), Problem("p2", "math", "2 * 3?", "6")]
    uri = f"{gs_prefix}/problems.jsonl"
    assert write_jsonl(uri, rows) == 2
    assert read(uri, Problem) == rows
    storage.write_text(f"{gs_prefix}/bad.jsonl", '{"id": "p1", "task": "math"}\n')
    with pytest.raises(RecordError, match=r"gs://.*/bad.jsonl: row 1: field 'prompt': missing"):
        read(f"{gs_prefix}/bad.jsonl", Problem)


def test_text_that_is_not_unicode_is_refused_and_nothing_is_written(tmp_path):
    target = tmp_path / "report.md"
    target.write_text("before")
    with pytest.raises(storage.StorageError, match="report.md: cannot write text that is not valid Unicode"):
        storage.write_text(str(target), "ok \ud800 not")
    assert target.read_text() == "before" and [p.name for p in tmp_path.iterdir()] == ["report.md"]


# --- s3:// (and MinIO: the same protocol) ---------------------------------------------------


def _s3_names(prefix: str) -> list[str]:
    """The keys under prefix, listed by boto3 itself (not through selfcorrect.storage)."""
    import boto3

    bucket, _, key = prefix[len("s3://"):].partition("/")
    listing = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=key + "/")
    return sorted(o["Key"] for o in listing.get("Contents", []))


@pytest.mark.parametrize("store", ["gs_prefix", "s3_prefix"])
def test_round_trip_text_and_bytes(store, request):
    """Written, read back and overwritten under gs:// and s3://; listed by each store's own client."""
    prefix = request.getfixturevalue(store)
    t = storage.join(prefix, "dir", "a.txt")
    storage.write_text(t, "héllo\nwörld\n")
    assert storage.read_text(t) == "héllo\nwörld\n"
    b = storage.join(prefix, "b.bin")
    payload = bytes(range(256)) * 4
    storage.write_bytes(b, payload)
    assert storage.read_bytes(b) == payload
    storage.write_text(t, "overwritten")
    assert storage.read_text(t) == "overwritten"
    key = prefix.split("/", 3)[3]                    # the prefix inside the bucket
    names = _gcs_names(prefix) if prefix.startswith("gs://") else _s3_names(prefix)
    assert names == [f"{key}/b.bin", f"{key}/dir/a.txt"]


def test_s3_sees_objects_written_by_another_client(s3_prefix):
    """No stale listing: an object another client writes or deletes is seen at once."""
    import boto3

    uri = storage.join(s3_prefix, "current.json")
    assert not storage.exists(uri)
    client = boto3.client("s3")
    client.put_object(Bucket="selfcorrect-test", Key=uri[len("s3://selfcorrect-test/"):], Body=b"v1")
    assert storage.exists(uri) and storage.read_bytes(uri) == b"v1"
    client.put_object(Bucket="selfcorrect-test", Key=uri[len("s3://selfcorrect-test/"):], Body=b"v2")
    assert storage.read_bytes(uri) == b"v2"
    client.delete_object(Bucket="selfcorrect-test", Key=uri[len("s3://selfcorrect-test/"):])
    assert not storage.exists(uri)


def test_s3_missing_object_and_bucket(s3_prefix):
    uri = storage.join(s3_prefix, "missing.txt")
    for read in (storage.read_bytes, storage.read_text):
        with pytest.raises(FileNotFoundError) as ei:
            read(uri)
        assert str(ei.value) == f"{uri}: no such object"
    nob = "s3://no-such-bucket-xyz/a.txt"
    with pytest.raises(FileNotFoundError, match="no-such-bucket-xyz/a.txt: no such object"):
        storage.read_bytes(nob)
    with pytest.raises(storage.StorageError, match="no-such-bucket-xyz/a.txt: cannot write: no such bucket"):
        storage.write_text(nob, "x")
    assert storage.exists(nob) is False


def test_s3_folder_or_bucket_is_no_object(s3_prefix):
    storage.write_text(storage.join(s3_prefix, "d", "x.txt"), "x")
    for uri in (storage.join(s3_prefix, "d") + "/", "s3://selfcorrect-test", "s3://selfcorrect-test/"):
        with pytest.raises(storage.StorageError, match="names no object"):
            storage.read_bytes(uri)
        with pytest.raises(storage.StorageError, match="names no object"):
            storage.write_text(uri, "x")
    # a key that is only a prefix of other keys
    with pytest.raises(FileNotFoundError, match="/d: no such object"):
        storage.read_bytes(storage.join(s3_prefix, "d"))


def test_s3_non_utf8_names_uri_and_line(s3_prefix):
    uri = storage.join(s3_prefix, "bad.txt")
    storage.write_bytes(uri, b"line one\n\xc3\x28 broken\n")
    with pytest.raises(storage.StorageError) as ei:
        storage.read_text(uri)
    assert uri in str(ei.value) and "line 2" in str(ei.value)
    with pytest.raises(TypeError, match="bad.txt: write_bytes takes bytes, not str"):
        storage.write_bytes(uri, "not bytes")  # type: ignore[arg-type]
    assert storage.read_bytes(uri) == b"line one\n\xc3\x28 broken\n"


def test_s3_without_credentials_names_uri_and_what_to_set(s3_prefix, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    storage._filesystem.cache_clear()
    try:
        uri = storage.join(s3_prefix, "a.txt")
        with pytest.raises(storage.StorageError) as ei:
            storage.read_bytes(uri)
        assert str(ei.value).startswith(f"{uri}: cannot read: Unable to locate credentials")
        assert "AWS_ACCESS_KEY_ID" in str(ei.value)
    finally:
        monkeypatch.undo()
        storage._filesystem.cache_clear()


def test_s3_server_that_is_not_there_names_uri(s3_prefix, monkeypatch):
    import socket

    with socket.socket() as sock:           # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    storage._filesystem.cache_clear()
    try:
        uri = storage.join(s3_prefix, "a.txt")
        with pytest.raises(storage.StorageError) as ei:
            storage.write_text(uri, "x")
        assert str(ei.value).startswith(f"{uri}: cannot write: ")
        assert f"127.0.0.1:{port}" in str(ei.value)
    finally:
        monkeypatch.undo()
        storage._filesystem.cache_clear()


def test_upload_and_download_tree_s3(tmp_path, s3_prefix):
    files = {"config.json": b"{}", "sub/b.bin": b"\x00\x01", "sub/deep/c.txt": b"C"}
    src = _make_tree(tmp_path / "src", files)
    out = storage.upload_tree(str(src), s3_prefix + "/model/")
    assert out == [storage.join(s3_prefix, "model", rel) for rel in sorted(files)]
    key = s3_prefix[len("s3://selfcorrect-test/"):]
    assert _s3_names(s3_prefix) == [f"{key}/model/{rel}" for rel in sorted(files)]
    got = storage.download(storage.join(s3_prefix, "model"), str(tmp_path / "dest"))
    assert got == sorted(files)
    dest = tmp_path / "dest"
    assert {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()} == files
    with pytest.raises(FileNotFoundError, match="nothing/: no objects"):
        storage.download(storage.join(s3_prefix, "nothing") + "/", str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_download_gcs(tmp_path, gs_prefix):
    files = {"a.txt": b"A", "sub/b.json": b'{"b": 1}'}
    src = _make_tree(tmp_path / "src", files)
    storage.upload_tree(str(src), storage.join(gs_prefix, "m"))
    storage.write_text(storage.join(gs_prefix, "m-other", "x.txt"), "not under m/")
    assert storage.download(storage.join(gs_prefix, "m"), str(tmp_path / "from-gs")) == sorted(files)
    assert (tmp_path / "from-gs" / "sub" / "b.json").read_bytes() == b'{"b": 1}'
    assert storage.listing(storage.join(gs_prefix, "m")) == {"a.txt": 1, "sub/b.json": 8}
    with pytest.raises(FileNotFoundError, match="no objects"):
        storage.download(storage.join(gs_prefix, "none"), str(tmp_path / "y"))
    with pytest.raises(FileNotFoundError, match="gs://no-such-bucket-xyz/m: no objects"):
        storage.download("gs://no-such-bucket-xyz/m", str(tmp_path / "y"))
    assert not (tmp_path / "y").exists()


def test_records_read_and_write_s3_jsonl_and_parquet(s3_prefix):
    from selfcorrect.records import Problem, RecordError, read, write

    rows = [Problem("p1", "math", "What is 1 + 1?", "2"), Problem("p2", "math", "2 * 3?", "6")]
    for name, fmt in (("problems.jsonl", "jsonl"), ("problems.parquet", "parquet")):
        uri = f"{s3_prefix}/{name}"
        write(uri, rows, fmt, cls=Problem)
        assert read(uri, Problem) == rows
    storage.write_text(f"{s3_prefix}/bad.jsonl", '{"id": "p1", "task": "math"}\n')
    with pytest.raises(RecordError, match=r"s3://.*/bad.jsonl: row 1: field 'prompt': missing"):
        read(f"{s3_prefix}/bad.jsonl", Problem)


@pytest.mark.slow
def test_cli_reads_and_writes_s3_in_another_process(tmp_path, s3_prefix):
    """`selfcorrect prepare` and `validate` in a fresh process reach the server through
    fsspec's own setting, FSSPEC_S3_ENDPOINT_URL (AWS_ENDPOINT_URL removed)."""
    import json
    import subprocess
    import sys

    from conftest import S3_ENV

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    env = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"}
    env.update(S3_ENV, FSSPEC_S3_ENDPOINT_URL=endpoint)
    src = tmp_path / "gsm8k.jsonl"
    src.write_text(json.dumps({"question": "What is 2 + 2?", "answer": "2+2=4\n#### 4"}) + "\n")
    uri = f"{s3_prefix}/problems.parquet"
    cli = [sys.executable, "-m", "selfcorrect.cli"]
    done = subprocess.run([*cli, "prepare", "--source", "gsm8k", "--path", str(src), "--output", uri],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    key = s3_prefix[len("s3://selfcorrect-test/"):]
    assert _s3_names(s3_prefix) == [f"{key}/problems.parquet"]
    done = subprocess.run([*cli, "validate", "--kind", "problems", uri, "--report", f"{s3_prefix}/gate.md"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"`{uri}`: 1 rows; 0 of" in done.stdout
    assert storage.read_text(f"{s3_prefix}/gate.md") == done.stdout


# --- which locations are accepted ---------------------------------------------------------


@pytest.mark.parametrize("uri, message", [
    ("xyz://b/x.jsonl", "xyz://b/x.jsonl: unsupported location 'xyz:' (a local path, gs://"),
    ("S3://b/x.jsonl", "did you mean s3://...?"),
    ("s3:/b/x.jsonl", "did you mean s3://...?"),
    ("GS://b/x.jsonl", "did you mean gs://...?"),
    ("gcs://b/x.jsonl", "did you mean gs://...?"),
    ("s3:///x.jsonl", "s3:///x.jsonl: a s3:// URI needs a bucket (or host) name"),
    ("s3://", "a s3:// URI needs a bucket"),
    ("file:///tmp/x.jsonl", "give a local file as a plain path, without file://"),
    ("abfs://c/x.jsonl", "abfs://c/x.jsonl: abfs:// needs a package that is not installed: "),
])
def test_locations_refused_name_uri_and_fix(uri, message):
    for call in (storage.read_bytes, lambda u: storage.write_text(u, "x"), storage.exists):
        with pytest.raises(storage.StorageError) as ei:
            call(uri)
        assert message in str(ei.value)


def test_scheme_join_and_same_location_for_s3():
    assert storage.scheme("s3://b/k") == "s3" and storage.scheme("/tmp/x") is None
    assert storage.is_remote("s3://b/k") and storage.is_remote("gs://b/k")
    assert not storage.is_remote("runs/x") and not storage.is_gcs("s3://b/k")
    assert storage.join("s3://b/", "a/", "/c.txt") == "s3://b/a/c.txt"
    assert storage.same_location("s3://b/a.txt", "s3://b/a.txt")
    assert not storage.same_location("s3://b/a.txt", "gs://b/a.txt")
    assert storage.check_uri("s3://bucket/key.jsonl") == "s3://bucket/key.jsonl"


def test_upload_tree_into_a_missing_s3_bucket_names_the_object(tmp_path, s3):
    src = _make_tree(tmp_path / "src", {"a.txt": b"A"})
    with pytest.raises(storage.StorageError, match=r"s3://no-such-bucket-xyz/m/a.txt: cannot write: no such bucket"):
        storage.upload_tree(str(src), "s3://no-such-bucket-xyz/m")
    with pytest.raises(FileNotFoundError, match="no-such-bucket-xyz/m: no objects"):
        storage.download("s3://no-such-bucket-xyz/m", str(tmp_path / "d"))
