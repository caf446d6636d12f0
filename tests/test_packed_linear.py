"""Generation on oneDNN-packed linear weights (selfcorrect.packed_linear)."""
import pytest
import torch

from selfcorrect import config, models, packed_linear, rollout
from selfcorrect.records import Problem

pytestmark = pytest.mark.skipif(not packed_linear.available(), reason="PyTorch without oneDNN")


@pytest.fixture(scope="module")
def tiny():
    return models.load(config.load("tiny").model)


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_packed_layers_give_the_plain_outputs_and_are_restored_on_exit(tiny):
    model, _ = tiny
    ids = torch.randint(0, 100, (3, 9))
    want = logits(model, ids)
    layers = [m for m in model.modules() if type(m) is torch.nn.Linear]
    with packed_linear.packed(model, rows=3) as n:
        assert n == len(layers) > 0
        assert all("forward" in m.__dict__ for m in layers)
        got = logits(model, ids)
    assert torch.allclose(got, want, atol=1e-4)
    assert not any("forward" in m.__dict__ for m in layers)


def test_each_entry_packs_the_weights_as_they_are_then(tiny):
    """A layer changed between two generations (an update) is used as changed."""
    model = models.load(config.load("tiny").model)[0]
    head = next(m for m in model.modules() if type(m) is torch.nn.Linear)
    ids = torch.randint(0, 100, (2, 5))
    with packed_linear.packed(model):
        before = logits(model, ids)
    with torch.no_grad():
        head.weight.mul_(1.5)
    with packed_linear.packed(model):
        after = logits(model, ids)
    assert torch.allclose(after, logits(model, ids), atol=1e-4) and not torch.allclose(after, before)


def test_with_gradients_the_plain_path_runs(tiny):
    model, _ = tiny
    layer = next(m for m in model.modules() if type(m) is torch.nn.Linear)
    x = torch.randn(2, layer.in_features)
    with packed_linear.packed(model):
        layer(x).sum().backward()
    assert layer.weight.grad is not None
    model.zero_grad()


def test_greedy_generation_is_unchanged_and_the_switch_turns_it_off(tiny, monkeypatch):
    model, tok = tiny
    problem = Problem(id="p0", task="math", prompt="What is 2 + 2?", answer="4")

    def run():
        return [t.ids for e in rollout.two_attempts(model, tok, [problem] * 2, max_new_tokens=8)
                for t in (e.first, e.second)]

    packed = run()
    monkeypatch.setenv("SELFCORRECT_PACKED_LINEAR", "0")
    assert packed_linear.eligible(model) == []
    assert run() == packed


def test_weights_not_held_whole_in_float32_on_cpu_are_left_alone():
    model = models.load(config.load("tiny").model)[0].to(torch.bfloat16)
    with packed_linear.packed(model) as n:
        assert n == 0


def test_zero3_weights_are_packed_only_while_gathered_whole():
    """A ZeRO-3 parameter (ds_numel: its full size) qualifies while gathered whole for
    generation (selfcorrect.train.gathered), not as the empty placeholder it is at rest."""
    model = models.load(config.load("tiny").model)[0]
    for p in model.parameters():
        p.ds_numel = p.numel()
    with packed_linear.packed(model) as n:
        assert n == len(packed_linear.eligible(model)) > 0
    next(model.parameters()).data = torch.empty(0)      # one partitioned away
    with packed_linear.packed(model) as n:
        assert n == 0
