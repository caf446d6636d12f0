"""Memory per GPU for the cluster presets, by arithmetic on meta-device models
(selfcorrect.train.memory): prints the table and, with --write-docs, puts it in
docs/scaling.md's "Memory per GPU" section (between its markers; the rest of the file stays).

Rows: each preset named cluster-* (selfcorrect/presets/), then reference setups that mirror
them (8 GPUs, gradient checkpointing, 1,024 new tokens) and what changes without
checkpointing, chunked logits or a partitioned reference, then each preset with LoRA
(train.lora_rank=LORA_RANK), followed by what LoRA saves per preset.

    python scripts/memory_table.py [--write-docs] [--gpu-gb 80]
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "scaling.md"
BEGIN, END = "<!-- memory-table:begin -->", "<!-- memory-table:end -->"
LORA_RANK = 16


def reference_setups() -> list:
    from selfcorrect.train.memory import Setup

    z2 = Setup("1.5b", zero_stage=2, micro_batch=2, name="1.5B ZeRO-2 (mirror)")
    z3 = Setup("7b", zero_stage=3, micro_batch=1, reference="partitioned", name="7B ZeRO-3 (mirror)")
    return [z2, z3,
            dataclasses.replace(z2, gradient_checkpointing=False, name="1.5B ZeRO-2, no checkpointing"),
            dataclasses.replace(z3, reference="offloaded", name="7B ZeRO-3, reference offloaded"),
            dataclasses.replace(z3, reference="whole", name="7B ZeRO-3, reference whole"),
            dataclasses.replace(z3, zero_stage=2, reference="whole", name="7B ZeRO-2"),
            dataclasses.replace(z3, zero_stage=2, reference="whole", gradient_checkpointing=False,
                                chunked_logits=False, micro_batch=2,
                                name="7B ZeRO-2, no checkpointing, whole logits, 2 rows")]


def preset_setups() -> list:
    from selfcorrect import config
    from selfcorrect.train.memory import from_config

    return [from_config(config.load(name), name=name)
            for name in config.preset_names() if name.startswith("cluster-")]


def lora_setups() -> list:
    """Each preset with a rank-LORA_RANK adapter: the reference is the policy, adapter off."""
    return [dataclasses.replace(s, lora_rank=LORA_RANK, reference="adapter-off",
                                name=f"{s.name} + LoRA r={LORA_RANK}") for s in preset_setups()]


def table(gpu_gb: float) -> str:
    from selfcorrect.train import memory

    rows = [(s, memory.per_rank(s)) for s in preset_setups() + reference_setups() + lora_setups()]
    lines = [memory.markdown(rows, gpu_gb * memory.GB), "", f"What LoRA (rank {LORA_RANK}, "
             "every decoder linear layer) saves per GPU, by the same arithmetic:", ""]
    for full, lora in zip(preset_setups(), lora_setups()):
        a, b = memory.per_rank(full), memory.per_rank(lora)
        trainable = memory.lora_params(lora.model, lora.lora_rank)
        lines.append(f"- {full.name}: peak {a['peak'] / memory.GB:.1f} -> {b['peak'] / memory.GB:.1f} GB "
                     f"({(a['peak'] - b['peak']) / memory.GB:.1f} GB less: gradients + optimizer "
                     f"{(a['gradients'] + a['optimizer']) / memory.GB:.1f} -> "
                     f"{(b['gradients'] + b['optimizer']) / memory.GB:.2f}, reference "
                     f"{a['reference'] / memory.GB:.1f} -> 0; {trainable / 1e6:.1f} M trainable "
                     "parameters)")
    return "\n".join(lines)


def write_docs(text: str, path: Path = DOCS) -> None:
    """Replace the text between the markers (the section is appended when they are absent)."""
    doc = path.read_text()
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in doc and END in doc:
        doc = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, doc, flags=re.S)
    else:
        doc = doc.rstrip("\n") + "\n\n## Memory per GPU (arithmetic)\n\n" + block + "\n"
    path.write_text(doc)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpu-gb", type=float, default=80.0)
    p.add_argument("--write-docs", action="store_true", help=f"update {DOCS.relative_to(ROOT)}")
    args = p.parse_args(argv)
    text = table(args.gpu_gb)
    print(text)
    if args.write_docs:
        write_docs(text)
        print(f"wrote {DOCS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
