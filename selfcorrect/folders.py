"""Copy whole folders between this machine and any fsspec URL (gs://, s3://, memory://, ...).

The training steps need two things storage.py's single-object reads do not give: a model
folder on gs:// or s3:// turned into a local folder that `from_pretrained` can open, and
DeepSpeed's checkpoint folders (written locally, one file set per rank) mirrored to the run's
artifact store so a retried pod can resume. gs:// honours STORAGE_EMULATOR_HOST (gcsfs), which
is how the tests reach a local emulator.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_remote(uri: str) -> bool:
    """True for a URL with a scheme (gs://, s3://, ...) other than file://."""
    return bool(_URL.match(str(uri))) and not str(uri).startswith("file://")


def filesystem(uri: str):
    """(fsspec filesystem, path inside it) for `uri`, with a clear error for an unknown scheme."""
    import fsspec

    try:
        if str(uri).startswith("gs://"):
            # gcsfs's plain filesystem: the default "extended" one probes every bucket's
            # layout over gRPC first (slow and noisy against an emulator, no use here)
            from gcsfs.core import GCSFileSystem

            anon = {"token": "anon"} if os.environ.get("STORAGE_EMULATOR_HOST") else {}
            return GCSFileSystem(**anon), str(uri)[len("gs://"):]
        return fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as e:
        raise ValueError(f"{uri}: no filesystem for this URL ({e}); gs:// and s3:// need "
                         "pip install 'selfcorrect[cloud]'") from None


def listing(uri: str) -> dict[str, int]:
    """{path relative to `uri`: size} of every file under the folder `uri` (empty if none)."""
    fs, root = filesystem(uri)
    root = root.rstrip("/")
    fs.invalidate_cache()           # another process (a rank, a killed pod) may have written
    if not fs.exists(root):
        return {}
    found = fs.find(root, detail=True)
    return {name[len(root):].lstrip("/"): int(info.get("size") or 0)
            for name, info in found.items() if info.get("type", "file") == "file"}


def download(uri: str, local: str) -> list[str]:
    """Copy every file under the folder `uri` into the local folder `local`; returns the names."""
    fs, root = filesystem(uri)
    names = sorted(listing(uri))
    for name in names:
        target = Path(local, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(f"{root.rstrip('/')}/{name}", str(target))
    return names


def upload(local: str, uri: str) -> list[str]:
    """Copy every file under the local folder `local` to the folder `uri`; returns the names."""
    fs, root = filesystem(uri)
    names = sorted(str(p.relative_to(local)) for p in Path(local).rglob("*") if p.is_file())
    for name in names:
        fs.put_file(str(Path(local, name)), f"{root.rstrip('/')}/{name}")
    return names


def remove(uri: str) -> None:
    """Delete the folder `uri` and everything under it (nothing when it is absent)."""
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
