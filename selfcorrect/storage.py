"""Read and write artifacts on a local path or a gs:// URI, with atomic writes.

Local writes go to a temporary file in the target folder and are renamed into
place, so a crash never leaves a half-written file. GCS uploads are atomic by
nature: an object appears only when its upload completes. The GCS client honours
STORAGE_EMULATOR_HOST, which is how the tests reach a local emulator.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path


class StorageError(OSError):
    """A read or write that failed, naming the URI."""


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):/")


def is_gcs(uri: str) -> bool:
    return str(uri).startswith("gs://")


def check_uri(uri: str) -> str:
    """uri itself when it is a local path or a gs:// URI; other schemes (s3://, GS://,
    gs:/x, file://) raise StorageError rather than becoming odd local folders."""
    uri = str(uri)
    if not uri:
        raise StorageError("an empty path names no file")
    m = _SCHEME.match(uri)
    if m and not is_gcs(uri):
        hint = "; did you mean gs://...?" if m.group(1).lower() == "gs" else ""
        raise StorageError(f"{uri}: unsupported location '{m.group(1)}:' (a local path or "
                           f"gs://BUCKET/OBJECT){hint}")
    if is_gcs(uri):
        split_gcs(uri)
    return uri


def split_gcs(uri: str) -> tuple[str, str]:
    bucket, _, blob = str(uri)[len("gs://"):].partition("/")
    if not bucket:
        raise StorageError(f"{uri}: a gs:// URI needs a bucket name")
    return bucket, blob


def _object_uri(uri: str) -> tuple[str, str]:
    """(bucket, object) of a gs:// URI that names an object, not a folder."""
    bucket, name = split_gcs(uri)
    if not name or name.endswith("/"):
        raise StorageError(f"{uri}: names no object (gs://BUCKET/OBJECT, not a folder)")
    return bucket, name


@contextmanager
def _gcs_errors(uri: str, doing: str):
    """Google API and auth failures as StorageError naming the URI (a missing object as
    FileNotFoundError)."""
    from google.api_core.exceptions import GoogleAPIError, NotFound
    from google.auth.exceptions import GoogleAuthError

    try:
        yield
    except NotFound:
        if doing == "read":
            raise FileNotFoundError(f"{uri}: no such object") from None
        raise StorageError(f"{uri}: cannot write: no such bucket") from None
    except (GoogleAPIError, GoogleAuthError) as e:
        raise StorageError(f"{uri}: cannot {doing}: {getattr(e, 'message', None) or e}") from None


@lru_cache(maxsize=1)
def _client():
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT", "local"),
                              credentials=AnonymousCredentials())
    return storage.Client()


def _blob(uri: str):
    bucket, name = split_gcs(uri)
    return _client().bucket(bucket).blob(name)


def read_bytes(uri: str) -> bytes:
    """The file's bytes. Missing: FileNotFoundError; a folder, a symlink loop, a refused
    read, a Google API failure: StorageError; both name the URI."""
    uri = check_uri(uri)
    if is_gcs(uri):
        _object_uri(uri)
        with _gcs_errors(uri, "read"):
            return _blob(uri).download_as_bytes()
    try:
        return Path(uri).read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{uri}: no such file") from None
    except IsADirectoryError:
        raise StorageError(f"{uri}: is a folder, not a file") from None
    except OSError as e:
        raise StorageError(f"{uri}: cannot read ({e.strerror or e})") from None


def read_text(uri: str) -> str:
    data = read_bytes(uri)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise StorageError(f"{uri}: line {line}: not UTF-8 (byte {e.start})") from None


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (thread-safe)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes(uri: str, data: bytes) -> None:
    """Replace the file at uri with data, all or nothing. A failure to write raises
    StorageError naming the URI (the original OSError as its cause)."""
    uri = check_uri(uri)
    if is_gcs(uri):
        _object_uri(uri)
        with _gcs_errors(uri, "write"):
            _blob(uri).upload_from_string(data)
        return
    try:
        _write_local(Path(uri), data)
    except StorageError:
        raise
    except OSError as e:
        raise StorageError(f"{uri}: cannot write: {_why(Path(uri), e)}") from e


def _why(target: Path, e: OSError) -> str:
    if target.is_dir():
        return "it is a folder"
    for parent in target.parents:
        if parent.exists() and not parent.is_dir():
            return f"{parent} is a file, not a folder"
    return f"{e.strerror}: {e.filename}" if e.strerror and e.filename else str(e)


def _write_local(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp makes the file 0600; give it the mode a plain open() would give
    # (0666 & ~umask), or keep the mode of the file being replaced.
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.chmod(f.fileno() if os.chmod in os.supports_fd else tmp, mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(uri: str, text: str) -> None:
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as e:     # a lone surrogate: nothing is written
        raise StorageError(f"{uri}: cannot write text that is not valid Unicode "
                           f"({e.reason} at character {e.start})") from None
    write_bytes(uri, data)


def exists(uri: str) -> bool:
    uri = check_uri(uri)
    if is_gcs(uri):
        with _gcs_errors(uri, "read"):
            return _blob(uri).exists()
    return Path(uri).exists()


def same_location(a: str, b: str) -> bool:
    """Whether two URIs name the same file (local paths resolved, symlinks followed)."""
    a, b = str(a), str(b)
    if is_gcs(a) or is_gcs(b):
        return a == b
    return os.path.realpath(a) == os.path.realpath(b)


def join(base: str, *parts: str) -> str:
    base = str(base)
    if is_gcs(base):
        return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])
    return str(Path(base, *parts))


def upload_tree(local_dir: str, uri: str) -> list[str]:
    """Copy every file under local_dir to uri (a folder or gs:// prefix); returns the URIs.

    A local destination is filled in a temporary sibling folder and renamed into
    place, so readers see either the old tree or the whole new one.
    """
    src = Path(local_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"{local_dir}: no such folder")
    files = sorted(p for p in src.rglob("*") if p.is_file())
    if is_gcs(uri):
        out = []
        for p in files:
            dest = join(uri, p.relative_to(src).as_posix())
            _blob(dest).upload_from_filename(str(p))
            out.append(dest)
        return out
    dest = Path(uri)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
            try:
                os.replace(tmp, dest)
            except BaseException:
                os.replace(old, dest)  # put the old tree back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [str(dest / p.relative_to(src)) for p in files]
