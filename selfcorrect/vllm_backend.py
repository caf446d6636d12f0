"""Generation with vLLM colocated with training, the way vLLM documents it for RLHF
(EXPERIMENTAL, UNVERIFIED ON GPU: vLLM needs a CUDA GPU and is not installed on the CPU
machines this project is tested on; everything here is tested on CPU against a fake engine
that records calls, tests/test_vllm_backend.py; docs/vllm.md).

One engine per training process (`engine_kwargs`): `distributed_executor_backend=
"external_launcher"`, so vLLM joins the launcher's ranks (RANK, LOCAL_RANK, WORLD_SIZE from
the DeepSpeed launcher) and each engine sits on its own rank's GPU, tensor parallel 1 (one
data-parallel engine per rank); V1's engine core runs in this process, so the driver worker's
model is reachable in place (`driver_model`) and weights never travel through collective_rpc.

A step with the backend (train.loop.run_stage):

    backend = VLLMBackend(folder, rank=rank, seed=train.seed, device=engine.device, ...)
    checkpoint.load(engine, ...)              # a resumed run: the checkpoint first ...
    backend.update(engine.module)             # ... then the engine from the policy
    for step:
        turns = backend(policy, tok, prompt_ids, temperature=..., max_new_tokens=...)
        backend.sleep()                       # level 1: KV cache freed, weights to host
        ...update...
        backend.update(engine.module)         # wake weights, load them one parameter at a
                                              # time, wake the KV cache, reset prefix cache

Prompts go in as token ids (TokensPrompt), so attempt 2 extends attempt 1's row exactly;
sampling is plain softmax(logits / temperature), every other processor off; each request
carries its own seed, drawn from torch's generator, which the loop seeds per step and
sampling shard with loop.shard_seed (the HF path samples from the same seeded generator), so
a resumed run and a run on fewer ranks draw the same requests' seeds. `logprobs=0` returns
the sampled tokens' log-probs (SampledTurn.logprobs) for truncated importance weighting
(train.vllm_tis_cap, objectives.tis_weights).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterator

import torch

from selfcorrect.rollout import Turn, stop_ids

SEED_RANGE = 2**31 - 1          # vLLM's per-request seed is a Python int; keep it in int32


def sampling_kwargs(*, temperature: float, max_new_tokens: int, stop: list[int],
                    seed: int | None = None) -> dict:
    """vLLM SamplingParams arguments equal to rollout.settings(): tempered softmax only
    (greedy at 0), stopping at the model's end-of-sequence and end-of-turn tokens; the
    sampled token's log-prob returned (logprobs=0)."""
    if not temperature >= 0:
        raise ValueError(f"temperature: must be >= 0 (0 is greedy), got {temperature!r}")
    return dict(n=1, temperature=temperature, top_p=1.0, top_k=-1, min_p=0.0,
                repetition_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0,
                max_tokens=max_new_tokens, stop_token_ids=list(stop), ignore_eos=False,
                skip_special_tokens=True, seed=seed, logprobs=0)


def engine_kwargs(model_path: str, *, rank: int, seed: int, gpu_memory_utilization: float,
                  dtype: str, max_model_len: int | None = None,
                  tensor_parallel_size: int = 1, trust_remote_code: bool = False) -> dict:
    """vllm.LLM arguments for the engine of training rank `rank`: the external launcher (the
    engine joins the launcher's ranks and takes LOCAL_RANK's GPU), sleep mode on, prefix
    caching on (the k samples of a problem share its prompt's prefill). Ranks of one
    tensor-parallel group share a seed; the data-parallel engines each get their own."""
    if tensor_parallel_size < 1:
        raise ValueError(f"tensor_parallel_size: must be >= 1, got {tensor_parallel_size}")
    return dict(model=model_path, tokenizer=model_path, dtype=dtype,
                trust_remote_code=trust_remote_code, tensor_parallel_size=tensor_parallel_size,
                distributed_executor_backend="external_launcher",
                seed=seed + rank // tensor_parallel_size,
                gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                enable_sleep_mode=True, enable_prefix_caching=True,
                # the sampled token's log-prob after temperature (V1's default, raw_logprobs, is
                # before it): what the trainer scores at train.temperature, for TIS
                logprobs_mode="processed_logprobs")


def build_llm(**kwargs):
    """The real engine (GPU only; vllm is the `vllm` extra, containers/trainer-vllm.Dockerfile).
    V1's engine core in this process: the external launcher needs it, and `driver_model`
    reaches the model through it."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    try:
        from vllm import LLM
    except ImportError as err:
        raise ImportError("train.rollout_backend=vllm: vllm is not installed; use the "
                          "trainer-vllm image or `pip install -c containers/requirements-vllm.lock "
                          "'selfcorrect[vllm]'` on a CUDA machine") from err
    return LLM(**kwargs)


def driver_model(llm):
    """The driver worker's model inside an in-process engine (external launcher)."""
    engine = llm.llm_engine
    for path in ("model_executor.driver_worker.worker.model_runner.model",
                 "model_executor.driver_worker.model_runner.model"):
        obj = engine
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
            return obj
        except AttributeError:
            continue
    raise RuntimeError("vLLM engine: no in-process driver worker model (llm.llm_engine."
                       "model_executor.driver_worker...); build it with "
                       "distributed_executor_backend='external_launcher' and "
                       "VLLM_ENABLE_V1_MULTIPROCESSING=0, with the vllm version of "
                       "containers/requirements-vllm.lock")


def weights(model) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of every weight to load into vLLM, one at a time: under ZeRO-3 each
    parameter is gathered alone (deepspeed.zero.GatheredParameters) and released before the
    next; a PEFT model yields its merged weights under the base model's names
    (W + scale * B @ A for each LoRA layer; the adapter's own tensors are not synced)."""
    lora = _lora_layers(model)
    skip = {id(p) for layer in lora.values() for p in _adapter_params(layer)}
    for name, param in model.named_parameters():
        if id(param) in skip:
            continue
        target = _base_name(name)
        layer = lora.get(name.rsplit(".", 2)[0] if ".base_layer." in name else None)
        with _gathered([param] + (_adapter_params(layer) if layer is not None else [])):
            tensor = param.data.detach()
            if layer is not None and name.endswith(".weight"):
                tensor = tensor + _lora_delta(layer).to(tensor.dtype)
            yield target, tensor


def _gathered(params):
    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed

        return deepspeed.zero.GatheredParameters(params)
    from contextlib import nullcontext

    return nullcontext()


def _lora_layers(model) -> dict[str, object]:
    """PEFT LoRA layers by their module name (empty for a plain model)."""
    return {name: m for name, m in model.named_modules()
            if hasattr(m, "lora_A") and hasattr(m, "base_layer") and hasattr(m, "scaling")}


def _adapter_params(layer) -> list:
    return [p for key in ("lora_A", "lora_B") for m in getattr(layer, key).values()
            for p in m.parameters()] + [p for key in ("lora_embedding_A", "lora_embedding_B")
                                        for p in getattr(layer, key, {}).values()]


def _lora_delta(layer) -> torch.Tensor:
    """The active adapters' W delta of one LoRA Linear (what merge_and_unload adds)."""
    delta = 0
    for key in getattr(layer, "active_adapters", []):
        if key in layer.lora_A and not getattr(layer, "disable_adapters", False):
            a, b = layer.lora_A[key].weight, layer.lora_B[key].weight
            d = (b.float() @ a.float()) * layer.scaling[key]
            delta = delta + (d.T if getattr(layer, "fan_in_fan_out", False) else d)
    return delta if isinstance(delta, torch.Tensor) else torch.zeros(())


def _base_name(name: str) -> str:
    """A PEFT parameter name as the base model (and vLLM) names it."""
    for prefix in ("base_model.model.",):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name.replace(".base_layer.", ".")


@dataclass
class SampledTurn(Turn):
    logprobs: list[float] = field(default_factory=list)   # the sampler's log pi(token)


def to_turn(prompt_ids: list[int], token_ids: list[int], text: str, finish_reason: str | None,
            stop_reason: int | str | None = None, logprobs: list | None = None) -> SampledTurn:
    """A Turn from one vLLM completion, with the stop token in its tokens: vLLM leaves a
    stop_token_ids match out of token_ids (it reports it as stop_reason); put back, so the
    row the update scores holds every action the policy took (its sampler log-prob unknown:
    NaN, weight 1 under TIS). logprobs: vLLM's per-token {token id: Logprob} (logprobs=0).

    >>> to_turn([1, 2], [5, 6], "ab", "stop", 9).ids, to_turn([1], [5, 9], "a", "stop", None).ids
    ([5, 6, 9], [5, 9])
    >>> to_turn([1], [5, 6], "ab", "length").truncated
    True
    """
    ids = list(token_ids)
    lps = [_logprob(entry, tok) for entry, tok in zip(logprobs, ids)] if logprobs else \
        [float("nan")] * len(ids)
    if finish_reason == "stop" and isinstance(stop_reason, int) and (not ids or ids[-1] != stop_reason):
        ids.append(stop_reason)
        lps.append(float("nan"))
    return SampledTurn(list(prompt_ids), ids, text, truncated=finish_reason == "length",
                       logprobs=lps)


def _logprob(entry, token: int) -> float:
    value = entry[token] if isinstance(entry, dict) else entry
    return float(getattr(value, "logprob", value))


def sampler_logprobs(episodes, mask1: torch.Tensor, mask2: torch.Tensor) -> torch.Tensor:
    """The sampler's log-probs laid out like scoring.pack_episodes' masks ([n, L]); NaN where
    unknown (a turn not sampled by vLLM, the stop token vLLM strips)."""
    out = torch.full(mask1.shape, float("nan"))
    for row, e in enumerate(episodes):
        for mask, turn in ((mask1, e.first), (mask2, e.second)):
            where = mask[row].bool().nonzero().flatten()
            lps = getattr(turn, "logprobs", None)
            if lps and len(lps) == len(where):
                out[row, where] = torch.tensor(lps, dtype=torch.float32)
    return out


class VLLMBackend:
    """A colocated vLLM engine generating the rollouts (drop-in for rollout.generate)."""

    def __init__(self, model_path: str, *, rank: int = 0, seed: int = 0,
                 gpu_memory_utilization: float = 0.3, dtype: str = "bfloat16",
                 max_model_len: int | None = None, device: torch.device | str | None = None,
                 llm=None, trust_remote_code: bool = False):
        self.kwargs = engine_kwargs(model_path, rank=rank, seed=seed, dtype=dtype,
                                    gpu_memory_utilization=gpu_memory_utilization,
                                    max_model_len=max_model_len,
                                    trust_remote_code=trust_remote_code)
        self.llm = llm if llm is not None else build_llm(**self.kwargs)
        self.asleep = False
        if device is not None:
            self.check_device(device)

    def check_device(self, device) -> None:
        """The engine's weights sit on this rank's device (not every engine on GPU 0)."""
        got = next(driver_model(self.llm).parameters()).device
        want = torch.device(device)
        if got.type != want.type or (want.index is not None and got.index != want.index):
            raise RuntimeError(f"vLLM engine on {got}, training rank on {want}: start training "
                               "with the DeepSpeed launcher (it sets LOCAL_RANK) so the "
                               "external-launcher engine takes this rank's GPU")

    def __call__(self, model, tokenizer, prompts: list[list[int]], *, temperature: float,
                 max_new_tokens: int, batch_size: int = 0, desc: str = "generate",
                 synced_gpus: bool = False) -> list[Turn]:
        if self.asleep:
            raise RuntimeError("vLLM engine asleep: call update(policy) after the optimiser step")
        stop = stop_ids(model, tokenizer)
        seeds = request_seeds(len(prompts))
        params = [sampling_params(sampling_kwargs(temperature=temperature, seed=s, stop=stop,
                                                  max_new_tokens=max_new_tokens)) for s in seeds]
        # vLLM's TokensPrompt is a TypedDict: this dict is one
        outs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompts], params,
                                 use_tqdm=False)
        return [to_turn(prompt, o.token_ids, o.text, o.finish_reason, o.stop_reason, o.logprobs)
                for prompt, o in ((p, out.outputs[0]) for p, out in zip(prompts, outs))]

    def sleep(self) -> None:
        """Before the update: level 1 frees the KV cache and moves the weights to host memory."""
        if not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def update(self, model) -> int:
        """Load the policy's weights into the engine, in place: weights woken first, loaded
        one (gathered) parameter at a time, then the KV cache woken and the prefix cache
        reset (cached prefixes were computed with the old weights). Returns the count."""
        if self.asleep:
            self.llm.wake_up(tags=["weights"])
        target, n = driver_model(self.llm), 0
        for name, tensor in weights(model):
            target.load_weights(weights=[(name, tensor)])
            n += 1
        if self.asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self.asleep = False
        self.llm.reset_prefix_cache()
        return n

    sync = update


def sampling_params(kwargs: dict):
    """vllm.SamplingParams(**kwargs); the plain dict where vLLM is not installed (only the
    CPU tests' fake engine, which reads the same fields)."""
    try:
        from vllm import SamplingParams
    except ImportError:
        return dict(kwargs)
    return SamplingParams(**kwargs)


def request_seeds(n: int) -> list[int]:
    """One sampling seed per request, drawn from torch's generator (seeded per step and
    shard by the loop: loop.shard_seed)."""
    return torch.randint(0, SEED_RANGE, (n,)).tolist()
