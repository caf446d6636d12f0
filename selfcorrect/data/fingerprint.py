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
from pathlib import Path

from selfcorrect import storage
from selfcorrect.config import DataConfig
from selfcorrect.data import hf


def fingerprint(cfg: DataConfig) -> str:
    """sha256 of the data config and of the data each of path, eval_path and dev_path names:
    a file's bytes, every file of a local dataset folder, a Hub dataset's own fingerprints
    (`datasets` derives them from the data files' revisions)."""
    digest = hashlib.sha256(json.dumps(dataclasses.asdict(cfg), sort_keys=True).encode())
    for path in (cfg.path, cfg.eval_path, cfg.dev_path):
        if not path:
            continue
        if not hf.is_dataset(path):
            digest.update(storage.read_bytes(path))
        elif path.startswith("hf:") or "://" in path:
            dataset = hf.open_dataset(path, cfg.dataset_config)
            parts = [dataset[n] for n in hf.split_names(dataset)] or [dataset]
            digest.update("".join(part._fingerprint for part in parts).encode())
        else:
            root = Path(path)
            files = [root] if root.is_file() else sorted(f for f in root.rglob("*") if f.is_file())
            for f in files:
                digest.update(str(f.relative_to(root) if f != root else f.name).encode())
                digest.update(f.read_bytes())
    return digest.hexdigest()
