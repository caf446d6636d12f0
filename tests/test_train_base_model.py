"""The base model as a URI, loaded inside the step: a gs:// folder (GCS emulator), a local
folder, a hub name passed through untouched; no path of the submitting machine is baked in."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from selfcorrect import config, models, storage
from selfcorrect.config import ModelConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A save_pretrained folder of the tiny model and its weights."""
    path = tmp_path_factory.mktemp("base") / "tiny"
    model, tok = models.load(config.load("tiny").model)
    models.save(model, tok, str(path))
    return path, model.state_dict()


def same_weights(model, state) -> bool:
    return all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_a_gs_folder_is_copied_and_loaded_in_the_step(saved, gs_prefix, tmp_path, monkeypatch):
    path, state = saved
    uri = f"{gs_prefix}/models/tiny"
    storage.upload_tree(str(path), uri)
    monkeypatch.setenv("SELFCORRECT_CACHE", str(tmp_path / "cache"))
    cfg = config.load("tiny", overrides=["model.source=hf", f"model.path={uri}"])
    assert cfg.model.path == uri
    model, tok = models.load(cfg.model)
    assert same_weights(model, state) and tok.pad_token is not None
    cached = list((tmp_path / "cache" / "models").iterdir())
    assert len(cached) == 1 and (cached[0] / "config.json").is_file()
    # a Model artifact given by URI (path=...) takes the same road; the cache is reused
    assert same_weights(models.load(cfg.model, path=uri)[0], state)
    assert len(list((tmp_path / "cache" / "models").iterdir())) == 1


def test_an_empty_gs_folder_names_the_key(gs_prefix, tmp_path, monkeypatch):
    monkeypatch.setenv("SELFCORRECT_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"model.path: gs://.*holds no files"):
        models.load(ModelConfig(source="hf", path=f"{gs_prefix}/nothing"))


def test_a_missing_local_folder_names_the_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.path: .*is not a folder"):
        models.load(ModelConfig(source="hf", path=str(tmp_path / "nope")))


def test_a_hub_name_is_left_as_is():
    cfg = config.load("tiny", overrides=["model.source=hf", "model.path=Qwen/Qwen2.5-0.5B-Instruct"])
    assert cfg.model.path == "Qwen/Qwen2.5-0.5B-Instruct"
    assert models.local_source("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"


def test_a_local_folder_is_made_absolute_for_a_local_run(saved, monkeypatch):
    path, _ = saved
    monkeypatch.chdir(path.parent)
    cfg = config.load("tiny", overrides=["model.source=hf", "model.path=tiny"])
    assert cfg.model.path == str(path)


@pytest.mark.slow
def test_a_hub_name_reaches_from_pretrained(saved, tmp_path):
    """Offline, from a hub cache laid out as huggingface_hub does: the name went through."""
    path, state = saved
    snapshot = tmp_path / "hub" / "models--tiny-org--tiny-gpt2" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for f in path.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (tmp_path / "hub" / "models--tiny-org--tiny-gpt2" / "refs").mkdir()
    (tmp_path / "hub" / "models--tiny-org--tiny-gpt2" / "refs" / "main").write_text("0" * 40)
    torch.save(state, tmp_path / "state.pt")
    code = ("import torch; from selfcorrect import models; from selfcorrect.config import ModelConfig; "
            "m, _ = models.load(ModelConfig(source='hf', path='tiny-org/tiny-gpt2')); "
            f"s = torch.load({str(tmp_path / 'state.pt')!r}); "
            "assert all(torch.equal(m.state_dict()[k], v) for k, v in s.items()); print('ok')")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1",
           "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


def test_compile_bakes_no_path_of_this_machine(tmp_path, monkeypatch, capsys):
    from selfcorrect.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["compile", "--preset", "demo", "--output", "dist"]) == 0
    err = capsys.readouterr().err
    assert "warning: output_dir" in err and "warning: model.path" in err
    (compiled,) = (tmp_path / "dist").glob("*-pipeline-*.yaml")
    text = compiled.read_text()
    assert str(tmp_path) not in text and "/work/" not in text
    default = json.dumps(config.load("demo", local=False).to_dict()["model"]["path"])
    assert default.strip('"') in text     # the preset's value, as written
