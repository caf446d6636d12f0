"""Generation under ZeRO-3 from weights gathered once (selfcorrect.train.gathered), on CPU with
2 gloo ranks (tests/zero3_gather_ranks.py), against the per-layer path (synced_gpus,
DeepSpeed's hooks gathering each layer for each forward):

- the same tokens, greedy and seeded sampling, each rank generating its own problems (packed
  linear kernels off); with them on (the gathered path packs, the per-layer path cannot), the
  same greedy tokens and logits within 1e-5;
- the gathered path enters one GatheredParameters per generation phase and runs exactly the
  all-gathers of one gather of every parameter, however many tokens it generates; the
  per-layer path at least one per layer per forward;
- afterwards the engine is as before: hooks back, weights partitioned, the same scores;
- auto agrees over the ranks: one rank without room makes both take the per-layer path.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from selfcorrect import config, models
from selfcorrect.train import gathered, launch

from test_multirank import env

REPO = Path(__file__).resolve().parents[1]
NEW_TOKENS = 6


def qwen2():
    """A random 2-layer Qwen2 (its layers nn.Linear, as the models users train) with GPT-2's
    vocabulary."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    return Qwen2ForCausalLM(Qwen2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, vocab_size=len(models.gpt2_tokenizer()), tie_word_embeddings=True,
        initializer_range=0.2))     # weights large enough that greedy tokens follow the prompt


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    root = tmp_path_factory.mktemp("gather")
    cfg = config.load("tiny", overrides=["train.zero_stage=3"])
    models.save(qwen2(), models.gpt2_tokenizer(), str(root / "model"))
    (root / "in.json").write_text(json.dumps({"config": cfg.to_dict(), "model": str(root / "model"),
                                              "max_new_tokens": NEW_TOKENS}))
    done = subprocess.run(["torchrun", "--nproc_per_node", "2", "--master_port",
                           str(launch.free_port()), str(REPO / "tests" / "zero3_gather_ranks.py"),
                           str(root / "in.json"), str(root / "out")], env=env(),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads((root / f"out.{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [0.0, 1.0], ids=["greedy", "sampled"])
def test_gathered_generation_gives_the_per_layer_tokens_with_one_gather(ranks, temperature):
    assert ranks[0]["per_layer@1.0"]["tokens"] != ranks[1]["per_layer@1.0"]["tokens"]
    for got in ranks:
        per_layer, once = got[f"per_layer@{temperature}"], got[f"gathered@{temperature}"]
        assert once["tokens"] == per_layer["tokens"]
        assert len({tuple(y) for pair in once["tokens"] for y in pair}) > 2   # not one token
        # gathered: one GatheredParameters, exactly the collectives of one whole-model gather
        assert once["entries"] == got["one_gather"]["entries"] == 1
        assert once["gathers"] == got["one_gather"]["gathers"] > 0
        assert once["forwards"] >= NEW_TOKENS   # many forwards, no gather among them
        # per layer: no whole-model gather, at least one all-gather per layer per forward
        assert per_layer["entries"] == 0
        assert per_layer["gathers"] >= per_layer["forwards"] * got["layers"]
        assert per_layer["gathers"] > once["gathers"]


@pytest.mark.slow
def test_the_reference_engine_gathers_alike(ranks):
    """The frozen reference's engine (no optimizer: DeepSpeed's parameter offload holds its
    hooks) generates the same tokens gathered once, and gets its hooks back."""
    for got in ranks:
        per_layer, once = got["reference_per_layer"], got["reference_gathered"]
        assert once["tokens"] == per_layer["tokens"]
        assert once["entries"] == 1 and per_layer["entries"] == 0
        assert per_layer["gathers"] >= per_layer["forwards"] * got["layers"]
        assert per_layer["gathers"] > once["gathers"]
        assert got["reference_hooks"][0] == got["reference_hooks"][1] > 0


@pytest.mark.slow
def test_with_packed_kernels_the_logits_agree_within_1e5(ranks):
    for got in ranks:
        per_layer, once = got["logits_per_layer"], got["logits_gathered"]
        assert per_layer["packed"] == 0 < once["packed"]     # only whole weights are packed
        assert once["tokens"] == per_layer["tokens"]
        assert torch.allclose(torch.tensor(once["logits"]), torch.tensor(per_layer["logits"]),
                              atol=1e-5, rtol=0)


@pytest.mark.slow
def test_the_engine_is_as_before_after_a_gathered_phase(ranks):
    for got in ranks:
        assert got["hooks_after"] == got["hooks_before"] > 0
        assert got["whole_at_rest"] == 0         # every parameter a partition again
        assert got["scores_equal"]


@pytest.mark.slow
def test_auto_is_decided_alike_on_every_rank(ranks):
    for got in ranks:
        assert got["decide_auto"] is True           # the tiny model fits in host memory
        assert got["decide_auto_rank1_full"] is False   # rank 1 has no room: neither gathers
        assert got["decide_never"] is False


def test_auto_rule_counts_whole_weights_against_half_the_free_memory():
    cfg = config.load("tiny", overrides=["model.tiny_hidden=32"])
    model, _ = models.load(cfg.model)
    size = sum(p.numel() * 4 for p in model.parameters())
    assert gathered.whole_bytes(model) == size
    assert gathered.whole_bytes(model, model) == 2 * size
    assert gathered.fits(size, 2 * size) and not gathered.fits(size + 1, 2 * size)
    assert gathered.free_bytes(torch.device("cpu")) > 0
    # nothing partitioned: nothing to gather, whatever the setting
    assert gathered.decide("always", model) is False and gathered.decide("auto", model) is False
    with gathered.weights(model, True) as m:
        assert m is model
    with pytest.raises(ValueError, match="train.gather_for_generation: 'on'; one of auto"):
        gathered.decide("on", model)


def test_config_key_accepts_its_three_values_and_names_them_otherwise():
    assert config.load("tiny").train.gather_for_generation == "auto"
    for value in ("always", "never"):
        cfg = config.load("tiny", overrides=[f"train.gather_for_generation={value}"])
        assert cfg.train.gather_for_generation == value
    with pytest.raises(config.ConfigError, match="train.gather_for_generation"):
        config.load("tiny", overrides=["train.gather_for_generation=sometimes"])
