"""Memory per rank, by arithmetic: what a SCoRe update holds on one GPU for a model and config.

The model is built on the meta device (no weights allocated), so a 7B shape costs nothing here;
its parameter count and shapes feed the sums below (`per_rank`). Per rank, in bytes:

    weights        bf16 policy weights: whole under ZeRO 0-2, 1/W under ZeRO-3
    gradients      bf16 gradients of the trainable parameters: whole under ZeRO 0-1, 1/W under 2-3
    optimizer      Adam under bf16: fp32 master weights + 2 fp32 moments (12 B per trainable
                   parameter): whole under ZeRO 0, 1/W from ZeRO-1 on
    reference      the frozen pi_ref in bf16: whole, 1/W when partitioned under ZeRO-3, or 0
                   when its partitions are offloaded to host memory
    zero_buffers   DeepSpeed's default communication buckets; under ZeRO-3 also the largest
                   module gathered whole, twice (the one in use and the one prefetched)
    activations    what the backward pass keeps for micro_batch rows of seq_len tokens: without
                   checkpointing every decoder layer's saved tensors (shape_counts'
                   act_per_token_layer, from the layer's shapes); with it, one bf16 hidden state
                   per layer plus one layer's saved tensors while it is recomputed
    logits         float32 logits of the scored tokens, twice (the values and their softmax in
                   the backward pass): whole rows, or one chunk of LOGIT_CHUNK_BYTES
                   (selfcorrect.train.scoring.CHUNK_BYTES) at a time
    overhead       a flat allowance for the CUDA context, NCCL and allocator slack
    kv_cache       generation's KV cache for one generate call (generate_rows x seq_len); freed
                   before the update, so `peak` is the larger of the update's `total` and the
                   resident parts + kv_cache

A trainable fraction below 1 scales gradients and optimizer state; the weights stay whole.
LoRA (lora_rank > 0, train.lora_rank): the trainable parameters are the adapter's on every
linear layer of the decoder (lora_params: PEFT's own count on the meta model, all-linear), the
reference is the policy with its adapter off ('adapter-off': no second copy), and the adapter
adds its bf16 weights to `weights`. Not counted: a colocated vLLM engine (its
train.vllm_gpu_memory_utilization share comes on top), fragmentation beyond the allowance.
"""
from __future__ import annotations

from dataclasses import dataclass

# Qwen2.5 shapes (the models' published config.json), as transformers Qwen2Config keywords
QWEN25 = {
    "1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, intermediate_size=8960, vocab_size=151936,
                 max_position_embeddings=32768, rope_theta=1_000_000.0,
                 tie_word_embeddings=True),
    "7b": dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4, intermediate_size=18944, vocab_size=152064,
               max_position_embeddings=32768, rope_theta=1_000_000.0,
               tie_word_embeddings=False),
}

GB = 1e9                        # memory is reported in decimal GB, as GPU sizes are sold (80 GB)
BF16, FP32 = 2, 4
ADAM_BYTES = 12                 # fp32 master weight + 2 fp32 moments per trainable parameter
OVERHEAD_BYTES = 3 * 10**9      # CUDA context, NCCL buffers, allocator slack: a flat allowance
# DeepSpeed's default bucket sizes (elements; our ds_config keeps them): ZeRO-1/2 reduce and
# all-gather buckets; ZeRO-3 reduce bucket and prefetch bucket
BUCKETS = {1: 2 * 500_000_000, 2: 2 * 500_000_000, 3: 500_000_000 + 50_000_000}
PROMPT_TOKENS = 256             # a MATH/GSM problem in the attempt-1 template (Qwen tokenizer)
CORRECTION_TOKENS = 64          # the correction instruction between the attempts
LOGIT_CHUNK_BYTES = 64 * 2**20  # selfcorrect.train.scoring.CHUNK_BYTES


@dataclass
class Setup:
    """What one rank runs. micro_batch: rows per backward pass; seq_len: tokens per row
    [x, y1, p, y2]; generate_rows: rows in one generate call (KV cache); reference:
    'whole', 'partitioned' (ZeRO-3) or 'offloaded' (in host memory)."""
    model: str
    world_size: int = 8
    zero_stage: int = 2
    micro_batch: int = 1
    seq_len: int = PROMPT_TOKENS + CORRECTION_TOKENS + 2 * 1024
    generate_rows: int = 32
    gradient_checkpointing: bool = True
    reference: str = "whole"
    chunked_logits: bool = True
    trainable_fraction: float = 1.0
    lora_rank: int = 0
    name: str = ""

    def __post_init__(self):
        if self.model not in QWEN25:
            raise ValueError(f"model: {self.model!r}; shapes known: {', '.join(QWEN25)}")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"zero_stage: {self.zero_stage}; DeepSpeed has stages 0-3")
        if self.reference not in ("whole", "partitioned", "offloaded", "adapter-off"):
            raise ValueError(f"reference: {self.reference!r}; 'whole', 'partitioned', 'offloaded' "
                             "or 'adapter-off' (LoRA)")
        if (self.reference == "adapter-off") != (self.lora_rank > 0):
            raise ValueError(f"reference: {self.reference} with lora_rank {self.lora_rank}; "
                             "'adapter-off' goes with lora_rank > 0 and only with it")
        if self.reference in ("partitioned", "offloaded") and self.zero_stage != 3:
            raise ValueError(f"reference: {self.reference} needs ZeRO-3 (zero_stage is {self.zero_stage})")
        if not 0 < self.trainable_fraction <= 1:
            raise ValueError(f"trainable_fraction: {self.trainable_fraction}; in (0, 1]")


def meta_model(model: str):
    """The Qwen2.5 shape on the meta device: shapes and counts, no weights allocated."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    with torch.device("meta"):
        return Qwen2ForCausalLM(Qwen2Config(**QWEN25[model]))


def shape_counts(model: str) -> dict[str, int]:
    """Parameter counts of the meta-built model: total (tied weights once), the largest
    module ZeRO-3 gathers at once, and the per-token activation elements of one layer."""
    net = meta_model(model)
    shape = QWEN25[model]
    h, i = shape["hidden_size"], shape["intermediate_size"]
    kv = shape["num_key_value_heads"] * (h // shape["num_attention_heads"])
    layer = net.model.layers[0]
    largest = max(sum(p.numel() for p in m.parameters())
                  for m in (layer, net.model.embed_tokens, net.lm_head))
    # what autograd keeps per token in one decoder layer (SDPA/flash attention: no s^2 term):
    # RMSNorm inputs 2h, normed inputs 2h, q/k/v h + 2kv, attention output h, SwiGLU gate,
    # its activation, up and their product 4i
    return {"params": sum(p.numel() for p in net.parameters()),
            "layers": shape["num_hidden_layers"], "hidden": h, "vocab": shape["vocab_size"],
            "largest_module": largest, "act_per_token_layer": 6 * h + 2 * kv + 4 * i,
            "kv_per_token_layer": 2 * kv}


def lora_params(model: str, rank: int) -> int:
    """Adapter parameters of rank `rank` on every linear layer of the decoder (PEFT's
    all-linear), counted by PEFT on the meta-built model."""
    from peft import LoraConfig, get_peft_model

    net = get_peft_model(meta_model(model), LoraConfig(r=rank, target_modules="all-linear"))
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def per_rank(setup: Setup, counts: dict[str, int] | None = None) -> dict[str, float]:
    """Bytes per rank by part (see the module docstring), their sum `total` and `peak`
    (the larger of the update's and generation's needs)."""
    c = counts or shape_counts(setup.model)
    W, z, P = setup.world_size, setup.zero_stage, c["params"]
    A = lora_params(setup.model, setup.lora_rank) if setup.lora_rank else 0
    T = A or P * setup.trainable_fraction
    tokens = setup.micro_batch * setup.seq_len
    parts = {
        "weights": (P + A) * BF16 / (W if z == 3 else 1),
        "gradients": T * BF16 / (W if z >= 2 else 1),
        "optimizer": T * ADAM_BYTES / (W if z >= 1 else 1),
        "reference": {"whole": P * BF16, "partitioned": P * BF16 / W, "offloaded": 0.0,
                      "adapter-off": 0.0}[setup.reference],
        "zero_buffers": BUCKETS.get(z, 0) * BF16 + (2 * c["largest_module"] * BF16 if z == 3 else 0),
        "activations": tokens * BF16 * (
            c["layers"] * c["hidden"] + c["act_per_token_layer"] if setup.gradient_checkpointing
            else c["layers"] * c["act_per_token_layer"]),
        "logits": 2 * (min(LOGIT_CHUNK_BYTES, tokens * c["vocab"] * FP32) if setup.chunked_logits
                       else tokens * c["vocab"] * FP32),
        "overhead": OVERHEAD_BYTES,
    }
    resident = parts["weights"] + parts["gradients"] + parts["optimizer"] + parts["reference"] \
        + parts["zero_buffers"] + parts["overhead"]
    parts["kv_cache"] = setup.generate_rows * setup.seq_len * c["layers"] * c["kv_per_token_layer"] * BF16
    parts["total"] = resident + parts["activations"] + parts["logits"]
    parts["peak"] = max(parts["total"], resident + parts["kv_cache"])
    return parts


def fits(setup: Setup, gpu_bytes: float = 80 * GB, counts=None) -> bool:
    return per_rank(setup, counts)["peak"] <= gpu_bytes


def from_config(cfg, name: str = "", prompt_tokens: int = PROMPT_TOKENS) -> Setup:
    """The Setup a RunConfig (a preset) runs: the model shape from model.path/name, world size
    from resources.accelerator_count, one rank's micro-batch of episodes, rows of prompt +
    2 attempts + correction, the rollout's generate batch."""
    t = cfg.train
    label = f"{cfg.model.path} {cfg.model.name}".lower()
    model = next((m for m in sorted(QWEN25, key=len, reverse=True) if m in label.replace("-", "")), None)
    if model is None:
        raise ValueError(f"model.path: {cfg.model.path!r} names no known shape "
                         f"({', '.join(QWEN25)}); memory arithmetic covers Qwen2.5 shapes")
    world = max(1, cfg.resources.accelerator_count)
    episodes = t.problems_per_step // world * t.samples_per_problem
    offload = getattr(t, "reference_offload", False)
    rank = getattr(t, "lora_rank", 0)
    return Setup(model=model, world_size=world, zero_stage=t.zero_stage,
                 micro_batch=max(1, episodes // t.gradient_accumulation_steps),
                 seq_len=prompt_tokens + CORRECTION_TOKENS + 2 * t.max_new_tokens,
                 generate_rows=min(cfg.generate.batch_size, episodes),
                 gradient_checkpointing=t.gradient_checkpointing,
                 reference="adapter-off" if rank else "whole" if t.zero_stage != 3
                 else "offloaded" if offload else "partitioned",
                 lora_rank=rank, name=name or cfg.name)


COLUMNS = ("weights", "gradients", "optimizer", "reference", "zero_buffers", "activations",
           "logits", "overhead", "total", "kv_cache", "peak")


def markdown(rows: list[tuple[Setup, dict]], gpu_bytes: float = 80 * GB) -> str:
    """One row per setup: the parts in GB and whether the peak fits `gpu_bytes`."""
    head = ("| setup | model | GPUs | ZeRO | micro-batch x tokens | checkpointing | reference | "
            + " | ".join(COLUMNS) + f" | fits {gpu_bytes / GB:.0f} GB |")
    lines = [head, "|---" * (8 + len(COLUMNS)) + "|"]
    for s, parts in rows:
        lines.append(f"| {s.name} | Qwen2.5-{s.model.upper()} | {s.world_size} | {s.zero_stage} | "
                     f"{s.micro_batch} x {s.seq_len} | {'on' if s.gradient_checkpointing else 'off'} | "
                     f"{s.reference if not s.lora_rank else f'adapter off (LoRA r={s.lora_rank})'} | "
                     + " | ".join(f"{parts[k] / GB:.1f}" for k in COLUMNS)
                     + f" | {'yes' if parts['peak'] <= gpu_bytes else 'NO'} |")
    return "\n".join(lines)
