"""Models from a folder, gs://, s3:// or a Hub id; the from_pretrained settings; the model's
cache key (selfcorrect.model_fingerprint), on a tiny model saved in the test."""
import dataclasses
import shutil

import pytest
import torch

from selfcorrect import config, models, storage
from selfcorrect.config import ConfigError, ModelConfig
from selfcorrect.model_fingerprint import fingerprint, hub_commit


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "model"
    net, tok = models.tiny_model(ModelConfig())
    models.save(net, tok, str(path))
    return path


@pytest.fixture
def spy(monkeypatch):
    """The keyword arguments of every from_pretrained call (the real one still runs)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    calls = []
    for cls in (AutoModelForCausalLM, AutoTokenizer):
        real = cls.from_pretrained

        def record(source, *args, _real=real, _name=cls.__name__, **kwargs):
            calls.append((_name, source, kwargs))
            return _real(source, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", record)
    return calls


def test_settings_reach_every_from_pretrained(folder, spy):
    cfg = ModelConfig(source="hf", path=str(folder), trust_remote_code=True,
                      attn_implementation="eager", dtype="float16")
    net, _ = models.load(cfg)
    assert net.config._attn_implementation == "eager"
    assert next(net.parameters()).dtype == torch.float16
    (m, _, model_kw), (t, _, tok_kw) = spy
    assert (m, t) == ("AutoModelForCausalLM", "AutoTokenizer")
    assert model_kw["trust_remote_code"] is True and tok_kw["trust_remote_code"] is True
    assert model_kw["attn_implementation"] == "eager" and "attn_implementation" not in tok_kw
    assert "revision" not in model_kw


def test_a_hub_revision_reaches_from_pretrained(spy, monkeypatch, tmp_path):
    """No network here: the offline Hub refuses the id, after the revision was passed."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    cfg = ModelConfig(source="hf", path="someorg/some-model", revision="v1.2")
    with pytest.raises(OSError):
        models.load(cfg)
    assert spy[0][1] == "someorg/some-model" and spy[0][2]["revision"] == "v1.2"
    assert spy[0][2]["trust_remote_code"] is False


def test_a_revision_needs_a_hub_id(folder):
    with pytest.raises(ConfigError, match="model.revision: 'v1' names a Hub revision"):
        models.load(ModelConfig(source="hf", path=str(folder), revision="v1"))
    with pytest.raises(ConfigError, match="model.revision: only read with model.source hf"):
        config.load("tiny", overrides=["model.revision=v1"])
    # a pipeline artifact (path=...) is one commit already: the revision is not applied to it
    net, _ = models.load(ModelConfig(source="hf", path="org/name", revision="v1"), path=str(folder))
    assert net.config.n_layer == 2


def test_new_model_keys_are_checked():
    with pytest.raises(ConfigError, match="accepted values: auto, eager, sdpa, flash_attention_2"):
        config.load("tiny", overrides=["model.attn_implementation=flash"])
    assert config.load("tiny", overrides=["model.dtype=float16"]).model.dtype == "float16"


def test_a_replaced_folder_changes_the_fingerprint(folder, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(folder, copy)
    cfg = ModelConfig(source="hf", path=str(copy))
    first = fingerprint(cfg)
    assert first == fingerprint(cfg)
    weights = next(copy.glob("model.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1                                  # same name, same size, other bytes
    weights.write_bytes(bytes(data))
    assert fingerprint(cfg) != first
    assert fingerprint(dataclasses.replace(cfg, attn_implementation="eager")) != fingerprint(cfg)


@pytest.mark.parametrize("store", ["gcs", "s3"])
def test_a_replaced_remote_folder_changes_the_fingerprint(folder, store, request):
    root = request.getfixturevalue(store)
    uri = f"{root}/fingerprint/{request.node.name}"
    storage.upload_tree(str(folder), uri)
    cfg = ModelConfig(source="hf", path=uri)
    first = fingerprint(cfg)
    assert first == fingerprint(cfg)
    fs, path = storage.filesystem(uri)
    with fs.open(f"{path}/config.json", "rb") as f:
        text = f.read().replace(b'"n_layer": 2', b'"n_layer": 3')
    with fs.open(f"{path}/config.json", "wb") as f:       # replaced in place, same name
        f.write(text)
    assert fingerprint(cfg) != first


def test_a_hub_id_is_keyed_on_its_commit(monkeypatch, tmp_path):
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    assert hub_commit("org/name", commit) == commit            # a commit names itself
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    refs = tmp_path / "models--org--name" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text(commit)
    assert hub_commit("org/name") == commit                    # offline: the cache's ref
    cfg = ModelConfig(source="hf", path="org/name")
    first = fingerprint(cfg)
    (refs / "main").write_text("f" * 40)                       # main moved on
    assert fingerprint(cfg) != first


def test_fp16_selects_deepspeeds_fp16_mode():
    from selfcorrect.train import launch
    from selfcorrect.train.engine import ds_config

    train = config.TrainConfig()
    assert ds_config(train, micro_batch_size=1, gpu=True)["bf16"] == {"enabled": True}
    half = ds_config(train, micro_batch_size=1, gpu=True, fp16=True)
    assert half["fp16"]["enabled"] and "bf16" not in half
    assert ds_config(train, micro_batch_size=1, gpu=False, fp16=True)["bf16"] == {"enabled": False}
    cfg = config.load("tiny", overrides=["model.dtype=float16"])
    assert launch.gpu_ds_config(cfg, num_gpus=1)["fp16"]["enabled"]


def test_the_fingerprint_step_runs_as_a_component(folder, tmp_path):
    from kfp import local

    from selfcorrect.components import model_fingerprint

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path),
               raise_on_error=True)
    cfg = ModelConfig(source="hf", path=str(folder))
    assert model_fingerprint(model=dataclasses.asdict(cfg)).output == fingerprint(cfg)


def test_the_model_card_names_the_revision_remote_code_and_check():
    from selfcorrect import promote

    cfg = config.load("tiny", local=False).to_dict()
    cfg["model"].update(source="hf", path="org/base", revision="v1.2", trust_remote_code=True)
    cfg["verify"]["custom"] = "mypkg.checks:exact_match"
    card = promote.model_card({"config": cfg, "metrics": {"n": 3}, "uri": "/r/m"})
    assert "base_model: org/base" in card and "`org/base` at revision `v1.2`" in card
    assert 'from_pretrained("/r/m", trust_remote_code=True)' in card
    assert "the check `mypkg.checks:exact_match`" in card
