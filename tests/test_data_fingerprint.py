"""The problems' cache key (defect 9): the same data give the same key, new bytes at the same
path a new one, so the cached prepare_problems never serves stale problems."""
import json

from kfp import local

from selfcorrect import config, storage
from selfcorrect.config import DataConfig
from selfcorrect.data.fingerprint import fingerprint


def _rows(*answers):
    return "".join(json.dumps({"id": f"p{i}", "question": f"What is {a}-0?", "answer": f"#### {a}"})
                   + "\n" for i, a in enumerate(answers))


def test_a_file_source_is_keyed_on_its_bytes(tmp_path):
    path = tmp_path / "problems.jsonl"
    path.write_text(_rows(1, 2, 3))
    cfg = DataConfig(source="gsm8k", path=str(path))
    first = fingerprint(cfg)
    assert fingerprint(DataConfig(source="gsm8k", path=str(path))) == first
    path.write_text(_rows(1, 2, 4))                       # refreshed in place
    assert fingerprint(cfg) != first


def test_a_file_on_gcs_is_keyed_on_its_bytes(gs_prefix):
    uri = storage.join(gs_prefix, "problems.jsonl")
    storage.write_text(uri, _rows(1, 2))
    first = fingerprint(DataConfig(source="gsm8k", path=uri))
    storage.write_text(uri, _rows(1, 3))
    assert fingerprint(DataConfig(source="gsm8k", path=uri)) != first


def test_a_generated_source_is_keyed_on_its_config():
    base = fingerprint(DataConfig())
    assert base == fingerprint(DataConfig())
    assert base != fingerprint(DataConfig(seed=1))
    assert base != fingerprint(DataConfig(n_train=17))


def test_the_fingerprint_step_runs_as_a_component(tmp_path):
    from selfcorrect.components import data_fingerprint

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path),
               raise_on_error=True)
    cfg = config.load("tiny")
    assert data_fingerprint(data=cfg.to_dict()["data"]).output == fingerprint(cfg.data)
