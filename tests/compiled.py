"""Reading a compiled pipeline file in tests: its PipelineSpec and its Kubernetes platform spec."""
from pathlib import Path

import yaml


def read_spec(path: str | Path) -> dict:
    """The PipelineSpec of a compiled file (its first YAML document)."""
    return next(iter(_documents(path)))


def read_platform_spec(path: str | Path) -> dict:
    """The Kubernetes platform spec of a compiled file ({} when it has none)."""
    docs = _documents(path)
    return docs[1] if len(docs) > 1 else {}


def _documents(path: str | Path) -> list:
    return [d for d in yaml.safe_load_all(Path(path).read_text()) if d is not None]
