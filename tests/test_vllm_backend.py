"""The vLLM backend's CPU-testable parts (vLLM itself needs a GPU: unverified until one runs it)."""
import pytest

from selfcorrect import config, models, rollout
from selfcorrect import vllm_backend as vb


def test_sampling_matches_the_hf_rollout_settings():
    model, tok = models.load(config.load("tiny").model)
    hf = rollout.settings(model, tok, temperature=0.7, max_new_tokens=12)
    got = vb.sampling_kwargs(temperature=0.7, max_new_tokens=12, stop=rollout.stop_ids(model, tok))
    assert got["temperature"] == hf.temperature and got["max_tokens"] == hf.max_new_tokens
    assert got["stop_token_ids"] == hf.eos_token_id
    # every other logits processor off, as in the GenerationConfig the HF path samples from
    assert (got["top_p"], got["top_k"], got["min_p"], got["repetition_penalty"]) == (1.0, -1, 0.0, 1.0)
    with pytest.raises(ValueError, match="temperature"):
        vb.sampling_kwargs(temperature=-1, max_new_tokens=1, stop=[])


def test_weights_to_sync_are_every_parameter_by_its_state_dict_name():
    model, _ = models.load(config.load("tiny").model)
    named = dict(vb.weights(model))
    assert set(named) == {n for n, _ in model.named_parameters()}
    assert all(named[n] is not p and (named[n] == p).all() for n, p in model.named_parameters())


def test_without_vllm_the_backend_says_so():
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
        pytest.skip("vllm is installed here")
    except ImportError:
        pass
    with pytest.raises(ImportError, match="vllm"):
        vb.VLLMBackend("some/model")
