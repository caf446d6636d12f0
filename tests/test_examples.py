"""examples/: each ready config, on top of its cluster preset, compiles for 8 GPUs and passes
every cluster check that submit makes (with a service account for gs://), once YOUR-BUCKET is
the only thing left to change."""
from pathlib import Path

import pytest
import yaml

from selfcorrect import cluster_checks, config
from selfcorrect.pipelines.compile import compile_pipeline
from compiled import read_spec

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))


def preset_of(path: Path) -> str:
    """The preset an example names in its own `selfcorrect submit --preset ...` line."""
    line = next(l for l in path.read_text().splitlines() if "--preset" in l)
    return line.split("--preset", 1)[1].split()[0]


def test_there_are_examples_for_gsm8k_math_and_mbpp():
    assert {p.stem for p in EXAMPLES} >= {"gsm8k", "math", "mbpp"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_each_example_compiles_and_passes_the_submit_checks(path, tmp_path):
    assert "YOUR-BUCKET" in path.read_text()
    cfg = config.load(preset_of(path), str(path), local=False)
    assert cfg.resources.accelerator_count == 8 and cfg.output_dir.startswith("gs://")
    errors = [f for f in cluster_checks.findings(cfg, service_account="my-ksa") if f.error]
    assert not errors, errors
    spec = read_spec(compile_pipeline(tmp_path, cfg.to_dict()))
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["data_path"]["defaultValue"] == yaml.safe_load(path.read_text())["data"]["path"]
    assert params["model_path"]["defaultValue"] == cfg.model.path


def test_the_qa_example_brings_its_own_check(monkeypatch, tmp_path):
    """examples/qa: a short-answer file judged by qa_checks.exact_match (verify.custom); the
    check imports when the config is loaded for a run here, and compiles into the pipeline."""
    qa = EXAMPLES[0].parent / "qa"
    monkeypatch.syspath_prepend(str(qa))
    assert config.load("tiny", str(qa / "qa.yaml")).verify.custom == "qa_checks:exact_match"
    cfg = config.load("tiny", str(qa / "qa.yaml"), local=False)
    spec = read_spec(compile_pipeline(tmp_path, cfg.to_dict()))
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["verify_custom"]["defaultValue"] == "qa_checks:exact_match"
    assert params["data_path"]["defaultValue"] == "examples/qa/qa.jsonl"
