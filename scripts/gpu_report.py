"""The GPU check's results: gpu_check.json (everything) and gpu_check.md (the tables), rewritten
after every part so a run stopped at its time limit still leaves what it measured."""
from __future__ import annotations

import json
from pathlib import Path


class Report:
    """gpu_check.json and gpu_check.md, rewritten after every part."""

    def __init__(self, out: Path, env: dict):
        self.out, self.data = out, {"env": env, "settings": [], "checks": {}}
        out.mkdir(parents=True, exist_ok=True)

    def check(self, name: str, ok: bool, detail: str, enforced: bool = True) -> None:
        self.data["checks"][name] = {"ok": bool(ok), "detail": detail, "enforced": enforced}
        print(f"[check] {name}: {'ok' if ok else 'FAILED'} ({detail})", flush=True)

    def write(self) -> None:
        (self.out / "gpu_check.json").write_text(json.dumps(self.data, indent=1))
        (self.out / "gpu_check.md").write_text(markdown(self.data))

    def passed(self) -> bool:
        return all(c["ok"] for c in self.data["checks"].values() if c["enforced"])


def markdown(data: dict) -> str:
    env = data["env"]
    lines = [f"# GPU check ({'dry: CPU, fp32, tiny sizes' if env['dry'] else env['device']})", "",
             ", ".join(f"{k} {v}" for k, v in env.items() if k not in ("dry", "device")), ""]
    if "matmul_peak_flops" in data:
        opt = data.get("optimizer", {})
        lines += [f"Matmul peak {data['matmul_peak_flops'] / 1e12:.1f} TFLOP/s; optimizer: "
                  f"{opt.get('name', '?')}" + (f" (built in {opt['build_s']:.0f} s)"
                                                if "build_s" in opt else ""), ""]
    if "model" in data:
        m = data["model"]
        lines += [f"Qwen2 shape {m['shape']}; {m['problems']} problems x {m['samples']} samples x 2 "
                  f"attempts of {m['new_tokens']} new tokens, {m['timed_steps']} timed steps after "
                  f"a {m['warmup_tokens']}-token warm-up; update FLOP/s = 8 N T / update s", ""]
    if data["settings"]:
        lines += ["| setting | s/step | generation s | update s | generated tok/s | update TFLOP/s "
                  "| of peak | peak GPU GiB | KL at step 0 |", "|---" * 9 + "|"]
        for s in data["settings"]:
            gib = "-" if s["peak_gib"] is None else f"{s['peak_gib']:.1f}"
            lines.append(f"| {s['name']} | {s['step_s']:.2f} | {s['generate_s']:.2f} | "
                         f"{s['update_s']:.2f} | {s['generated_tok_s']:.0f} | "
                         f"{s['update_flops'] / 1e12:.3f} | {s['peak_share']:.1%} | {gib} | "
                         f"{s['kl_step0']:.2e} |")
        lines.append("")
    if data.get("generation_paths"):
        lines += ["| setting | per-layer tok/s | gathered-once tok/s | speed-up | peak GiB per layer "
                  "| peak GiB gathered | same tokens |", "|---" * 7 + "|"]
        gib = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        for g in data["generation_paths"]:
            lines.append(f"| {g['name']} | {g['per_layer_tok_s']:.0f} | {g['gathered_tok_s']:.0f} | "
                         f"{g['speedup']:.2f}x | {gib(g['per_layer_peak_gib'])} | "
                         f"{gib(g['gathered_peak_gib'])} | {g['same_tokens']} |")
        lines.append("")
    if "checkpoint" in data:
        c = data["checkpoint"]
        lines += [f"Checkpoint round trip (ZeRO-2): save {c['save_s']:.1f} s, load {c['load_s']:.1f} "
                  f"s, {c['bytes'] / 2**30:.2f} GiB, restored bit for bit: {c['restored']}", ""]
    if "testbed" in data:
        lines += ["| testbed row | decoding | metric | this run [95%] | CPU run's 95% interval | "
                  "overlap |", "|---" * 6 + "|"]
        for r in data["testbed"]["compared"]:
            lines.append(f"| {r['row']} | {r['mode']} | {r['metric']} | {100 * r['value']:.1f} "
                         f"[{100 * r['value_low']:.1f}, {100 * r['value_high']:.1f}] | "
                         f"[{100 * r['low']:.1f}, {100 * r['high']:.1f}] | {r['ok']} |")
        lines.append("")
    lines += ["| check | result | detail |", "|---|---|---|"]
    lines += [f"| {n} | {'ok' if c['ok'] else 'FAILED'}{'' if c['enforced'] else ' (not enforced)'} "
              f"| {c['detail']} |" for n, c in data["checks"].items()]
    return "\n".join(lines) + "\n"
