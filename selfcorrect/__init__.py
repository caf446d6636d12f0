"""selfcorrect: SCoRe self-correction training as a versioned Kubeflow Pipelines DAG."""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("selfcorrect")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
