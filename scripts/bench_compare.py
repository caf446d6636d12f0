"""Side by side, in one run: a SCoRe Stage II step of this project and a GRPO step of TRL on the
same model (SmolLM2-135M-Instruct, dequantised, saved once as a folder both load), the same
attempt-1 prompts and problems, temperature, new tokens, sequences per step, dtype and KL weight.

The steps alternate: TRL's trainer runs `--steps + 1` steps, and after each of its steps a
callback runs one step of ours (the first of each side is a warm-up, not counted). Per side:
median seconds per step, generated tokens/s, scored tokens/s (prompt + completion rows through
policy and reference), training FLOP/s (8 N T, as scripts/bench_train.py, T the tokens the
forward passes run: a prompt shared by the k rows of a problem counts once on our side) as a
share of the fp32 matmul peak measured in the same run, and the step's peak resident memory
above the process's memory before it (sampled every 10 ms, after malloc_trim hands the heap
freed by the other side back to the system).

    ours: P problems x k samples x 2 attempts = 2 P k sequences (attempt 2 after attempt 1)
    TRL:  2 P k completions = 2 P prompts x k generations, GRPO with beta = train.beta1

Needs the `bench` extra (TRL, datasets): `make bench-compare` builds .venv-bench for it.
Usage: python scripts/bench_compare.py [--steps 4] [--problems 2] [--samples 4] [--new-tokens 64]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_common import PeakRSS, matmul_params, matmul_peak, model_folder

class Ours:
    """One Stage II step of this project per call (rollout, rewards, train_step)."""

    def __init__(self, cfg, problems):
        from selfcorrect import models
        from selfcorrect.train import engine as ds_engine
        from selfcorrect.train import loop, scoring

        self.cfg, self.loop, self.scoring, self.train = cfg, loop, scoring, cfg.train
        policy, self.tok = models.load(cfg.model)
        self.reference = ds_engine.freeze(models.load(cfg.model)[0])
        self.engine = ds_engine.build(policy, self.train, micro_batch_size=len(problems[0])
                                      * self.train.samples_per_problem)
        self.batches = iter(problems)
        self.steps: list[dict] = []

    def step(self):
        t0 = time.perf_counter()
        batch = next(self.batches)
        with PeakRSS() as mem:
            episodes = self.loop.rollout_step(self.engine.module, self.reference, self.tok, batch,
                                              self.cfg)
            r1, r2 = self.loop.rewards(self.loop.verifier_reward, episodes,
                                       workers=self.cfg.verify.code_concurrency)
            shape = (len(batch), self.train.samples_per_problem)
            self.loop.train_step(self.engine, self.reference, episodes, r1.view(shape),
                                 r2.view(shape), stage=2, train=self.train,
                                 pad_id=self.tok.pad_token_id)
        turns = [t for e in episodes for t in (e.first, e.second)]
        # the tokens the update's passes run, packed as train_step packs them (one micro-batch)
        packed = self.scoring.pack_episodes(episodes, self.tok.pad_token_id, share_prompts=True)[0]
        computed = packed.attention_mask.sum() + (0 if packed.prefix is None
                                                  else packed.prefix.attention_mask.sum())
        self.steps.append({"s": time.perf_counter() - t0, "mem": mem.extra,
                           "generated": sum(len(t.ids) for t in turns),
                           "scored": sum(map(self.loop.row_length, episodes)),
                           "computed": int(computed)})


def trl_side(cfg, folder: Path, prompts_per_step: list, args, ours: Ours):
    """TRL's GRPOTrainer on the same folder; a callback times each of its steps and runs one of
    ours after it."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from selfcorrect import prompts as P
    from selfcorrect.train import loop

    rows = [{"prompt": P.messages(p, None, cfg.prompts), "problem_id": p.id}
            for batch in prompts_per_step for p in batch]
    by_id = {p.id: p for batch in prompts_per_step for p in batch}

    def reward(completions, problem_id, **_):
        return [loop.verifier_reward(by_id[i], c[-1]["content"] if isinstance(c, list) else c)
                for c, i in zip(completions, problem_id)]

    steps: list[dict] = []
    n_seq = 2 * args.problems * args.samples

    class Alternate(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0, self.mem = time.perf_counter(), PeakRSS().__enter__()

        def on_step_end(self, *a, **k):
            self.mem.__exit__(None, None, None)
            steps.append({"s": time.perf_counter() - self.t0, "mem": self.mem.extra})
            ours.step()

        def on_log(self, _args, _state, _control, logs=None, **k):
            if logs and "completions/mean_length" in logs and steps:
                steps[-1]["generated"] = logs["completions/mean_length"] * n_seq

    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="bench-trl-"), per_device_train_batch_size=n_seq,
        num_generations=args.samples, max_completion_length=args.new_tokens,
        temperature=cfg.train.temperature, top_p=1.0, top_k=0, beta=cfg.train.beta1,
        learning_rate=cfg.train.learning_rate, max_steps=args.steps + 1, logging_steps=1,
        save_strategy="no", report_to="none", use_cpu=True, bf16=False, fp16=False,
        dataloader_num_workers=0, shuffle_dataset=False, seed=cfg.train.seed,
        disable_tqdm=True,
        # TRL's default is True; equal work on both sides unless asked (--trl-default-checkpointing)
        gradient_checkpointing=cfg.train.gradient_checkpointing or args.trl_default_checkpointing)
    trainer = GRPOTrainer(model=str(folder), reward_funcs=reward, args=config,
                          train_dataset=Dataset.from_list(rows), callbacks=[Alternate()])
    trainer.train()
    tok = trainer.processing_class
    prompt_len = statistics.mean(len(tok.apply_chat_template(r["prompt"], add_generation_prompt=True,
                                                             tokenize=True, return_dict=False))
                                 for r in rows)
    for s in steps:
        s["scored"] = s["computed"] = n_seq * prompt_len + s.get("generated", 0.0)
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per side (after 1 warm-up)")
    parser.add_argument("--problems", type=int, default=2, help="our problems per step (TRL: twice)")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--peak-size", type=int, default=4096)
    parser.add_argument("--trl-default-checkpointing", action="store_true",
                        help="leave TRL's gradient checkpointing on (its default); ours stays off")
    args = parser.parse_args()

    import trl

    from selfcorrect import config
    from selfcorrect.data.prepare import prepare

    base = config.load("demo")
    folder = model_folder(base)
    cfg = config.load("demo", overrides=[
        "model.source=hf", f"model.path={folder}", f"train.temperature={args.temperature}",
        f"train.max_new_tokens={args.new_tokens}", f"train.problems_per_step={args.problems}",
        f"train.samples_per_problem={args.samples}", f"generate.batch_size={2 * args.problems * args.samples}"])
    problems = [p for p in prepare(cfg.data)[0] if p.split == "train"]
    n = args.steps + 1
    ours_batches = [problems[i * args.problems:(i + 1) * args.problems] for i in range(n)]
    trl_batches = [problems[i * 2 * args.problems:(i + 1) * 2 * args.problems] for i in range(n)]
    print(f"torch {torch.__version__}, trl {trl.__version__}, {torch.get_num_threads()} threads, "
          f"fp32, CPU; {args.steps} timed steps per side after 1 warm-up, alternating; "
          f"gradient checkpointing: ours off, TRL {'on' if args.trl_default_checkpointing else 'off'}")
    peak = matmul_peak(args.peak_size)
    ours = Ours(cfg, ours_batches)
    theirs = trl_side(cfg, folder, trl_batches, args, ours)
    peak = max(peak, matmul_peak(args.peak_size))
    n_params = matmul_params(ours.engine.module)
    head = (f"{'side':<22} {'s/step':>7} {'gen tok/s':>10} {'scored tok/s':>12} "
            f"{'GFLOP/s':>8} {'of peak':>8} {'peak MB':>8}")
    print(f"\nfp32 matmul peak ({args.peak_size}^3): {peak / 1e9:.1f} GFLOP/s\n\n{head}\n" + "-" * len(head))
    result = {}
    for name, steps in ((f"selfcorrect Stage II", ours.steps[1:]), (f"TRL {trl.__version__} GRPO", theirs[1:])):
        s = statistics.median(x["s"] for x in steps)
        gen = statistics.median(x["generated"] / x["s"] for x in steps)
        scored = statistics.median(x["scored"] / x["s"] for x in steps)
        flops = 8 * n_params * statistics.median(x["computed"] / x["s"] for x in steps)
        mem = max(x["mem"] for x in steps) / 2**20
        result[name] = gen
        print(f"{name:<22} {s:>7.1f} {gen:>10.1f} {scored:>12.1f} {flops / 1e9:>8.2f} "
              f"{flops / peak:>8.1%} {mem:>8.0f}")
    ratio = list(result.values())
    print(f"\nthroughput ratio (generated tokens/s, selfcorrect / TRL): {ratio[0] / ratio[1]:.2f}x")


if __name__ == "__main__":
    main()
