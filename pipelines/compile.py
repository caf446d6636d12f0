"""Compile the pipeline to IR YAML named with the package version."""
from __future__ import annotations

from pathlib import Path

from kfp import compiler

from selfcorrect import __version__
from selfcorrect.config import RunConfig
from selfcorrect.pipelines.score import PIPELINE_NAME, score_pipeline


def pipeline_file(output_dir: str | Path) -> Path:
    return Path(output_dir) / f"{PIPELINE_NAME.replace('-score', '')}-pipeline-{__version__}.yaml"


def compile_pipeline(output_dir: str | Path = "dist", config: dict | None = None) -> Path:
    """Write `selfcorrect-pipeline-<version>.yaml`; `config` is the default run config."""
    out = pipeline_file(output_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(
        score_pipeline, str(out),
        pipeline_parameters={"config": config or RunConfig().to_dict()})
    return out
