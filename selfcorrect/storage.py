"""Read and write artifacts on a local path, gs://, s3:// or another fsspec URL, atomically.

Local writes go to a temporary file in the target folder and are renamed into
place, so a crash never leaves a half-written file. Object stores are atomic by
nature: an object appears only when its upload completes (a multipart upload only
when it is completed).

- gs:// goes through the google-cloud-storage client, which honours
  STORAGE_EMULATOR_HOST (how the tests reach a local emulator).
- Every other scheme goes through fsspec: s3:// (AWS, MinIO, KFP's default artifact
  store) by s3fs, which takes its endpoint from AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3
  or FSSPEC_S3_ENDPOINT_URL and its credentials from the usual AWS chain; other
  schemes fsspec knows (az://, hf://, ...) work once their fsspec package is installed.

Failures raise FileNotFoundError (a missing file or object) or StorageError, both
naming the URI. docs/storage.md has the settings.
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
_FORMS = "a local path, gs://BUCKET/OBJECT, s3://BUCKET/KEY or another fsspec URL"
_ALIASES = {"gcs": "gs"}          # gcsfs's name for gs://; gs:// has its own client here


def scheme(uri: str) -> str | None:
    """The URI's scheme ('gs', 's3', ...), or None for a local path."""
    m = _SCHEME.match(str(uri))
    return m.group(1) if m else None


def is_gcs(uri: str) -> bool:
    return str(uri).startswith("gs://")


def is_remote(uri: str) -> bool:
    """Whether uri names an object store or other fsspec location, not a local path."""
    return scheme(uri) is not None


def check_uri(uri: str) -> str:
    """uri itself when it is a local path, a gs:// URI or a URL of a scheme fsspec can
    open; unknown schemes, misspelt ones (GS://, gs:/x, gcs://) and file:// raise
    StorageError rather than becoming odd local folders."""
    uri = str(uri)
    if not uri:
        raise StorageError("an empty path names no file")
    proto = scheme(uri)
    if proto is None:
        return uri
    meant = _ALIASES.get(proto.lower(), proto.lower())
    if meant != proto or not uri.startswith(f"{proto}://"):
        hint = f"; did you mean {meant}://...?" if meant in ("gs", "s3") or _known(meant) else ""
        raise StorageError(f"{uri}: unsupported location '{proto}:' ({_FORMS}){hint}")
    if proto in ("file", "local"):
        raise StorageError(f"{uri}: give a local file as a plain path, without {proto}://")
    if proto == "gs":
        split_gcs(uri)
        return uri
    _fs_class(uri, proto)
    if not uri[len(proto) + 3:].strip("/") or uri[len(proto) + 3] == "/":
        raise StorageError(f"{uri}: a {proto}:// URI needs a bucket (or host) name")
    return uri


def _known(proto: str) -> bool:
    from fsspec.registry import known_implementations, registry

    return proto in known_implementations or proto in registry


def _fs_class(uri: str, proto: str):
    from fsspec.registry import get_filesystem_class

    try:
        return get_filesystem_class(proto)
    except ValueError:
        raise StorageError(f"{uri}: unsupported location '{proto}:' ({_FORMS})") from None
    except ImportError as e:
        raise StorageError(f"{uri}: {proto}:// needs a package that is not installed: "
                           f"{e or e.__cause__} (gs:// and s3://: pip install "
                           "'selfcorrect[cloud]')") from None


def split_gcs(uri: str) -> tuple[str, str]:
    bucket, _, blob = str(uri)[len("gs://"):].partition("/")
    if not bucket:
        raise StorageError(f"{uri}: a gs:// URI needs a bucket name")
    return bucket, blob


def _object_uri(uri: str) -> None:
    """StorageError unless a remote URI names an object, not a bucket or folder."""
    proto = scheme(uri)
    rest = uri[len(proto) + 3:]
    if "/" not in rest.strip("/") or uri.endswith("/"):
        raise StorageError(f"{uri}: names no object ({proto}://BUCKET/OBJECT, not a folder)")


# --- gs:// through google-cloud-storage ------------------------------------------------------

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
    from selfcorrect import extras

    extras.require("gs:// storage", "cloud")
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT", "local"),
                              credentials=AnonymousCredentials())
    return storage.Client()


def _blob(uri: str):
    bucket, name = split_gcs(uri)
    return _client().bucket(bucket).blob(name)


# --- every other scheme through fsspec -------------------------------------------------------

@lru_cache(maxsize=None)
def _filesystem(proto: str):
    """One fsspec filesystem per scheme, configured from the environment when first used
    (fsspec's FSSPEC_<SCHEME>_<OPTION> variables, the AWS chain for s3://)."""
    import fsspec

    return fsspec.filesystem(proto, skip_instance_cache=True)


def _fs(uri: str):
    """(filesystem, path inside it) of a checked remote URI; listings are not trusted
    across calls (another process may have written since)."""
    fs = _filesystem(scheme(uri))
    path = fs._strip_protocol(uri)
    fs.invalidate_cache()
    return fs, path


@contextmanager
def _fs_errors(uri: str, doing: str):
    """fsspec and SDK failures (botocore's included) as StorageError naming the URI; a
    missing object as FileNotFoundError."""
    try:
        yield
    except StorageError:
        raise
    except FileNotFoundError as e:
        if doing == "read":
            raise FileNotFoundError(f"{uri}: no such object") from None
        raise StorageError(f"{uri}: cannot write: no such bucket ({e})") from None
    except (IsADirectoryError, NotADirectoryError):
        raise StorageError(f"{uri}: names a folder, not an object") from None
    except PermissionError as e:
        raise StorageError(f"{uri}: cannot {doing}: permission denied ({e})") from None
    except Exception as e:  # noqa: BLE001 - SDK errors have no common base; the URI must be named
        hint = (" (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE; "
                "see docs/storage.md)") if type(e).__name__ == "NoCredentialsError" else ""
        raise StorageError(f"{uri}: cannot {doing}: {e or type(e).__name__}{hint}") from e


# --- the interface ---------------------------------------------------------------------------

def read_bytes(uri: str) -> bytes:
    """The file's bytes. Missing: FileNotFoundError; a folder, a symlink loop, a refused
    read, a store's failure: StorageError; both name the URI."""
    uri = check_uri(uri)
    if is_gcs(uri):
        _object_uri(uri)
        with _gcs_errors(uri, "read"):
            return _blob(uri).download_as_bytes()
    if is_remote(uri):
        _object_uri(uri)
        with _fs_errors(uri, "read"):
            fs, path = _fs(uri)
            return fs.cat_file(path)
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
    if is_remote(uri):
        _object_uri(uri)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"{uri}: write_bytes takes bytes, not {type(data).__name__}")
        with _fs_errors(uri, "write"):
            fs, path = _fs(uri)
            fs.pipe_file(path, bytes(data))
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
    if is_remote(uri):
        with _fs_errors(uri, "read"):
            fs, path = _fs(uri)
            return fs.exists(path)
    return Path(uri).exists()


def same_location(a: str, b: str) -> bool:
    """Whether two URIs name the same file (local paths resolved, symlinks followed)."""
    a, b = str(a), str(b)
    if is_remote(a) or is_remote(b):
        return a == b
    return os.path.realpath(a) == os.path.realpath(b)


def join(base: str, *parts: str) -> str:
    base = str(base)
    if is_remote(base):
        return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])
    return str(Path(base, *parts))


def upload_tree(local_dir: str, uri: str, skip=None) -> list[str]:
    """Copy every file under local_dir to uri (a folder or a remote prefix); returns the URIs.

    A local destination is filled in a temporary sibling folder and renamed into
    place, so readers see either the old tree or the whole new one. A remote prefix
    gets one object per file, each atomic. skip(relative posix path) -> True leaves a file out.
    """
    src = Path(local_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"{local_dir}: no such folder")
    files = sorted(p for p in src.rglob("*") if p.is_file()
                   and not (skip and skip(p.relative_to(src).as_posix())))
    if is_remote(uri):
        check_uri(uri)
        out = []
        for p in files:
            dest = join(uri, p.relative_to(src).as_posix())
            if is_gcs(dest):
                with _gcs_errors(dest, "write"):
                    _blob(dest).upload_from_filename(str(p))
            else:
                with _fs_errors(dest, "write"):
                    fs, path = _fs(dest)
                    fs.put_file(str(p), path)
            out.append(dest)
        return out
    def ignored(folder: str, names: list[str]) -> set[str]:
        """Skipped files, and folders skip() rejects as a whole ("logs/" for "logs/*")."""
        if skip is None:
            return set()
        rel = Path(folder).relative_to(src)
        return {n for n in names if skip((rel / n).as_posix()
                                         + ("/" if Path(folder, n).is_dir() else ""))}

    return _replace_tree(Path(uri), lambda tmp: shutil.copytree(src, tmp, dirs_exist_ok=True,
                                                                ignore=ignored),
                         [p.relative_to(src) for p in files])


def download_tree(uri: str, local_dir: str) -> list[str]:
    """Copy every object under uri (a remote prefix or a local folder) into local_dir, which
    is replaced whole; returns the local paths. FileNotFoundError when there is nothing."""
    uri = check_uri(uri)
    if not is_remote(uri):
        src = Path(uri)
        if not src.is_dir():
            raise FileNotFoundError(f"{uri}: no such folder")
        names = sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file())
        return _replace_tree(Path(local_dir), lambda tmp: shutil.copytree(src, tmp, dirs_exist_ok=True),
                             names)
    prefix = uri.rstrip("/") + "/"
    if is_gcs(uri):
        bucket, name = split_gcs(prefix)
        try:
            with _gcs_errors(uri, "read"):
                blobs = [b for b in _client().list_blobs(bucket, prefix=name.lstrip("/"))
                         if not b.name.endswith("/")]
        except FileNotFoundError:       # no such bucket: nothing under the prefix either
            blobs = []
        names = [Path(b.name[len(name.lstrip("/")):]) for b in blobs]

        def fill(tmp: Path):
            for b, rel in zip(blobs, names):
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                with _gcs_errors(f"gs://{bucket}/{b.name}", "read"):
                    b.download_to_filename(str(tmp / rel))
    else:
        try:
            with _fs_errors(uri, "read"):
                fs, root = _fs(prefix)
                found = sorted(fs.find(root))
        except FileNotFoundError:       # no such bucket: nothing under the prefix either
            found = []
        names = [Path(p[len(root.rstrip("/")) + 1:]) for p in found]

        def fill(tmp: Path):
            for path, rel in zip(found, names):
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                with _fs_errors(join(uri, rel.as_posix()), "read"):
                    fs.get_file(path, str(tmp / rel))
    if not names:
        raise FileNotFoundError(f"{uri}: no objects under this prefix")
    return _replace_tree(Path(local_dir), fill, sorted(names))


def _replace_tree(dest: Path, fill, names: list[Path]) -> list[str]:
    """Fill a temporary sibling of dest, then swap it in for dest (the old tree is put back
    if the swap fails); returns the paths of names under dest."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        fill(tmp)
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
    return [str(dest / n) for n in names]
