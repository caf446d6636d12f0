"""Generation with vLLM on GPUs, colocated with training (as TRL and verl do). UNVERIFIED: vLLM
needs a CUDA GPU and does not install on the CPU machines this project is tested on; the parts
that do not need vLLM (sampling settings, turning outputs into Turns, the weights to sync) are
unit-tested on CPU (tests/test_vllm_backend.py).

The backend is a drop-in for rollout.generate (same arguments, same Turns): prompts go in as
token ids (vLLM's TokensPrompt), so attempt 2 still extends attempt 1's row exactly, and
sampling is plain softmax(logits / temperature) with every other processor off, so the update
scores the tokens under the distribution that sampled them. After each optimiser step the
trainer calls `sync(policy)`: the policy's weights are loaded into vLLM's copy in place (under
ZeRO-3 gathered one parameter at a time).

    backend = VLLMBackend(model_path, gpu_memory_utilization=0.3)
    turns = backend(policy, tokenizer, prompt_ids, temperature=1.0, max_new_tokens=512, batch_size=64)
    ...update...
    backend.sync(policy)
"""
from __future__ import annotations

from typing import Iterator

from selfcorrect.rollout import Turn, stop_ids


def sampling_kwargs(*, temperature: float, max_new_tokens: int, stop: list[int], seed: int | None = None) -> dict:
    """vLLM SamplingParams arguments equal to rollout.settings(): tempered softmax only
    (greedy at 0), stopping at the model's end-of-sequence and end-of-turn tokens."""
    if not temperature >= 0:
        raise ValueError(f"temperature: must be >= 0 (0 is greedy), got {temperature!r}")
    return dict(n=1, temperature=temperature, top_p=1.0, top_k=-1, min_p=0.0,
                repetition_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0,
                max_tokens=max_new_tokens, stop_token_ids=list(stop), ignore_eos=False,
                skip_special_tokens=True, seed=seed)


def to_turn(prompt_ids: list[int], token_ids: list[int], text: str, finish_reason: str | None,
            stop_reason: int | str | None = None) -> Turn:
    """A Turn from one vLLM completion, with the stop token in its tokens: vLLM leaves a
    stop_token_ids match out of token_ids (it reports it as stop_reason); put back, so the
    row the update scores holds every action the policy took.

    >>> to_turn([1, 2], [5, 6], "ab", "stop", 9).ids, to_turn([1], [5, 9], "a", "stop", None).ids
    ([5, 6, 9], [5, 9])
    >>> to_turn([1], [5, 6], "ab", "length").truncated
    True
    """
    ids = list(token_ids)
    if finish_reason == "stop" and isinstance(stop_reason, int) and (not ids or ids[-1] != stop_reason):
        ids.append(stop_reason)
    return Turn(list(prompt_ids), ids, text, truncated=finish_reason == "length")


def weights(model) -> Iterator[tuple[str, object]]:
    """(name, tensor) of every parameter to load into vLLM; ZeRO-3 partitions are gathered
    one at a time (deepspeed.zero.GatheredParameters)."""
    for name, param in model.named_parameters():
        if hasattr(param, "ds_id"):
            import deepspeed

            with deepspeed.zero.GatheredParameters([param]):
                yield name, param.data.detach().clone()
        else:
            yield name, param.data.detach()


class VLLMBackend:
    """A colocated vLLM engine generating the rollouts; `sync` after every update."""

    def __init__(self, model_path: str, *, gpu_memory_utilization: float = 0.3,
                 dtype: str = "bfloat16", max_model_len: int | None = None, seed: int = 0):
        from vllm import LLM     # GPU only: not installed on the CPU machines

        self.llm = LLM(model=model_path, gpu_memory_utilization=gpu_memory_utilization,
                       dtype=dtype, max_model_len=max_model_len, seed=seed,
                       enable_prefix_caching=True)   # the k samples share the prompt's prefill
        self.seed = seed

    def __call__(self, model, tokenizer, prompts: list[list[int]], *, temperature: float,
                 max_new_tokens: int, batch_size: int = 0, desc: str = "generate",
                 synced_gpus: bool = False) -> list[Turn]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        stop = stop_ids(model, tokenizer)
        params = SamplingParams(**sampling_kwargs(temperature=temperature,
                                                  max_new_tokens=max_new_tokens, stop=stop))
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts],
                                 params, use_tqdm=False)
        return [to_turn(prompt, out.outputs[0].token_ids, out.outputs[0].text,
                        out.outputs[0].finish_reason, out.outputs[0].stop_reason)
                for prompt, out in zip(prompts, outs)]

    def sync(self, model) -> None:
        """Load the policy's current weights into vLLM's model (in place, no restart)."""
        self.llm.collective_rpc(_load_weights, args=(list(weights(model)),))
        self.llm.reset_prefix_cache()     # cached prefixes were computed with the old weights


def _load_weights(worker, named: list) -> None:
    """Run in each vLLM worker (LLM.collective_rpc passes the worker first)."""
    worker.model_runner.model.load_weights(weights=named)
