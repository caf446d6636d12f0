"""The testbed model: a small transformer pretrained here, in minutes, to self-correct or not.

A 135M chat model needs hundreds of RL steps (hours on a CPU) before SCoRe moves it. The
testbed is a model small enough to train in minutes whose base behaviour has the shape the
paper starts from: it solves chain arithmetic (selfcorrect.data.chain) with a visible
scratchpad about half the time; after the correction instruction its greedy attempt 2
second-guesses or re-solves and changes right answers to wrong more often than the reverse
(Delta < 0); and it holds a one-step checker, learned from separate checking documents, that
is more reliable than its solving and that its attempt 2 rarely uses (docs/testbed.md).

    tokenizer()   character-level, with a chat template (user/assistant turns, <|end|>)
    pretrain()    chain problems (train split) -> student traces in the pipeline's episode
                  format + checking documents -> a GPT-2-shaped model from scratch -> SFT
                  (train/sft.py, DeepSpeed) -> a save_pretrained folder any step of the pipeline loads as model.source=hf
"""
from __future__ import annotations

import dataclasses
import random

from selfcorrect import prompts
from selfcorrect.config import RunConfig
from selfcorrect.data import chain
from selfcorrect.records import Problem

CHARS = "0123456789+-=,.:?!' abcdefghijklmnopqrstuvwxyz\n"
SPECIAL = ["<pad>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}<|user|>{% else %}<|assistant|>"
                 "{% endif %}{{ m['content'] }}<|end|>{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
#: the testbed's prompts: the problem as is, and a short correction instruction that, as in
#: the paper, does not say whether attempt 1 was right
ATTEMPT1 = "{prompt}"
CORRECTION = "check and fix."


def tokenizer():
    """One token per character of CHARS, plus the chat specials; eos is <|end|>.

    >>> tok = tokenizer()
    >>> tok.decode(tok("12+3=15", add_special_tokens=False)["input_ids"])
    '12+3=15'
    """
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL + list(CHARS))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))   # no merges: characters
    core.add_special_tokens(SPECIAL)
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<|end|>",
                                  padding_side="left")
    tok.chat_template = CHAT_TEMPLATE
    return tok


def new_model(cfg: RunConfig, tok):
    """A randomly initialised GPT-2-shaped model of the `pretrain` section's size."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(cfg.pretrain.seed)
    p = cfg.pretrain
    config = GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=p.hidden, n_layer=p.layers,
                        n_head=p.heads, bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.pad_token_id)
    model = GPT2LMHeadModel(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    return model


def student(cfg: RunConfig) -> chain.Student:
    p = cfg.pretrain
    return chain.Student(p_hard=p.p_hard, p_easy=p.p_easy, p_copy=p.p_copy, p_check=p.p_check,
                         p_doubt=p.p_doubt)


def traces(problems: list[Problem], cfg: RunConfig) -> list[list[dict]]:
    """The pretraining documents, shuffled: `pretrain.traces` two-turn conversations in the
    pipeline's episode format (problem, attempt 1, the correction instruction, the student's
    attempt 2) and `pretrain.checks` one-step checking documents (chain.checking_document)."""
    rng = random.Random(cfg.pretrain.seed)
    writer = student(cfg)
    out = []
    for _ in range(cfg.pretrain.traces):
        problem = rng.choice(problems)
        first, second, _ = writer.episode(problem.prompt, rng)
        out.append(prompts.messages(problem, first, cfg.prompts) +
                   [{"role": "assistant", "content": second}])
    out += [chain.checking_document(rng, writer) for _ in range(cfg.pretrain.checks)]
    rng.shuffle(out)
    return out


def testbed_config(cfg: RunConfig) -> RunConfig:
    """`cfg` with the testbed's prompts where none are set (what the model is trained on)."""
    templates = dataclasses.replace(cfg.prompts, attempt1=cfg.prompts.attempt1 or ATTEMPT1,
                                    correction=cfg.prompts.correction or CORRECTION)
    return dataclasses.replace(cfg, prompts=templates)


def pretrain(cfg: RunConfig, output_dir: str) -> dict[str, float]:
    """Build, pretrain and save the testbed model; returns a summary (KFP Metrics)."""
    import time

    from selfcorrect.train import sft

    if cfg.data.source != "chain":
        raise ValueError(f"pretrain: data.source is {cfg.data.source!r}; the testbed is "
                         "pretrained on the chain task (data.source=chain)")
    started = time.perf_counter()
    cfg = testbed_config(cfg)
    data = cfg.data     # ids hashing to eval or dev never reach pretraining
    train_problems = [p for p in chain.generate(cfg.pretrain.problems, 1, steps=data.chain_steps,
                                                hard_share=data.chain_hard_share, seed=data.seed,
                                                eval_fraction=data.eval_fraction,
                                                dev_fraction=data.dev_fraction)
                      if p.split == "train"]
    tok = tokenizer()
    model = new_model(cfg, tok)
    rows = [row for conversation in traces(train_problems, cfg)
            for row in sft.turn_rows(tok, conversation)]
    p = cfg.pretrain
    engine, history = sft.train(model, tok, rows,
                                sft.SFTConfig(steps=p.steps, batch_size=p.batch_size,
                                              learning_rate=p.learning_rate, seed=p.seed,
                                              warmup_steps=p.warmup_steps),
                                # from scratch: every weight trains, whatever train.lora_rank says
                                dataclasses.replace(cfg.train, lora_rank=0),
                                desc="pretrain testbed")
    sft.save(engine, tok, output_dir, config=cfg.to_dict(), history=history)
    tail = history[-max(1, len(history) // 10):]
    return {"parameters": float(sum(t.numel() for t in model.parameters())),
            "final_loss": sum(h["loss"] for h in tail) / len(tail),
            "train_problems": float(len(train_problems)), "rows": float(len(rows)),
            "wall_s": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> int:
    """`selfcorrect pretrain --output DIR [--preset testbed] [--set pretrain.steps=N ...]`."""
    import argparse
    import json
    import sys
    from pathlib import Path

    from selfcorrect import config as config_mod

    from selfcorrect.cli import _config_args

    p = argparse.ArgumentParser(
        prog="selfcorrect pretrain",
        description="Pretrain the testbed model from scratch: a small transformer that learns "
        "multi-step arithmetic from two-turn traces of a student who makes mistakes and "
        "sometimes fixes them (about 15-25 minutes on 2 CPU cores). `selfcorrect repro` and "
        "the testbed preset train on it. Settings: the pretrain section (see `selfcorrect "
        "config show --preset testbed`).")
    p.add_argument("--output", required=True, help="folder for the model (loadable with "
                                                   "from_pretrained)")
    _config_args(p, default_preset="testbed")
    args = p.parse_args(argv)
    try:
        cfg = config_mod.load(args.preset, args.config, args.overrides)
        summary = pretrain(cfg, args.output)
    except (config_mod.ConfigError, ValueError) as e:
        print(f"pretrain: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1))
    print(f"testbed model: {Path(args.output).resolve()}")
    return 0
