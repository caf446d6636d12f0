"""The vLLM backend on CPU (vLLM itself needs a GPU: experimental, unverified until one runs it).

FakeLLM stands in for the vllm.LLM object only: it holds its own copy of the tiny model (zeroed
until synced, so a generate before the first sync would sample from the wrong policy), loads
weights through the driver model's load_weights as vLLM's models do, samples each request from
its own seed and records every call. Everything around it (engine kwargs, sync, sleep/wake,
seeds, the loop's order, resume, TIS) is the code that runs on GPU.
"""
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from selfcorrect import config, models, rollout
from selfcorrect import vllm_backend as vb
from selfcorrect.config import ConfigError
from selfcorrect.records import Problem
from selfcorrect.train import loop, scoring
from selfcorrect.train import objectives as obj

ROOT = Path(__file__).resolve().parents[1]
PROBLEMS = [Problem(id=f"p{i}", task="math", prompt=f"What is {i} + {i}?", answer=str(2 * i))
            for i in range(4)]


def parity_reward(problem, completion: str) -> float:
    return float(len(completion) % 2 == 0)


class DriverModel(torch.nn.Module):
    """vLLM's model object as far as the backend touches it: parameters and load_weights."""

    def __init__(self, hf, log):
        super().__init__()
        self.hf, self.log, self.loaded = hf, log, 0
        for p in hf.parameters():
            p.data.zero_()

    def load_weights(self, weights):
        weights = list(weights)
        assert len(weights) == 1, "one parameter per load_weights call, never the whole model"
        (name, tensor), = weights
        dict(self.hf.named_parameters())[name].data.copy_(tensor)
        self.log.append(("load", name))


class FakeLLM:
    """Stands in for vllm.LLM: records sleep / wake_up / load / reset / generate."""

    def __init__(self, cfg, log, **kwargs):
        self.kwargs, self.log, self.asleep = kwargs, log, False
        hf, self.tok = models.load(cfg.model)
        model = DriverModel(hf, log)
        runner = SimpleNamespace(model_runner=SimpleNamespace(model=model))
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(
            driver_worker=SimpleNamespace(worker=runner)))
        self.model = model

    def sleep(self, level):
        self.log.append(("sleep", level))
        self.asleep = True

    def wake_up(self, tags=None):
        self.log.append(("wake_up", tuple(tags or ())))
        if "kv_cache" in (tags or ("kv_cache",)):
            self.asleep = False

    def reset_prefix_cache(self):
        self.log.append(("reset_prefix_cache",))

    @torch.no_grad()
    def generate(self, prompts, params, use_tqdm=False):
        assert not self.asleep, "generate on a sleeping engine"
        outs = []
        for prompt, p in zip(prompts, params):
            self.log.append(("generate", p["seed"]))
            gen = torch.Generator().manual_seed(p["seed"])
            ids, lps, stop_reason, finish = list(prompt["prompt_token_ids"]), [], None, "length"
            for _ in range(p["max_tokens"]):
                logits = self.model.hf(torch.tensor([ids])).logits[0, -1].float()
                logp = torch.log_softmax(logits / max(p["temperature"], 1e-6), -1)
                tok = int(torch.multinomial(logp.exp(), 1, generator=gen))
                if tok in p["stop_token_ids"]:
                    stop_reason, finish = tok, "stop"
                    break
                ids.append(tok)
                lps.append({tok: SimpleNamespace(logprob=float(logp[tok]))})
            new = ids[len(prompt["prompt_token_ids"]):]
            outs.append(SimpleNamespace(outputs=[SimpleNamespace(
                token_ids=new, text=self.tok.decode(new, skip_special_tokens=True),
                finish_reason=finish, stop_reason=stop_reason, logprobs=lps)]))
        return outs


@pytest.fixture
def tiny_folder(tmp_path):
    """The tiny model saved as a folder: the engine's config and tokenizer come from one."""
    cfg = config.load("tiny")
    model, tok = models.load(cfg.model)
    model.save_pretrained(tmp_path / "init")
    tok.save_pretrained(tmp_path / "init")
    return str(tmp_path / "init")


@pytest.fixture
def fake_engines(monkeypatch):
    """Every engine the loop builds, with its kwargs and call log."""
    built = []

    def build(**kwargs):
        engine = FakeLLM(config.load("tiny"), [], **kwargs)
        built.append(engine)
        return engine

    monkeypatch.setattr(vb, "build_llm", build)
    return built


# ---------------------------------------------------------------- pure parts

def test_sampling_matches_the_hf_rollout_settings():
    model, tok = models.load(config.load("tiny").model)
    hf = rollout.settings(model, tok, temperature=0.7, max_new_tokens=12)
    got = vb.sampling_kwargs(temperature=0.7, max_new_tokens=12, stop=rollout.stop_ids(model, tok),
                             seed=5)
    assert got["temperature"] == hf.temperature and got["max_tokens"] == hf.max_new_tokens
    assert got["stop_token_ids"] == hf.eos_token_id
    assert (got["top_p"], got["top_k"], got["min_p"], got["repetition_penalty"]) == (1.0, -1, 0.0, 1.0)
    assert got["seed"] == 5 and got["logprobs"] == 0      # the sampled token's log-prob back
    with pytest.raises(ValueError, match="temperature"):
        vb.sampling_kwargs(temperature=-1, max_new_tokens=1, stop=[])


def test_engine_kwargs_put_one_engine_per_rank_on_the_external_launcher():
    ranks = [vb.engine_kwargs("/m", rank=r, seed=7, gpu_memory_utilization=0.3, dtype="bfloat16")
             for r in range(4)]
    for kw in ranks:
        assert kw["distributed_executor_backend"] == "external_launcher"
        assert kw["tensor_parallel_size"] == 1 and kw["enable_sleep_mode"] is True
        assert kw["enable_prefix_caching"] is True and kw["model"] == "/m"
        assert kw["logprobs_mode"] == "processed_logprobs"    # tempered, as the trainer scores
    assert [kw["seed"] for kw in ranks] == [7, 8, 9, 10]          # a seed per rank
    tp2 = [vb.engine_kwargs("/m", rank=r, seed=7, gpu_memory_utilization=0.3, dtype="bfloat16",
                            tensor_parallel_size=2)["seed"] for r in range(4)]
    assert tp2 == [7, 7, 8, 8]                  # one tensor-parallel group samples alike
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        vb.engine_kwargs("/m", rank=0, seed=0, gpu_memory_utilization=0.3, dtype="float32",
                         tensor_parallel_size=0)


def test_without_vllm_building_the_engine_names_the_extra():
    try:
        import vllm  # noqa: F401
        pytest.skip("vllm is installed here")
    except ImportError:
        pass
    with pytest.raises(ImportError, match="trainer-vllm image|selfcorrect\\[vllm\\]"):
        vb.VLLMBackend("some/model")


def test_an_engine_on_another_device_than_the_rank_is_refused():
    log = []
    llm = FakeLLM(config.load("tiny"), log)
    vb.VLLMBackend("/m", llm=llm, device="cpu")             # on the rank's device: fine
    with pytest.raises(RuntimeError, match="LOCAL_RANK"):
        vb.VLLMBackend("/m", llm=llm, device="meta")


def test_to_turn_keeps_the_sampler_logprobs_and_the_stop_token():
    t = vb.to_turn([1], [5, 6], "ab", "stop", 9, [{5: SimpleNamespace(logprob=-0.5)}, {6: -1.0}])
    assert t.ids == [5, 6, 9] and t.logprobs[:2] == [-0.5, -1.0] and t.logprobs[2] != t.logprobs[2]


# ---------------------------------------------------------------- sync, sleep, wake

def test_update_loads_every_parameter_one_at_a_time_and_wakes_around_it():
    policy, _ = models.load(config.load("tiny").model)
    log = []
    llm = FakeLLM(config.load("tiny"), log)
    backend = vb.VLLMBackend("/m", llm=llm)
    backend.sleep()
    assert backend.update(policy) == len(list(policy.parameters()))
    names = [name for name, _ in policy.named_parameters()]
    assert log[:2] == [("sleep", 1), ("wake_up", ("weights",))]
    assert log[2:-2] == [("load", n) for n in names]
    assert log[-2:] == [("wake_up", ("kv_cache",)), ("reset_prefix_cache",)]
    for (n, p), q in zip(policy.named_parameters(), llm.model.hf.parameters()):
        assert torch.equal(p, q), n
    with pytest.raises(RuntimeError, match="asleep"):
        backend.sleep() or backend(policy, None, [[1]], temperature=1.0, max_new_tokens=1)


def test_weights_under_zero3_are_gathered_one_at_a_time():
    """A real single-process ZeRO-3 engine: while a weight is handed over, only its parameter
    is gathered (every other one stays a partition)."""
    from selfcorrect.train import engine as ds_engine

    cfg = config.load("tiny", overrides=["train.zero_stage=3"])
    policy, _ = models.load(cfg.model)
    full = {n: p.detach().clone() for n, p in policy.named_parameters()}
    engine = ds_engine.build(policy, cfg.train, micro_batch_size=1)
    seen = 0
    for name, tensor in vb.weights(engine.module):
        gathered = [n for n, p in engine.module.named_parameters() if p.data.numel() > 0]
        assert gathered == [name], gathered
        assert torch.equal(tensor, full[name])
        seen += 1
    assert seen == len(full)


def test_peft_model_syncs_merged_weights_under_the_base_names():
    peft = pytest.importorskip("peft")
    model, _ = models.load(config.load("tiny").model)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"],
                                                      fan_in_fan_out=True, init_lora_weights=False))
    synced = dict(vb.weights(lora))
    merged = lora.merge_and_unload()                     # PEFT's own merge
    assert set(synced) == {n for n, _ in merged.named_parameters()}
    for n, p in merged.named_parameters():
        assert torch.allclose(synced[n], p, atol=1e-6), n
    assert not any("lora" in n for n in synced)


# ---------------------------------------------------------------- TIS

def test_tis_weights_are_the_capped_ratio_and_scale_the_policy_gradient():
    logp = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    sampler = torch.tensor([[-1.5, -1.0, float("nan")]])
    w = obj.tis_weights(logp, sampler, cap=1.5)
    assert torch.allclose(w, torch.tensor([[1.5, 0.36787944, 1.0]]))  # min(e^.5, 1.5), e^-1, unknown
    assert not w.requires_grad
    terms = obj.stage_terms(1, torch.tensor([[1.0]]), torch.tensor([[1.0]]), alpha=1.0, beta1=0.0,
                            beta2=0.0, baseline_kind="none")
    mask1, mask2 = torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([[0.0, 0.0, 1.0]])
    ref = logp.detach()
    plain, _ = obj.episode_loss(logp, ref, mask1, mask2, terms, slice(0, 1), normaliser=1.0)
    g_plain, = torch.autograd.grad(plain, logp)
    weighted, _ = obj.episode_loss(logp, ref, mask1, mask2, terms, slice(0, 1), normaliser=1.0,
                                   token_weights=w)
    g_w, = torch.autograd.grad(weighted, logp)
    assert torch.allclose(g_w, g_plain * w)
    with pytest.raises(ValueError, match="vllm_tis_cap"):
        obj.tis_weights(logp, sampler, cap=0)


def test_sampler_logprobs_line_up_with_the_scored_tokens():
    t1 = rollout.Turn([1, 2], [3, 4], "", False)
    t1 = vb.SampledTurn(t1.prompt_ids, t1.ids, "", False, logprobs=[-0.1, -0.2])
    t2 = vb.SampledTurn([1, 2, 3, 4, 7], [8], "", False, logprobs=[-0.3])
    e = rollout.Episode(PROBLEMS[0], 0, t1, t2)
    _, mask1, mask2 = scoring.pack_episodes([e], pad_id=0, share_prompts=True)
    got = vb.sampler_logprobs([e], mask1, mask2)
    assert got[mask1.bool()].tolist() == pytest.approx([-0.1, -0.2])
    assert got[mask2.bool()].tolist() == pytest.approx([-0.3])
    assert torch.isnan(got[(mask1 + mask2) == 0]).all()


def test_tis_cap_needs_the_vllm_backend():
    with pytest.raises(ConfigError, match="vllm_tis_cap"):
        config.load("tiny", overrides=["train.vllm_tis_cap=2"])
    with pytest.raises(ConfigError, match="vllm_tis_cap"):
        config.load("tiny", overrides=["train.rollout_backend=vllm", "train.vllm_tis_cap=-1"])


# ---------------------------------------------------------------- the loop with the engine

def vllm_run(tiny_folder, out, *extra, **kw):
    cfg = config.load("tiny", overrides=["train.rollout_backend=vllm", "train.stage1_steps=2",
                                         "train.problems_per_step=2", "train.samples_per_problem=2",
                                         "train.sampling_shard=1", "train.checkpoint_every=1",
                                         f"output_dir={out}", *extra])
    return loop.run_stage(cfg, 1, init_path=tiny_folder, reference_path=None, problems=PROBLEMS,
                          output_dir=str(out), reward_fn=parity_reward, **kw), cfg


def events(log):
    """The log with each run of loads as one ('load', n) and generates as ('generate', n)."""
    out = []
    for e in log:
        if out and out[-1][0] == e[0] and e[0] in ("load", "generate"):
            out[-1] = (e[0], out[-1][1] + 1)
        else:
            out.append((e[0], 1) if e[0] in ("load", "generate") else e)
    return out


def expected_seeds(cfg, step: int, shard: int, n: int) -> list[int]:
    torch.manual_seed(loop.shard_seed(cfg.train.seed, 1, step, shard))
    return vb.request_seeds(n)


@pytest.mark.slow
def test_loop_syncs_sleeps_wakes_and_seeds_each_request(tiny_folder, tmp_path, fake_engines):
    vllm_run(tiny_folder, tmp_path / "run", "train.vllm_tis_cap=2")
    (engine,) = fake_engines
    assert engine.kwargs["distributed_executor_backend"] == "external_launcher"
    assert engine.kwargs["seed"] == 0 and engine.kwargs["model"] == tiny_folder
    n = len(list(models.load(config.load("tiny").model)[0].parameters()))
    # start-up: the policy loaded before the first generate; per step (2 shards x 2 attempts
    # x 2 samples): generate, sleep, update (wake weights, loads, wake KV cache, reset)
    step = [("generate", 8), ("sleep", 1), ("wake_up", ("weights",)), ("load", n),
            ("wake_up", ("kv_cache",)), ("reset_prefix_cache",)]
    assert events(engine.log) == [("load", n), ("reset_prefix_cache",)] + step + step
    seeds = [e[1] for e in engine.log if e[0] == "generate"]
    cfg = config.load("tiny", overrides=["train.seed=0"])
    for s in range(2):
        for shard in range(2):
            first = seeds[s * 8 + shard * 4:][:2]        # attempt 1's two requests of the shard
            assert first == expected_seeds(cfg, s, shard, 2), (s, shard)


@pytest.mark.slow
def test_resume_syncs_the_checkpointed_policy_before_the_first_generate(tiny_folder, tmp_path,
                                                                           fake_engines):
    vllm_run(tiny_folder, tmp_path / "full")
    vllm_run(tiny_folder, tmp_path / "cut", stop_after=1)
    resumed, _ = vllm_run(tiny_folder, tmp_path / "cut")
    assert resumed["resumed_at"] == 1.0
    whole, cut, again = fake_engines
    first_generate = [e[0] for e in again.log].index("generate")
    assert ("reset_prefix_cache",) in again.log[:first_generate]
    assert all(e[0] == "load" for e in again.log[:first_generate - 1])
    gen = lambda llm: [e[1] for e in llm.log if e[0] == "generate"]  # noqa: E731
    assert gen(again) == gen(whole)[8:]          # step 2 draws the same requests' seeds
    losses = lambda out: [s["loss"] for s in json.loads(  # noqa: E731
        (out / "metrics.json").read_text())["steps"]]
    assert losses(tmp_path / "cut") == pytest.approx(losses(tmp_path / "full"), abs=1e-6)


# ---------------------------------------------------------------- the image's lock

def test_vllm_lock_pins_vllm_and_the_torch_it_requires():
    lock = (ROOT / "containers/requirements-vllm.lock").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", lock, re.M))
    assert "vllm" in pins and "deepspeed" in pins and "transformers" in pins
    need = re.search(r"^# vllm==(\S+) requires torch==(\S+)$", lock, re.M)
    assert need and need.group(1) == pins["vllm"] and pins["torch"] == need.group(2)
    assert "selfcorrect" not in pins
    docker = (ROOT / "containers/trainer-vllm.Dockerfile").read_text()
    assert "requirements-vllm.lock" in docker and f"torch=={pins['torch']}" in docker
    allowed = {line[1:] for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")}
    for src in re.findall(r"^COPY (?!--from)(\S+)", docker, re.M):
        assert src in allowed, f".dockerignore keeps {src} out of the build context"
    extra = re.search(r'^vllm = \[(.*)\]$', (ROOT / "pyproject.toml").read_text(), re.M)
    from packaging.requirements import Requirement

    assert extra and pins["vllm"] in Requirement(extra.group(1).strip('"')).specifier
