"""The base model's cache key: what identifies the weights a model config names, as one digest.

    key = fingerprint(cfg.model)

The pipeline's never-cached `model_fingerprint` step hands it to prepare_model, which is
cached on it: a model replaced at the same model.path (a new upload to the bucket, a new
commit on the Hub's main branch, a retrained folder) gives a new key, so it is never reused
silently. The key covers the model config and:

    tiny                 nothing else (the config and the package version build it)
    gguf, a local folder every file's name, size and sha256
    gs://, s3://, ...    every object's name, size and the store's own content tag
                         (md5Hash or crc32c on GCS, ETag on S3), read from a listing
    a Hub id             the commit model.revision resolves to (the Hub API; offline
                         (HF_HUB_OFFLINE=1): the local cache's ref, or the revision itself)
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path

from selfcorrect import storage
from selfcorrect.config import ModelConfig

# the first of these an object's listing holds is its content tag
CONTENT_TAGS = ("md5Hash", "crc32c", "ETag", "etag", "md5", "generation", "mtime", "LastModified")
_COMMIT = re.compile(r"[0-9a-f]{40}")


def fingerprint(cfg: ModelConfig) -> str:
    """sha256 of the model config and of what identifies its weights (see the module)."""
    digest = hashlib.sha256(json.dumps(dataclasses.asdict(cfg), sort_keys=True).encode())
    if cfg.source == "tiny":
        return digest.hexdigest()
    from selfcorrect.models import is_hub_id

    if cfg.source == "hf" and is_hub_id(cfg.path):
        digest.update(f"commit {hub_commit(cfg.path, cfg.revision)}".encode())
    elif storage.is_remote(cfg.path.removeprefix("file://")):
        for line in remote_listing(cfg.path):
            digest.update(line.encode())
    else:
        for line in local_listing(cfg.path.removeprefix("file://")):
            digest.update(line.encode())
    return digest.hexdigest()


def local_listing(path: str) -> list[str]:
    """"name size sha256" of the file, or of every file under the folder, sorted by name."""
    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"model.path: {path} does not exist on this machine")
    files = [root] if root.is_file() else sorted(f for f in root.rglob("*") if f.is_file())
    out = []
    for f in files:
        with f.open("rb") as fh:
            sha = hashlib.file_digest(fh, "sha256").hexdigest()
        name = f.name if f == root else f.relative_to(root).as_posix()
        out.append(f"{name} {f.stat().st_size} {sha}")
    return out


def remote_listing(uri: str) -> list[str]:
    """"name size tag" of every object under the folder `uri`: the listing's own content
    tags, so no weights are downloaded to fingerprint them."""
    fs, root = storage.filesystem(uri)
    root = root.rstrip("/")
    fs.invalidate_cache()
    found = {name: info for name, info in fs.find(root, detail=True).items()
             if info.get("type", "file") == "file"}
    if not found:
        raise FileNotFoundError(f"model.path: {uri} holds no files; point it at a "
                                "save_pretrained folder (config.json, weights, tokenizer)")
    out = []
    for name, info in sorted(found.items()):
        tag = next((str(info[k]) for k in CONTENT_TAGS if info.get(k)), None)
        if tag is None:
            raise ValueError(f"model.path: {uri}: the listing of {name} has no content tag "
                             f"({', '.join(CONTENT_TAGS)}); cannot tell a replaced file")
        out.append(f"{name[len(root):].lstrip('/')} {info.get('size')} {tag}")
    return out


def hub_commit(repo: str, revision: str = "") -> str:
    """The commit `revision` (default: the main branch) of the Hub model `repo` is at now."""
    if _COMMIT.fullmatch(revision):
        return revision
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        ref = Path(constants.HF_HUB_CACHE, f"models--{repo.replace('/', '--')}", "refs",
                   revision or "main")
        return ref.read_text().strip() if ref.is_file() else f"offline {revision or 'main'}"
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return HfApi().model_info(repo, revision=revision or None).sha
    except (HfHubHTTPError, OSError) as e:
        raise ValueError(f"model.path: {repo} at revision {revision or 'main'}: the Hub did "
                         f"not answer which commit that is ({type(e).__name__}: {e}); check "
                         "the id and revision, or set HF_HUB_OFFLINE=1 to use the local "
                         "cache") from None
