"""Memory per GPU by arithmetic (selfcorrect.train.memory, scripts/memory_table.py): each cluster
preset, and explicit setups mirroring them, fit an 80 GB GPU; a deliberately too-big setup does
not; the parts follow ZeRO's partitioning; docs/scaling.md's table is the script's output."""
import dataclasses
import sys
from pathlib import Path

import pytest

from selfcorrect import config
from selfcorrect.train import memory

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import memory_table  # noqa: E402

GPU = 80 * memory.GB
CLUSTER = [n for n in config.preset_names() if n.startswith("cluster-")]
# what the cluster presets run: 8 GPUs, gradient checkpointing, 1,024 new tokens
MIRRORS = {
    "1.5b-zero2": ["model.path=Qwen/Qwen2.5-1.5B-Instruct", "train.zero_stage=2",
                   "train.gradient_accumulation_steps=16"],
    "7b-zero3": ["model.path=Qwen/Qwen2.5-7B-Instruct", "train.zero_stage=3",
                 "train.gradient_accumulation_steps=32"],
}
COMMON = ["model.source=hf", "resources.accelerator_count=8",
          "resources.accelerator_type=nvidia.com/gpu", "train.problems_per_step=64",
          "train.samples_per_problem=4", "train.gradient_checkpointing=true",
          "train.max_new_tokens=1024", "generate.max_new_tokens=1024", "generate.batch_size=64"]


@pytest.fixture(scope="module")
def counts():
    return {m: memory.shape_counts(m) for m in memory.QWEN25}


def test_meta_models_have_the_published_parameter_counts(counts):
    assert round(counts["1.5b"]["params"] / 1e9, 2) == 1.54     # tied embeddings counted once
    assert round(counts["7b"]["params"] / 1e9, 2) == 7.62


@pytest.mark.parametrize("name", CLUSTER)
def test_each_cluster_preset_fits_an_80gb_gpu(name, counts):
    setup = memory.from_config(config.load(name), name=name)
    assert setup.world_size == 8 and setup.gradient_checkpointing
    parts = memory.per_rank(setup, counts[setup.model])
    assert parts["peak"] <= GPU, memory.markdown([(setup, parts)])


@pytest.mark.parametrize("name", MIRRORS)
def test_setups_mirroring_the_presets_fit_an_80gb_gpu(name, counts):
    setup = memory.from_config(config.load(None, overrides=COMMON + MIRRORS[name]), name=name)
    assert (setup.model, setup.zero_stage, setup.world_size) == \
        {"1.5b-zero2": ("1.5b", 2, 8), "7b-zero3": ("7b", 3, 8)}[name]
    assert setup.seq_len == memory.PROMPT_TOKENS + memory.CORRECTION_TOKENS + 2 * 1024
    assert setup.reference == ("partitioned" if setup.zero_stage == 3 else "whole")
    assert memory.fits(setup, GPU, counts[setup.model])


def test_a_too_big_setup_does_not_fit(counts):
    """7B under ZeRO-2 without checkpointing, whole logits and 2 rows per micro-batch: over."""
    big = memory.Setup("7b", zero_stage=2, micro_batch=2, gradient_checkpointing=False,
                       chunked_logits=False)
    assert not memory.fits(big, GPU, counts["7b"])
    assert not memory.fits(memory.Setup("7b", zero_stage=0, world_size=8), GPU, counts["7b"])


def test_parts_follow_zero_partitioning(counts):
    c, P, W = counts["7b"], counts["7b"]["params"], 8
    z = {stage: memory.per_rank(memory.Setup("7b", zero_stage=stage), c) for stage in range(4)}
    assert z[0]["optimizer"] == 12 * P and z[1]["optimizer"] == 12 * P / W
    assert z[1]["gradients"] == 2 * P and z[2]["gradients"] == 2 * P / W
    assert z[2]["weights"] == 2 * P and z[3]["weights"] == 2 * P / W
    ref = memory.per_rank(memory.Setup("7b", zero_stage=3, reference="partitioned"), c)
    assert ref["reference"] == 2 * P / W and z[3]["reference"] == 2 * P
    assert memory.per_rank(memory.Setup("7b", zero_stage=3, reference="offloaded"), c)["reference"] == 0
    lora = memory.per_rank(memory.Setup("7b", zero_stage=0, trainable_fraction=0.01), c)
    assert lora["optimizer"] == pytest.approx(0.12 * P) and lora["weights"] == 2 * P


def test_checkpointing_and_chunking_cut_activations_and_logits(counts):
    c = counts["1.5b"]
    on = memory.per_rank(memory.Setup("1.5b", micro_batch=4), c)
    off = memory.per_rank(memory.Setup("1.5b", micro_batch=4, gradient_checkpointing=False), c)
    whole = memory.per_rank(memory.Setup("1.5b", micro_batch=4, chunked_logits=False), c)
    assert off["activations"] > 10 * on["activations"]
    assert on["logits"] == 2 * memory.LOGIT_CHUNK_BYTES
    tokens = 4 * memory.Setup("1.5b").seq_len
    assert whole["logits"] == 2 * tokens * c["vocab"] * memory.FP32      # values + softmax


def test_bad_setups_name_the_field():
    with pytest.raises(ValueError, match="reference: partitioned needs ZeRO-3"):
        memory.Setup("7b", zero_stage=2, reference="partitioned")
    with pytest.raises(ValueError, match="model: '13b'"):
        memory.Setup("13b")
    cfg = config.load(None, overrides=["model.source=hf", "model.path=meta-llama/Llama-3-8B"])
    with pytest.raises(ValueError, match="model.path: 'meta-llama/Llama-3-8B'"):
        memory.from_config(cfg)


def test_write_docs_replaces_only_the_marked_section(tmp_path):
    doc = tmp_path / "scaling.md"
    doc.write_text("# Scaling\n\nintro\n")
    memory_table.write_docs("| a |", doc)
    first = doc.read_text()
    assert first.startswith("# Scaling\n\nintro\n") and "## Memory per GPU (arithmetic)" in first
    doc.write_text(first + "\n## Later\n\nkept\n")
    memory_table.write_docs("| b |", doc)
    text = doc.read_text()
    assert "| b |" in text and "| a |" not in text and text.endswith("## Later\n\nkept\n")


def test_docs_scaling_holds_the_scripts_table():
    text = (REPO / "docs/scaling.md").read_text()
    table = memory_table.table(80.0)
    assert f"{memory_table.BEGIN}\n{table}\n{memory_table.END}" in text, \
        "docs/scaling.md's memory table is stale: run `python scripts/memory_table.py --write-docs`"


def test_reference_setups_include_one_that_does_not_fit():
    rows = [memory.per_rank(s) for s in memory_table.reference_setups()]
    assert any(r["peak"] > GPU for r in rows) and any(r["peak"] <= GPU for r in rows)
    assert dataclasses.is_dataclass(memory_table.reference_setups()[0])


def test_lora_drops_the_reference_and_keeps_optimizer_state_for_the_adapter_only(counts):
    c, P, W = counts["7b"], counts["7b"]["params"], 8
    A = memory.lora_params("7b", 16)
    # rank 16 on q, k, v, o, gate, up, down of 28 layers: r * (in + out) each
    h, i, kv = 3584, 18944, 4 * (3584 // 28)
    assert A == 28 * 16 * (2 * (h + h) + 2 * (h + kv) + 2 * (h + i) + (i + h))
    full = memory.per_rank(memory.Setup("7b", zero_stage=3, reference="partitioned"), c)
    lora = memory.per_rank(memory.Setup("7b", zero_stage=3, reference="adapter-off", lora_rank=16), c)
    assert lora["reference"] == 0 and lora["optimizer"] == 12 * A / W
    assert lora["weights"] == (P + A) * 2 / W and lora["peak"] < full["peak"] - 10 * memory.GB
    with pytest.raises(ValueError, match="adapter-off"):
        memory.Setup("7b", lora_rank=16)
    preset = memory.from_config(config.load("cluster-7b", overrides=["train.lora_rank=16"]))
    assert (preset.lora_rank, preset.reference) == (16, "adapter-off")
