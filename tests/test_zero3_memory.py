"""Memory at real sizes under ZeRO-3, on CPU with 2 gloo ranks (tests/zero3_ranks.py).

Each rank must hold half of each model (policy and frozen reference), loaded partitioned
(zero.Init while from_pretrained reads the folder) rather than whole and then split, and the
partitioned models must compute what the whole model computes in one process: the
reference's log-probs within 1e-5, the same sampled tokens, a KL of exactly 0 at step 0
(policy == reference), and a head that never produced more than one chunk of logits.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from selfcorrect import config, models, rollout
from selfcorrect.records import Problem
from selfcorrect.train import launch, scoring

from test_multirank import env

REPO = Path(__file__).resolve().parents[1]
CHUNK_TOKENS = 8        # the test's chunk: logits of at most 8 tokens at once


def settings(**extra) -> list[str]:
    sets = {"train.zero_stage": 3, "train.samples_per_problem": 2, "train.temperature": 0.7,
            "model.tiny_hidden": 64, **extra}
    return [f"{k}={v}" for k, v in sets.items()]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A saved tiny model, two problems' episodes (2 samples each) sampled from it in one
    process, and prompts for the reference to continue."""
    root = tmp_path_factory.mktemp("zero3")
    cfg = config.load("tiny", overrides=settings())
    model, tok = models.load(cfg.model)
    models.save(model, tok, str(root / "model"))
    problems = [Problem(id="a", task="math", prompt="What is 2 + 2?", answer="4"),
                Problem(id="b", task="math", prompt="What is 12 + 30, in words?", answer="42")]
    torch.manual_seed(0)
    eps = rollout.two_attempts(model, tok, problems, samples=2, temperature=1.0,
                               max_new_tokens=12, batch_size=4)
    prompts = [e.first.prompt_ids for e in eps[::2]]
    return root, cfg, eps, prompts


def run_ranks(root: Path, cfg, eps, prompts, name: str) -> list[dict]:
    spec = {"config": cfg.to_dict(), "model": str(root / "model"), "prompts": prompts,
            "chunk_tokens": CHUNK_TOKENS,
            "episodes": [[e.first.prompt_ids, e.first.ids, e.second.prompt_ids, e.second.ids]
                         for e in eps]}
    (root / f"{name}.json").write_text(json.dumps(spec))
    done = subprocess.run(["torchrun", "--nproc_per_node", "2",
                           "--master_port", str(launch.free_port()),
                           str(REPO / "tests" / "zero3_ranks.py"), str(root / f"{name}.json"),
                           str(root / name)], env=env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads((root / f"{name}.{r}.json").read_text()) for r in (0, 1)]


def single_process(root: Path, cfg, eps, prompts):
    """The whole model in this process, unpartitioned: reference log-probs, tokens, vocabulary."""
    model, tok = models.load(cfg.model, str(root / "model"))
    packed, _, _ = scoring.pack_episodes(eps, tok.pad_token_id, share_prompts=True)
    with torch.no_grad():
        logp = scoring.score(model, packed, cfg.train.temperature)
    turns = rollout.generate(model, tok, prompts, temperature=1.0, max_new_tokens=6,
                             batch_size=len(prompts), seed=0)
    return logp, [t.ids for t in turns], model.config.vocab_size


@pytest.mark.slow
@pytest.mark.parametrize("offload", [False, True], ids=["partitioned", "offloaded"])
def test_two_ranks_hold_half_of_each_model_and_compute_what_one_whole_model_does(base, offload):
    root, _, eps, prompts = base
    cfg = config.load("tiny", overrides=settings(**{
        "train.reference_offload": offload,
        "train.problems_per_step": 2}))
    ranks = run_ranks(root, cfg, eps, prompts, f"ranks-{offload}")
    want_logp, want_tokens, vocab = single_process(root, cfg, eps, prompts)
    rows, width = want_logp.shape
    for got in ranks:
        for name in ("policy", "reference"):
            held = got[name]
            # every parameter partitioned in two (ceil: DeepSpeed pads odd sizes)
            assert held["partition"] == held["ceil_half"] < 0.51 * held["full"], (name, held)
            # whole at rest: only the small parameters DeepSpeed keeps gathered (persistent)
            assert held["whole_at_rest"] == held["persistent"] < 0.1 * held["full"], (name, held)
        # partitioned as it loaded, before any engine (persistence is marked by the engine)
        assert got["loaded"] == got["policy"] | {"whole_at_rest": 0, "persistent": 0}
        assert got["reference_is_engine"]
        assert ("offload_param" in got["reference_zero"]) == offload
        assert torch.allclose(torch.tensor(got["ref_logp"]), want_logp, atol=1e-5)
        assert got["policy_logp"] == got["ref_logp"]                 # same weights, same numbers
        assert got["generated"] == want_tokens
        assert got["kl_t1"] == 0.0 and got["kl_t2"] == 0.0         # exactly: policy == reference
        # the head made one chunk's logits at a time: never the [rows, tokens, vocab] block
        assert got["largest_logits"] == CHUNK_TOKENS * vocab < rows * width * vocab
    assert ranks[0]["ref_logp"] == ranks[1]["ref_logp"]


def test_reference_offload_needs_zero3():
    with pytest.raises(config.ConfigError, match="train.reference_offload: .* train.zero_stage is 2"):
        config.load("tiny", overrides=["train.zero_stage=2", "train.reference_offload=true"])


def test_reference_config_has_no_optimizer_and_offloads_on_request():
    from selfcorrect.train import engine as ds_engine

    for offload in (False, True):
        train = config.load("tiny", overrides=settings(**{"train.reference_offload": offload})).train
        ref = ds_engine.reference_config(train, micro_batch_size=4, gpu=True)
        assert "optimizer" not in ref and "scheduler" not in ref
        assert ref["train_micro_batch_size_per_gpu"] == 4 and ref["bf16"] == {"enabled": True}
        assert ref["zero_optimization"] == ({"stage": 3, "offload_param": {
            "device": "cpu", "pin_memory": True}} if offload else {"stage": 3})


def test_zero3_init_is_on_only_inside_its_block_and_only_for_stage_3():
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    from selfcorrect.train import engine as ds_engine

    train = config.load("tiny", overrides=["train.zero_stage=2"]).train
    with ds_engine.zero3_init(ds_engine.ds_config(train, micro_batch_size=1, gpu=False)):
        assert not is_deepspeed_zero3_enabled()
    with ds_engine.zero3_init(None):
        assert not is_deepspeed_zero3_enabled()
    three = ds_engine.ds_config(config.load("tiny", overrides=["train.zero_stage=3"]).train,
                                micro_batch_size=1, gpu=False)
    with ds_engine.zero3_init(three):
        assert is_deepspeed_zero3_enabled()
    assert not is_deepspeed_zero3_enabled()       # later loads are whole again
