"""The GPU check: one call on an offline GPU machine answers what is unverified on GPU.

On one GPU, bf16, no download and no GGUF file (docs/gpu.md has the exact `run` command):

  1. the bf16 matmul peak (8192^3) and, unless --optimizer torch, a JIT build of DeepSpeed's
     FusedAdam (the trainer image prebuilds it; here the bundle's DeepSpeed has no prebuilt ops);
     if it cannot be built, torch's Adam takes over and the result says so
  2. Stage II steps (loop.rollout_step, loop.rewards, loop.train_step: the training loop's own
     functions) of a randomly initialised Qwen2.5-1.5B-shaped model (selfcorrect.train.memory.
     QWEN25) with GPT-2's BPE tokenizer, under ZeRO-2 and ZeRO-3, gradient checkpointing off and
     on: one short warm-up step, then --steps timed steps of --problems x --samples episodes and
     --new-tokens per attempt; per setting: seconds per step, generated tokens/s, the update's
     FLOP/s (8 N T, T the tokens its forward passes run) as a share of the measured peak, peak
     GPU memory, the KL at step 0 (policy == reference: must be 0) and whether the update moved
     the weights. A random model is never right, so the shared verifier would give reward 0
     everywhere and a zero policy gradient: its rewards are a hash of the completion instead
     (PSEUDO_REWARD); the work per step is the same.
  3. a checkpoint round trip on the ZeRO-2 engine (selfcorrect.train.checkpoint save, one more
     update, load): weights and Adam state must come back bit for bit
  4. the testbed's base and SCoRe rows for one seed (scripts/gpu_testbed.py): each metric's 95%
     interval must overlap the CPU run's in results/repro/table.json
  5. with --gather-generation, per ZeRO-3 setting: the rollout's HF generation timed on both
     paths, DeepSpeed's per-layer gathers and the weights gathered once for the phase
     (selfcorrect.train.gathered), the same seed: generated tokens/s and peak GPU memory of
     each, and whether the tokens agree (recorded, not enforced). The steps of part 2 generate
     as run_stage does, on the path train.gather_for_generation picks (default auto).
  It writes gpu_check.json and gpu_check.md (to --out, default $OUT or .) after every part, so
  a run stopped at its time limit still leaves what it measured; exit 1 when a check fails.

    python3 scripts/gpu_check.py --install .gpu-bundle [--out DIR]    # on the GPU machine
    python scripts/gpu_check.py --dry                                # here: CPU, fp32, tiny

--install installs the bundle's wheels (`make gpu-bundle`) into a folder with pip --no-index
--no-deps and runs the check again on them. --dry takes the same code path on CPU in fp32 with
tiny sizes (a 2-layer Qwen2 shape, a stand-in testbed pretrained for a few steps) and imports
only what the GPU machine has or the bundle brings (gpu_bundle.only_machine_imports).
Extension points for other issues, inside the same budget: a setting is a list of config
overrides (SETTINGS), so a new code path behind a config key is measured by adding a setting
or by --set KEY=VALUE on every setting (e.g. --set train.gather_for_generation=never).
--lora adds the LoRA settings (LORA_SETTINGS: train.lora_rank=16 under ZeRO-2 and ZeRO-3 with
gradient checkpointing; the reference is the policy with its adapter off, and only the adapter
must move); their peak memory includes the frozen model the check keeps for the other settings.
UNVERIFIED ON GPU until it has run on one.
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpu_report import Report

ROOT = Path(__file__).resolve().parents[1]
# name -> the config overrides of the setting (after the check's own sizes)
SETTINGS = {"z2": ["train.zero_stage=2", "train.gradient_checkpointing=false"],
            "z2-gc": ["train.zero_stage=2", "train.gradient_checkpointing=true"],
            "z3": ["train.zero_stage=3", "train.gradient_checkpointing=false"],
            "z3-gc": ["train.zero_stage=3", "train.gradient_checkpointing=true"]}
LORA = ["train.lora_rank=16", "train.lora_alpha=32", "train.gradient_checkpointing=true"]
LORA_SETTINGS = {"z2-lora": ["train.zero_stage=2", *LORA], "z3-lora": ["train.zero_stage=3", *LORA]}
SETTINGS.update(LORA_SETTINGS)
DRY_SHAPE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=64, vocab_size=50304, tie_word_embeddings=True)
# --flag: (GPU default, dry default); warmup-tokens: the new tokens of the untimed first step
SIZES = {"steps": (2, 2), "problems": (4, 2), "samples": (4, 2), "new-tokens": (128, 8),
         "warmup-tokens": (16, 4)}
KL_TOLERANCE = 1e-6     # per token; identical weights and inputs give 0 up to kernel choice


def pseudo_reward(problem, completion: str) -> float:
    """A deterministic stand-in for the verifier's reward on a random model (see the docstring)."""
    return float(hashlib.sha256(completion.encode()).digest()[0] & 1)


def without_install(argv: list[str]) -> list[str]:
    """argv less `--install BUNDLE` / `--install=BUNDLE` (the run on the installed wheels)."""
    out, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--install="):
            skip = False
        elif arg == "--install":
            skip = True
        else:
            out.append(arg)
    return out


def install(bundle: Path, target: Path) -> None:
    wheels = sorted(bundle.glob("*.whl"))
    if not wheels:
        raise SystemExit(f"--install {bundle}: no wheels there; run `make gpu-bundle` where pip "
                         "works and carry .gpu-bundle (docs/gpu.md)")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                    "--no-compile", "--no-cache-dir", "--upgrade", "--target", str(target),
                    *map(str, wheels)], check=True)


def environment(dry: bool) -> dict:
    import deepspeed
    import torch
    import transformers

    return {"dry": dry, "device": "cpu" if dry else torch.cuda.get_device_name(),
            "python": sys.version.split()[0], "torch": torch.__version__,
            "cuda": torch.version.cuda, "transformers": transformers.__version__,
            "deepspeed": deepspeed.__version__}


def optimizer_choice(choice: str, dry: bool, report: Report) -> None:
    """FusedAdam JIT-built and timed; torch's Adam in its place when asked or when it fails."""
    from selfcorrect.train import engine as ds_engine

    if dry:                 # the CPU path already uses torch's Adam (engine.ds_config)
        report.data["optimizer"] = {"name": "torch Adam (CPU path)"}
        return
    if choice != "torch":
        ds_engine.extension_cache()     # where ds_engine.build will look for it again
        t0 = time.perf_counter()
        try:
            from deepspeed.ops.op_builder import FusedAdamBuilder

            FusedAdamBuilder().load()
            report.data["optimizer"] = {"name": "DeepSpeed FusedAdam (JIT-built here)",
                                        "build_s": time.perf_counter() - t0}
            report.check("fused_adam_build", True, f"{time.perf_counter() - t0:.0f} s")
            return
        except Exception as e:  # noqa: BLE001 -- any build failure: report it, carry on
            report.check("fused_adam_build", False, f"{type(e).__name__}: {str(e)[:300]}",
                         enforced=choice == "fused")
    plain = ds_engine.ds_config

    def with_torch_adam(*args, **kwargs):
        config = plain(*args, **kwargs)
        config["optimizer"]["params"]["torch_adam"] = True
        return config

    ds_engine.ds_config = with_torch_adam
    report.data["optimizer"] = {"name": "torch Adam (FusedAdam not used)"}


def run_config(args, setting: list[str]):
    from selfcorrect import config

    return config.load(None, overrides=[
        f"model.dtype={'float32' if args.dry else 'bfloat16'}", "train.temperature=1.0",
        f"train.max_new_tokens={args.new_tokens}", f"train.problems_per_step={args.problems}",
        f"train.samples_per_problem={args.samples}",
        f"generate.batch_size={args.problems * args.samples}",
        f"data.n_train={args.problems * (args.steps + 2)}", "data.n_eval=2",
        *setting, *args.set])


def new_model(shape: dict, dtype, device, seed: int):
    """A randomly initialised Qwen2 causal LM of `shape`, built on `device` in `dtype`."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2ForCausalLM._from_config(Qwen2Config(**shape), dtype=dtype)
    model.eval()
    return model


def sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def one_step(engine, reference, tok, batch, cfg, new_tokens: int) -> dict:
    """Rollout, rewards, update, timed apart; the update's stats and the tokens it ran."""
    import dataclasses

    from selfcorrect.train import gathered, loop, scoring

    run = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_new_tokens=new_tokens))
    t0 = time.perf_counter()
    gather = gathered.decide(cfg.train.gather_for_generation, engine)   # as run_stage does
    with gathered.weights(engine, gather) as policy:
        episodes = loop.rollout_step(policy, reference, tok, batch, run, synced_gpus=False)
    sync()
    t1 = time.perf_counter()
    r1, r2 = loop.rewards(pseudo_reward, episodes, workers=2)
    shape = (len(batch), cfg.train.samples_per_problem)
    t2 = time.perf_counter()
    stats = loop.train_step(engine, reference, episodes, r1.view(shape), r2.view(shape), stage=2,
                            train=cfg.train, pad_id=tok.pad_token_id)
    sync()
    t3 = time.perf_counter()
    packed = scoring.pack_episodes(episodes, tok.pad_token_id, share_prompts=True)[0]
    computed = int(packed.attention_mask.sum()) + (0 if packed.prefix is None
                                                   else int(packed.prefix.attention_mask.sum()))
    return {"generate_s": t1 - t0, "reward_s": t2 - t1, "update_s": t3 - t2, "step_s": t3 - t0,
            "generated": sum(len(t.ids) for e in episodes for t in (e.first, e.second)),
            "computed": computed, "stats": stats, "episodes": episodes, "r": (r1, r2)}


def generation_paths(name: str, engine, reference, tok, batch, cfg, args, report: Report) -> None:
    """--gather-generation: the rollout's generation on both HF paths under ZeRO-3 (per-layer
    gathers, and the weights gathered once), the same seed, timed apart."""
    import torch

    from selfcorrect.train import gathered, loop

    got = {}
    for path in ("per_layer", "gathered"):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        torch.manual_seed(args.seed)
        sync()
        t0 = time.perf_counter()
        with gathered.weights(engine, path == "gathered") as policy:
            episodes = loop.rollout_step(policy, reference, tok, batch, cfg, synced_gpus=False)
        sync()
        seconds = time.perf_counter() - t0
        tokens = [t.ids for e in episodes for t in (e.first, e.second)]
        got[path] = {"seconds": seconds, "tok_s": sum(map(len, tokens)) / seconds,
                     "peak_gib": torch.cuda.max_memory_allocated() / 2**30
                     if torch.cuda.is_available() else None, "tokens": tokens}
    same = got["per_layer"].pop("tokens") == got["gathered"].pop("tokens")
    speed = got["gathered"]["tok_s"] / got["per_layer"]["tok_s"]
    report.data.setdefault("generation_paths", []).append(
        {"name": name, **{f"{path}_{k}": v for path, r in got.items() for k, v in r.items()},
         "speedup": speed, "same_tokens": same})
    report.check(f"{name}_gathered_generation_same_tokens", same,
                 f"{got['per_layer']['tok_s']:.0f} tok/s per layer, {got['gathered']['tok_s']:.0f} "
                 f"gathered once ({speed:.2f}x)", enforced=False)


def matmul_params(model) -> int:
    embedding = model.get_input_embeddings().weight
    return sum(p.numel() for p in model.parameters() if p is not embedding) + (
        embedding.numel() if model.config.tie_word_embeddings else 0)   # tied: the LM head


def matmul_peak(dry: bool) -> float:
    """FLOP/s of the best of 5 square matmuls (bf16 8192^3 on GPU, fp32 256^3 dry)."""
    import torch

    n, device, dtype = (256, "cpu", torch.float32) if dry else (8192, "cuda", torch.bfloat16)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(5):
        sync()
        t0 = time.perf_counter()
        torch.matmul(a, b)
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def trainable_state(engine) -> list:
    """Copies of the weights and of the optimizer's master weights and Adam moments."""
    inner = getattr(engine.optimizer, "optimizer", engine.optimizer)
    out = [p.detach().clone() for p in engine.module.parameters()]
    for group in inner.param_groups:
        for p in group["params"]:
            out.append(p.detach().clone())
            state = inner.state.get(p, {})
            out += [state[k].detach().clone() for k in sorted(state) if hasattr(state[k], "clone")]
    return out


def local_weights(engine, n: int = 4) -> list:
    """Copies of this rank's part of the first n trainable weights (under ZeRO-3: its
    partition; with LoRA: the adapter's)."""
    params = [p for p in engine.module.parameters() if p.requires_grad][:n]
    return [getattr(p, "ds_tensor", p).detach().clone() for p in params]


def same(a: list, b: list) -> bool:
    import torch

    return len(a) == len(b) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b))


def checkpoint_round_trip(engine, reference, tok, cfg, last: dict, report: Report, folder: Path):
    from selfcorrect.train import checkpoint, loop

    train = cfg.to_dict()["train"]
    before = trainable_state(engine)
    t0 = time.perf_counter()
    checkpoint.save(engine, str(folder), stage=2, step=1, history=[], train=train, keep=1)
    sync()
    save_s = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    r1, r2 = last["r"]
    shape = (cfg.train.problems_per_step, cfg.train.samples_per_problem)
    loop.train_step(engine, reference, last["episodes"], r1.view(shape), r2.view(shape), stage=2,
                    train=cfg.train, pad_id=tok.pad_token_id)
    moved = not same(before, trainable_state(engine))
    t1 = time.perf_counter()
    done = checkpoint.load(engine, str(folder), stage=2, train=train)
    sync()
    load_s = time.perf_counter() - t1
    restored = done is not None and done[0] == 1 and same(before, trainable_state(engine))
    report.data["checkpoint"] = {"save_s": save_s, "load_s": load_s, "bytes": size,
                                 "restored": restored, "moved_between": moved}
    report.check("checkpoint_round_trip", restored and moved,
                 f"{size / 2**30:.2f} GiB; the update between moved the state: {moved}; "
                 f"restored bit for bit: {restored}")


def training_reference(reference, cfg, args, micro_batch: int):
    """The reference as run_stage holds it: where the engine module can wrap it (ZeRO-3: a
    partitioned no-optimizer engine, issue 20's memory part), a wrapped copy; else as is."""
    from selfcorrect.train import engine as ds_engine

    wrap = getattr(ds_engine, "reference", None)
    if wrap is None or cfg.train.zero_stage != 3:
        return reference
    first = next(reference.parameters())
    copy = new_model(args.shape, first.dtype, first.device, seed=2)
    copy.load_state_dict(reference.state_dict())
    return wrap(copy, cfg.train, micro_batch_size=micro_batch)


def run_setting(name: str, args, report: Report, reference, tok, problems, peak: float,
                checkpoint_dir: Path | None) -> None:
    import torch

    from selfcorrect.train import engine as ds_engine

    cfg = run_config(args, SETTINGS[name])
    zero, checkpointing = cfg.train.zero_stage, cfg.train.gradient_checkpointing
    device, dtype = next(reference.parameters()).device, next(reference.parameters()).dtype
    policy = new_model(args.shape, dtype, device, seed=1)
    policy.load_state_dict(reference.state_dict())
    n_params = matmul_params(reference)
    P = args.problems
    engine = ds_engine.build(policy, cfg.train, micro_batch_size=P * args.samples)
    if cfg.train.lora_rank:         # the reference is the policy with its adapter off
        from selfcorrect.train import lora

        ref = lora.BaseView(engine.module)
    else:
        ref = training_reference(reference, cfg, args, P * args.samples)
    started = time.perf_counter()
    first = one_step(engine, ref, tok, problems[:P], cfg, args.warmup_tokens)
    kl0 = max(abs(first["stats"]["kl_t1"]), abs(first["stats"]["kl_t2"]))
    before = local_weights(engine)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    steps = [one_step(engine, ref, tok, problems[P * (i + 1):P * (i + 2)], cfg,
                      args.new_tokens) for i in range(args.steps)]
    peak_gib = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    moved = not same(before, local_weights(engine))
    mean = lambda k: sum(s[k] for s in steps) / len(steps)  # noqa: E731
    flops = 8 * n_params * mean("computed") / mean("update_s")
    result = {"name": name, "zero_stage": zero, "gradient_checkpointing": checkpointing,
              "lora_rank": cfg.train.lora_rank,
              "steps": len(steps), "step_s": mean("step_s"), "generate_s": mean("generate_s"),
              "update_s": mean("update_s"), "generated_tok_s": mean("generated") / mean("generate_s"),
              "update_flops": flops, "peak_share": flops / peak, "peak_gib": peak_gib,
              "kl_step0": kl0, "params": n_params, "tokens_per_update": mean("computed"),
              "losses": [s["stats"]["loss"] for s in steps], "wall_s": time.perf_counter() - started}
    report.data["settings"].append(result)
    report.check(f"{name}_kl_step0", kl0 <= KL_TOLERANCE, f"{kl0:.2e} per token (at most "
                 f"{KL_TOLERANCE:g})")
    report.check(f"{name}_update_moves_weights", moved, "first parameters changed by the steps")
    print(f"[{name}] {result['step_s']:.2f} s/step ({result['generate_s']:.2f} generation, "
          f"{result['update_s']:.2f} update), {result['generated_tok_s']:.0f} generated tok/s, "
          f"{flops / 1e12:.3f} TFLOP/s = {flops / peak:.1%} of peak, peak "
          f"{'-' if peak_gib is None else f'{peak_gib:.1f} GiB'}", flush=True)
    if args.gather_generation and zero == 3:
        generation_paths(name, engine, ref, tok, problems[:P], cfg, args, report)
    if checkpoint_dir is not None and zero == 2:
        checkpoint_round_trip(engine, ref, tok, cfg, steps[-1], report, checkpoint_dir)
    report.write()
    for held in (engine, ref):
        if held is not reference and hasattr(held, "destroy"):
            held.destroy()
    del engine, ref, policy, steps, first
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--install", metavar="BUNDLE", help="install the bundle's wheels, then run")
    p.add_argument("--site", default=os.path.join(tempfile.gettempdir(), "selfcorrect-gpu-site"))
    p.add_argument("--dry", action="store_true", help="CPU, fp32, tiny sizes: the same path")
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    p.add_argument("--settings", default=",".join(n for n in SETTINGS if n not in LORA_SETTINGS),
                   help=f"comma-separated, from {', '.join(SETTINGS)}")
    p.add_argument("--lora", action="store_true",
                   help=f"also run the LoRA settings ({', '.join(LORA_SETTINGS)})")
    for flag, (gpu, dry) in SIZES.items():
        p.add_argument(f"--{flag}", type=int, help=f"default {gpu} (dry: {dry})")
    p.add_argument("--optimizer", choices=("auto", "fused", "torch"), default="auto",
                   help="auto: FusedAdam, torch's Adam if it cannot be built")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override for every setting (a switch another issue adds)")
    p.add_argument("--no-checkpoint", action="store_true", help="skip the round trip")
    p.add_argument("--gather-generation", action="store_true",
                   help="ZeRO-3 settings: time generation per layer and gathered once (tok/s)")
    p.add_argument("--testbed", help="testbed model folder (default: BUNDLE/testbed; dry: a "
                                     "stand-in pretrained for a few steps); 'none' skips")
    p.add_argument("--seed", type=int, default=0, help="the testbed rows' seed")
    p.add_argument("--no-import-guard", action="store_true",
                   help="dry: allow imports the GPU machine could not make")
    args = p.parse_args(argv)
    for flag, sizes in SIZES.items():
        key = flag.replace("-", "_")
        if getattr(args, key) is None:
            setattr(args, key, sizes[args.dry])
    if args.install:
        install(Path(args.install), Path(args.site))
        rest = without_install(sys.argv[1:] if argv is None else argv)
        testbed = Path(args.install, "testbed")
        if args.testbed is None and testbed.is_dir():
            rest += ["--testbed", str(testbed)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [args.site, *filter(None, [os.environ.get("PYTHONPATH")])])}
        return subprocess.run([sys.executable, __file__, *rest], env=env).returncode
    names = [n.strip() for n in args.settings.split(",") if n.strip()]
    names += [n for n in LORA_SETTINGS if args.lora and n not in names]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        p.error(f"--settings: unknown {', '.join(unknown)}; from {', '.join(SETTINGS)}")
    if args.dry and not args.no_import_guard:
        import gpu_bundle

        gpu_bundle.only_machine_imports()
    from selfcorrect import config

    try:
        for name in names:
            run_config(args, SETTINGS[name])
    except config.ConfigError as e:
        print(f"gpu-check: {e}", file=sys.stderr)
        return 2
    import torch

    if not args.dry and not torch.cuda.is_available():
        print("gpu-check: no CUDA device here; run it on a GPU machine, or --dry for the CPU "
              "path", file=sys.stderr)
        return 2
    if not args.dry:    # JIT-built ops in a folder that is surely writable, one for the run
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(args.site, "torch_extensions"))
    from selfcorrect import models
    from selfcorrect.data.prepare import prepare
    from selfcorrect.train import engine as ds_engine
    from selfcorrect.train.memory import QWEN25

    started = time.perf_counter()
    report = Report(Path(args.out), environment(args.dry))
    args.shape = DRY_SHAPE if args.dry else QWEN25["1.5b"]
    report.data["model"] = {"shape": args.shape, "problems": args.problems,
                            "samples": args.samples, "new_tokens": args.new_tokens,
                            "timed_steps": args.steps, "warmup_tokens": args.warmup_tokens}
    peak = matmul_peak(args.dry)
    report.data["matmul_peak_flops"] = peak
    print(f"{report.data['env']}\nmatmul peak: {peak / 1e12:.2f} TFLOP/s", flush=True)
    optimizer_choice(args.optimizer, args.dry, report)
    report.write()
    tok = models.gpt2_tokenizer()
    tok.padding_side = "left"
    problems = [q for q in prepare(run_config(args, []).data)[0] if q.split == "train"]
    device, dtype = models.device(), torch.float32 if args.dry else torch.bfloat16
    reference = ds_engine.freeze(new_model(args.shape, dtype, device, seed=0))
    round_trip = None if args.no_checkpoint else next(
        (n for n in names if run_config(args, SETTINGS[n]).train.zero_stage == 2), None)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for name in names:
            run_setting(name, args, report, reference, tok, problems, peak,
                        Path(tmp, "checkpoint") if name == round_trip else None)
        del reference
        gc.collect()
        if args.testbed != "none":
            import gpu_testbed

            gpu_testbed.run(args, report, Path(tmp))
    report.data["wall_s"] = time.perf_counter() - started
    report.write()
    print(f"gpu-check: {'passed' if report.passed() else 'FAILED'} in {report.data['wall_s']:.0f} s; "
          f"{Path(args.out, 'gpu_check.md')}", flush=True)
    return 0 if report.passed() else 1


if __name__ == "__main__":
    sys.exit(main())
