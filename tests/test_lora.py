"""LoRA (train.lora_rank > 0) on the tiny model through real DeepSpeed engines (CPU, one process).

The reference is the policy with its adapter off (no second copy), an update moves the
adapter only, checkpoints hold the adapter and resume the same trajectory, and the saved model
is merged weights that reproduce the adapted model, loadable with from_pretrained alone.
"""
import json

import pytest
import torch

from selfcorrect import config, models
from selfcorrect.train import engine as ds_engine
from selfcorrect.train import lora, loop

from test_train_loop import attempt2_logprob, episode
from test_train_resume import PROBLEMS, assert_same_trajectory, parity_reward, run, steps_of

LORA = ["train.lora_rank=4", "train.lora_alpha=8"]
ADAPTER_KEY = "transformer.h.0.attn.c_attn.lora_B.default.weight"
BASE_KEY = "transformer.h.0.attn.c_attn.base_layer.weight"
INPUT = torch.tensor([[464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13]])


def lora_config(*overrides):
    return config.load("tiny", overrides=[*LORA, *overrides])


def randomised_adapter(model):
    """Non-zero adapter weights (a fresh adapter has B = 0, equal to the base by construction)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


def logits(model, ids=INPUT):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_adapter_off_forward_is_the_base_model_exactly():
    cfg = lora_config()
    base = models.load(cfg.model)[0]
    policy = randomised_adapter(lora.wrap(models.load(cfg.model)[0], cfg.train))
    reference = lora.BaseView(policy)
    assert torch.equal(logits(reference), logits(base))
    assert not torch.allclose(logits(policy), logits(base))       # the adapter does something
    assert torch.equal(logits(reference), logits(base))           # and is on again after the call
    trainable, total = lora.trainable(policy)
    assert 0 < trainable < total / 100
    assert all(("lora_" in n) == p.requires_grad for n, p in policy.named_parameters())


def test_lora_dropout_acts_in_the_update_only():
    cfg = lora_config("train.lora_dropout=0.5")
    base = models.load(cfg.model)[0]
    policy = randomised_adapter(lora.wrap(models.load(cfg.model)[0], cfg.train))
    assert torch.equal(logits(policy), logits(policy))          # eval mode: no dropout
    lora.dropout_on(policy)                                     # what train_step does
    assert not torch.equal(logits(policy), logits(policy))
    assert torch.equal(logits(lora.BaseView(policy)), logits(base))   # the reference: none
    policy.eval()                                               # what generation does
    assert torch.equal(logits(policy), logits(policy))


def test_reference_generates_with_the_adapter_off():
    from selfcorrect import rollout

    cfg = lora_config()
    base, tok = models.load(cfg.model)
    policy = randomised_adapter(lora.wrap(models.load(cfg.model)[0], cfg.train))
    kw = dict(temperature=0.0, max_new_tokens=6, batch_size=2)
    prompts = [[464, 2068, 7586], [21831, 18045]]
    assert [t.ids for t in rollout.generate(lora.BaseView(policy), tok, prompts, **kw)] == \
        [t.ids for t in rollout.generate(base, tok, prompts, **kw)]


def test_one_lora_stage2_step_raises_rewarded_and_lowers_penalised_attempt2():
    cfg = lora_config()
    train = cfg.train
    engine, reference, tok = ds_engine.policy_and_reference(cfg, None, None, micro_batch_size=2)
    assert isinstance(reference, lora.BaseView)
    prompt = "User: What is 2 + 2?\n\nAssistant: "
    eps = [episode(tok, prompt, " 5", " 4", 0),          # wrong -> right
           episode(tok, prompt, " 5", " banana", 1)]     # wrong -> wrong
    r1, r2 = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    before = [attempt2_logprob(engine.module, tok, e, train.temperature) for e in eps]
    base_before = engine.module.state_dict()[BASE_KEY].clone()
    stats = loop.train_step(engine, reference, eps, r1, r2, stage=2, train=train,
                            pad_id=tok.pad_token_id)
    after = [attempt2_logprob(engine.module, tok, e, train.temperature) for e in eps]
    assert after[0] > before[0] and after[1] < before[1], (before, after)
    assert stats["kl_t1"] == pytest.approx(0.0, abs=1e-6)     # B = 0: policy == reference
    assert torch.equal(engine.module.state_dict()[BASE_KEY], base_before)   # base frozen
    assert engine.module.state_dict()[ADAPTER_KEY].abs().sum() > 0
    # the reference (adapter off) did not move
    assert attempt2_logprob(reference, tok, eps[0], train.temperature) == pytest.approx(before[0], abs=1e-5)


def test_saved_model_is_merged_loads_alone_and_reproduces_the_adapted_logits(tmp_path):
    from transformers import AutoModelForCausalLM

    cfg = lora_config()
    engine, _, tok = ds_engine.policy_and_reference(cfg, None, None, micro_batch_size=2)
    randomised_adapter(engine.module)
    ds_engine.save(engine, tok, str(tmp_path))
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "tokenizer.json").is_file()
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path))
    assert not lora.is_lora(merged)
    assert not any("lora" in k or "base_layer" in k for k in merged.state_dict())
    assert torch.allclose(logits(merged), logits(engine.module), atol=1e-5)
    assert not torch.allclose(logits(merged), logits(models.load(cfg.model)[0]), atol=1e-3)


def test_vllm_sync_of_the_lora_policy_is_the_saved_merged_model(tmp_path):
    """What the vLLM backend loads from the training module (the model with LoRA layers, not
    PEFT's wrapper) is the merged model the run saves."""
    from transformers import AutoModelForCausalLM

    from selfcorrect import vllm_backend

    cfg = lora_config()
    model, tok = models.load(cfg.model)
    policy = randomised_adapter(lora.wrap(model, cfg.train))
    synced = dict(vllm_backend.weights(policy))
    lora.save_merged(policy, tok, str(tmp_path))
    merged = dict(AutoModelForCausalLM.from_pretrained(str(tmp_path)).named_parameters())
    assert set(synced) == set(merged)
    for name, p in merged.items():
        assert torch.allclose(synced[name], p, atol=1e-6), name


def test_sft_baseline_with_lora_trains_the_adapter_and_saves_merged(tmp_path):
    from transformers import AutoModelForCausalLM

    from selfcorrect.train import sft

    cfg = lora_config()
    model, tok = models.load(cfg.model)
    base = models.load(cfg.model)[0]
    msgs = [{"role": "user", "content": "1+2"}, {"role": "assistant", "content": "3"}]
    rows = sft.turn_rows(tok, msgs)
    engine, history = sft.train(model, tok, rows, sft.SFTConfig(steps=6, batch_size=2,
                                                                learning_rate=1e-2), cfg.train)
    assert history[-1]["loss"] < history[0]["loss"]
    assert lora.is_lora(engine.module)
    sft.save(engine, tok, str(tmp_path), config=cfg.to_dict(), history=history)
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path))
    assert torch.allclose(logits(merged), logits(engine.module), atol=1e-5)
    assert not torch.allclose(logits(merged), logits(base), atol=1e-4)


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """Stage II with LoRA: 4 steps uninterrupted, and 2 steps + a kill + a resume."""
    cfg = lora_config("train.stage2_steps=4", "train.checkpoint_every=2",
                      "train.keep_checkpoints=1", "train.gradient_accumulation_steps=2",
                      "train.offline_first_attempts=1")
    root = tmp_path_factory.mktemp("lora-resume")
    run(cfg, root / "whole")
    run(cfg, root / "killed", stop_after=3)
    run(cfg, root / "killed")
    return cfg, root


@pytest.mark.slow
def test_lora_resume_continues_the_same_trajectory(resumed):
    from safetensors.torch import load_file

    cfg, root = resumed
    assert_same_trajectory(steps_of(root / "whole"), steps_of(root / "killed"))
    a = load_file(str(root / "whole" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(root / "killed" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert any(a[k].abs().sum() > 0 for k in a if "lora_B" in k)


@pytest.mark.slow
def test_lora_checkpoint_holds_the_adapter_not_the_base_weights(resumed):
    cfg, root = resumed
    ckpt = next((root / "killed" / "checkpoints").rglob("mp_rank_00_model_states.pt"))
    module = torch.load(ckpt, weights_only=False)["module"]
    adapter = {k: v for k, v in module.items() if "lora_" in k}
    # DeepSpeed leaves out frozen parameters by name; GPT-2's head is the embedding under a
    # second name, so it is the one frozen tensor still written
    assert adapter and set(module) - set(adapter) == {"lm_head.weight"}, sorted(module)[:3]
    base = models.load(cfg.model)[0]
    assert sum(v.numel() for v in adapter.values()) < sum(p.numel() for p in base.parameters()) / 100


def test_stage2_continues_stage1s_adapter_on_the_base_model(tmp_path):
    """Stage II starts from Stage I's folder: the policy is the base model plus Stage I's
    adapter (what Stage I produced), the reference the base model."""
    cfg = lora_config("train.stage1_steps=1")
    loop.run_stage(cfg, 1, init_path=None, reference_path=None, problems=PROBLEMS,
                   output_dir=str(tmp_path / "s1"), reward_fn=parity_reward)
    engine, reference, _ = ds_engine.policy_and_reference(cfg, str(tmp_path / "s1"), None,
                                                          micro_batch_size=2)
    stage1 = models.load(cfg.model, str(tmp_path / "s1"))[0]
    assert torch.allclose(logits(engine.module), logits(stage1), atol=1e-5)
    assert torch.equal(logits(reference), logits(models.load(cfg.model)[0]))
    with pytest.raises(ValueError, match="adapter/"):   # a plain folder cannot be the start
        models.save(stage1, models.load(cfg.model)[1], str(tmp_path / "plain"))
        ds_engine.policy_and_reference(cfg, str(tmp_path / "plain"), None, micro_batch_size=2)


def test_zero3_lora_step_trains_the_adapter(tmp_path):
    from transformers import AutoModelForCausalLM

    cfg = lora_config("train.zero_stage=3", "train.gradient_checkpointing=true",
                      "train.stage2_steps=1")
    summary = loop.run_stage(cfg, 2, init_path=None, reference_path=None, problems=PROBLEMS,
                             output_dir=str(tmp_path), reward_fn=parity_reward)
    assert summary["steps"] == 1 and summary["kl_t1"] == pytest.approx(0.0, abs=1e-6)
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path))
    assert not torch.allclose(logits(merged), logits(models.load(cfg.model)[0]), atol=1e-6)
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["r"] == 4


@pytest.mark.parametrize("override, key", [
    ("train.lora_rank=-1", "train.lora_rank"), ("train.lora_dropout=1.5", "train.lora_dropout"),
    ("train.lora_alpha=0", "train.lora_alpha"), ("train.lora_target_modules=,", "lora_target_modules")])
def test_bad_lora_settings_name_the_key(override, key):
    with pytest.raises(config.ConfigError, match=key):
        config.load("tiny", overrides=["train.lora_rank=4", override])


def test_lora_and_reference_offload_exclude_each_other():
    with pytest.raises(config.ConfigError, match="reference_offload"):
        config.load("tiny", overrides=["train.lora_rank=4", "train.zero_stage=3",
                                       "train.reference_offload=true"])


def test_unknown_target_module_names_the_key():
    cfg = lora_config("train.lora_target_modules=no_such_proj")
    with pytest.raises(ValueError, match="train.lora_target_modules"):
        lora.wrap(models.load(cfg.model)[0], cfg.train)


def test_rank_mismatch_with_a_saved_adapter_names_the_folder(tmp_path):
    cfg = lora_config()
    model, tok = models.load(cfg.model)
    lora.save_merged(lora.wrap(model, cfg.train), tok, str(tmp_path))
    other = lora_config("train.lora_rank=8")
    with pytest.raises(ValueError, match="rank 4.*lora_rank is 8"):
        lora.wrap(models.load(cfg.model)[0], other.train, str(tmp_path / "adapter"))


@pytest.mark.slow
def test_two_zero3_ranks_train_the_adapter_as_one_process_does(tmp_path):
    """ZeRO-3 with 2 gloo ranks (tests/lora_ranks.py): the base loaded partitioned, an adapter
    added, one step on half the episodes each gives the adapter one process gets on all."""
    import subprocess
    import sys
    from pathlib import Path

    from selfcorrect import rollout
    from selfcorrect.records import Problem
    from selfcorrect.train import launch

    from test_multirank import env

    cfg = lora_config("train.zero_stage=3", "train.samples_per_problem=2",
                      "train.problems_per_step=2", "train.learning_rate=1e-2")
    model, tok = models.load(cfg.model)
    models.save(model, tok, str(tmp_path / "model"))
    problems = [Problem(id="a", task="math", prompt="What is 2 + 2?", answer="4"),
                Problem(id="b", task="math", prompt="What is 12 + 30?", answer="42")]
    torch.manual_seed(0)
    eps = rollout.two_attempts(model, tok, problems, samples=2, temperature=1.0,
                               max_new_tokens=8, batch_size=4)
    spec = {"config": cfg.to_dict(), "model": str(tmp_path / "model"),
            "prompts": [e.first.prompt_ids for e in eps[::2]],
            "episodes": [[e.first.prompt_ids, e.first.ids, e.second.prompt_ids, e.second.ids]
                         for e in eps]}
    (tmp_path / "in.json").write_text(json.dumps(spec))
    script = Path(__file__).parent / "lora_ranks.py"
    out = {}
    for world in (1, 2):
        done = subprocess.run(["torchrun", "--nproc_per_node", str(world), "--master_port",
                               str(launch.free_port()), str(script), str(tmp_path / "in.json"),
                               str(tmp_path / f"w{world}")], env=env(), capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-4000:]
        out[world] = [json.loads((tmp_path / f"w{world}.{r}.json").read_text()) for r in range(world)]
    one, two = out[1][0], out[2]
    base_tokens = [t.ids for t in rollout.generate(model, tok, spec["prompts"], temperature=1.0,
                                                   max_new_tokens=6, batch_size=2, seed=0)]
    for got in [one, *two]:
        assert got["partitioned"] and got["kl_t1"] == 0.0 and got["kl_t2"] == 0.0
        assert got["generated"] == base_tokens                 # the reference is the base model
    assert two[0]["adapter"] == two[1]["adapter"]
    moved = [k for k, v in one["adapter"].items() if "lora_B" in k and any(v)]
    assert moved
    for key, want in one["adapter"].items():
        assert torch.allclose(torch.tensor(two[0]["adapter"][key]), torch.tensor(want), atol=1e-5), key
