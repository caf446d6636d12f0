"""The problems' cache key: everything prepare_problems' output depends on, as one digest.

    key = fingerprint(cfg.data)

Generated sources (arithmetic, algebra, reasoning_gym) and the bundled HumanEval depend on
the data config only (and on the package version, which the image tag, part of every KFP
cache key, already carries); a file source also on the file's bytes, read here. The
pipeline's never-cached `data_fingerprint` step hands the key to prepare_problems, which is
cached: the same data reuse its output, so every step after it can hit the cache too, and new
bytes at the same data.path (a scheduled retraining run) give a new key and a fresh run.

>>> from selfcorrect.config import DataConfig
>>> fingerprint(DataConfig(seed=1)) == fingerprint(DataConfig(seed=1)) != fingerprint(DataConfig(seed=2))
True
"""
from __future__ import annotations

import dataclasses
import hashlib
import json

from selfcorrect import storage
from selfcorrect.config import DataConfig


def fingerprint(cfg: DataConfig) -> str:
    """sha256 of the data config and, for a file source, of the file's bytes."""
    digest = hashlib.sha256(json.dumps(dataclasses.asdict(cfg), sort_keys=True).encode())
    if cfg.path:
        digest.update(storage.read_bytes(cfg.path))
    return digest.hexdigest()
