"""The whole DAG through kfp.local with train.lora_rank on (tiny preset): the promoted model is
merged weights that from_pretrained loads alone, and it scores what the adapted model (base
model + the promoted adapter/) scores."""
from pathlib import Path

import pytest
import torch

from selfcorrect import config

pytestmark = pytest.mark.local


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    from io import StringIO

    from rich.console import Console

    from selfcorrect.pipelines.local import run_local

    out = tmp_path_factory.mktemp("lora-run")
    cfg = config.load("tiny", overrides=[f"output_dir={out}", "promotion.min_gain_over_base=-1",
                                         "train.lora_rank=4", "train.lora_alpha=8",
                                         "train.learning_rate=1e-2"])
    result = run_local(cfg, console=Console(file=StringIO(), width=200))
    return cfg, result


def test_promoted_lora_model_loads_alone_and_scores_what_the_adapted_model_scores(lora_run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from selfcorrect import evaluate, models, promote, rollout
    from selfcorrect.data.prepare import prepare
    from selfcorrect.verify import verify_attempt

    cfg, out = lora_run
    current = promote.read_current(str(Path(cfg.output_dir, "registry")))
    folder = Path(current["uri"])
    assert (folder / "model.safetensors").is_file() and (folder / "adapter" / "adapter_config.json").is_file()
    assert not list(folder.rglob("*optim_states*")) and "LoRA adapter" in (folder / "README.md").read_text()
    promoted = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    base, tok = models.load(cfg.model)
    adapted = PeftModel.from_pretrained(base, str(folder / "adapter")).eval()
    ids = torch.tensor([tok("User: What is 3 + 4?\n\nAssistant: ")["input_ids"]])
    with torch.no_grad():
        a, b = promoted(input_ids=ids).logits, adapted(input_ids=ids).logits
        with adapted.disable_adapter():
            plain = adapted(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-5)
    # the random tiny model earns no reward, so its adapter may stay at B = 0 (plain == b);
    # tests/test_lora.py checks the merge with an adapter that moved
    assert torch.allclose(plain, models.load(cfg.model)[0](input_ids=ids).logits, atol=1e-6)
    # the adapted model, decoded as the evaluate step decodes, scores the pipeline's numbers
    g = cfg.generate
    problems = [p for p in prepare(cfg.data)[0] if p.split == "eval"]
    kw = dict(samples=1, temperature=g.temperature, max_new_tokens=g.max_new_tokens,
              batch_size=g.batch_size, templates=cfg.prompts, seed=g.seed)
    tok.padding_side = "left"
    from_adapter = rollout.two_attempts(adapted, tok, problems, **kw)
    from_promoted = rollout.two_attempts(promoted, tok, problems, **kw)
    assert [(e.first.text, e.second.text) for e in from_adapter] == \
        [(e.first.text, e.second.text) for e in from_promoted]
    verdicts = [verify_attempt(e.problem, a, timeout_s=cfg.verify.timeout_s)
                for e in from_adapter for a in e.attempts("adapted")]
    scored = evaluate.self_correction_metrics(evaluate.pair_outcomes(verdicts))
    for key in ("accuracy_t1", "accuracy_t2", "delta"):
        assert scored[key] == pytest.approx(out["results"]["trained"][key]), key
