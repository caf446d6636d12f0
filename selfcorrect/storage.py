"""Files and folders on a local path, gs://, s3:// or another fsspec URL: the one storage layer.

Local writes go to a temporary file in the target folder and are renamed into
place, so a crash never leaves a half-written file. Object stores are atomic by
nature: an object appears only when its upload completes (a multipart upload only
when it is completed).

Every remote scheme goes through fsspec: gs:// by gcsfs, s3:// (AWS, MinIO, KFP's
default artifact store) by s3fs, other schemes fsspec knows (az://, hf://, memory://,
...) once their package is installed. Each takes its settings from the environment:
fsspec's FSSPEC_<SCHEME>_<OPTION> variables (FSSPEC_GS_TOKEN=anon, FSSPEC_S3_ENDPOINT_URL),
STORAGE_EMULATOR_HOST for gcsfs, AWS_ENDPOINT_URL and the AWS chain for s3fs. Folders
(upload_tree, download, listing) move many files at once, concurrently where the
filesystem is asynchronous (gcsfs, s3fs).

Failures raise FileNotFoundError (a missing file or object) or StorageError, both
naming the URI. docs/storage.md has the settings.
"""
from __future__ import annotations

import hashlib
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
_ALIASES = {"gcs": "gs"}          # gcsfs's other name for gs://: one spelling here


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


# --- remote locations through fsspec --------------------------------------------------------

@lru_cache(maxsize=None)
def _filesystem(proto: str):
    """One fsspec filesystem per scheme, configured from the environment when first used
    (fsspec's FSSPEC_<SCHEME>_<OPTION> variables, the AWS chain for s3://)."""
    import fsspec

    if proto == "gs":
        # gcsfs's plain filesystem: the default "extended" one probes every bucket's layout
        # over gRPC first (slow against an emulator, no use for whole objects)
        from fsspec.config import apply_config
        from gcsfs.core import GCSFileSystem

        return GCSFileSystem(**apply_config(GCSFileSystem, {"skip_instance_cache": True}))
    return fsspec.filesystem(proto, skip_instance_cache=True)


def filesystem(uri: str):
    """(fsspec filesystem, path inside it) of a URI, checked (a local path: fsspec's local
    filesystem); listings are not trusted across calls (another process, a rank or a killed
    pod, may have written since)."""
    uri = check_uri(uri)
    if not is_remote(uri):
        return _filesystem("file"), os.path.abspath(uri)
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
    if is_remote(uri):
        _object_uri(uri)
        with _fs_errors(uri, "read"):
            fs, path = filesystem(uri)
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
    if is_remote(uri):
        _object_uri(uri)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"{uri}: write_bytes takes bytes, not {type(data).__name__}")
        with _fs_errors(uri, "write"):
            fs, path = filesystem(uri)
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
    if is_remote(uri):
        with _fs_errors(uri, "read"):
            fs, path = filesystem(uri)
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


# --- folders ---------------------------------------------------------------------------------

def upload_tree(local_dir: str, uri: str, skip=None) -> list[str]:
    """Copy every file under local_dir to uri (a folder or a remote prefix); returns the URIs.

    A local destination is filled in a temporary sibling folder and renamed into
    place, so readers see either the old tree or the whole new one. A remote prefix
    gets one object per file, each atomic, uploaded concurrently (one fsspec put).
    skip(relative posix path) -> True leaves a file out.
    """
    src = Path(local_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"{local_dir}: no such folder")
    files = sorted(p for p in src.rglob("*") if p.is_file()
                   and not (skip and skip(p.relative_to(src).as_posix())))
    if is_remote(uri):
        out = [join(check_uri(uri), p.relative_to(src).as_posix()) for p in files]
        if files:
            with _fs_errors(out[0] if len(out) == 1 else uri, "write"):
                fs, _ = filesystem(uri)
                fs.put([str(p) for p in files], [fs._strip_protocol(d) for d in out])
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


def listing(uri: str) -> dict[str, int]:
    """{path relative to `uri`: size} of every file under the remote folder `uri` (empty if
    none, the bucket included)."""
    with _fs_errors(uri, "read"):
        fs, root = filesystem(uri)
        root = root.rstrip("/")
        try:
            found = fs.find(root, detail=True)
        except FileNotFoundError:       # no such bucket: nothing under the prefix either
            return {}
    return {name[len(root):].lstrip("/"): int(info.get("size") or 0)
            for name, info in found.items() if info.get("type", "file") == "file"}


def download(uri: str, local: str) -> list[str]:
    """Copy every file under the remote folder `uri` into the local folder `local`,
    concurrently (one fsspec get); returns the names. Nothing there: FileNotFoundError."""
    names = sorted(listing(uri))
    if not names:
        raise FileNotFoundError(f"{uri}: no objects under this prefix")
    with _fs_errors(uri, "read"):
        fs, root = filesystem(uri)
        for name in names:
            Path(local, name).parent.mkdir(parents=True, exist_ok=True)
        fs.get([f"{root.rstrip('/')}/{n}" for n in names], [str(Path(local, n)) for n in names])
    return names


def remove(uri: str) -> None:
    """Delete the remote folder `uri` and everything under it (nothing when it is absent)."""
    with _fs_errors(uri, "write"):
        fs, root = filesystem(uri)
        if fs.exists(root):
            fs.rm(root, recursive=True)


def cache_dir(kind: str) -> Path:
    """$SELFCORRECT_CACHE/<kind>, default ~/.cache/selfcorrect/<kind>."""
    base = os.environ.get("SELFCORRECT_CACHE") or Path.home() / ".cache" / "selfcorrect"
    return Path(base, kind)


def cached_copy(uri: str) -> str:
    """A local copy of the remote folder `uri`, downloaded once per content.

    The cache key covers the URI and every file's name and size, so a folder replaced at the
    same URI is fetched again. Several processes on one machine (one per GPU) may call this at
    once: each downloads into its own temporary folder and renames it into place.
    """
    files = listing(uri)
    if not files:
        raise FileNotFoundError(f"{uri}: no files under this folder")
    key = hashlib.sha256(repr((uri, sorted(files.items()))).encode()).hexdigest()[:20]
    target = cache_dir("models") / key
    if target.is_dir():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent)
    try:
        download(uri, tmp)
        os.rename(tmp, target)
    except OSError:
        if not target.is_dir():     # not a lost race with another process: a real failure
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


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
