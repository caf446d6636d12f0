"""Memory per rank, by arithmetic: what a SCoRe update holds on one GPU for a model and config.

The model is built on the meta device (no weights allocated), so a 7B shape costs nothing here;
its parameter count and shapes feed the sums below. Per rank, in bytes:

    weights        bf16 policy weights: whole under ZeRO 0-2, 1/W under ZeRO-3
    gradients      bf16 gradients of the trainable parameters: whole under ZeRO 0-1, 1/W under 2-3
    optimizer      Adam under bf16: fp32 master weights + 2 fp32 moments (12 B per trainable
                   parameter): whole under ZeRO 0, 1/W from ZeRO-1 on
    reference      the frozen pi_ref in bf16: whole, or 1/W when partitioned under ZeRO-3
    activations    what the backward pass keeps, for micro_batch rows of seq_len tokens:
                   without checkpointing each decoder layer keeps its inputs and intermediates
                   (ACT_PER_TOKEN_LAYER bytes per token, from the layer's shapes); with it, one
                   bf16 hidden state per layer plus one layer's intermediates (recomputed)
    logits         float32 logits of the scored tokens, twice (the values and their softmax in
                   the backward pass): whole rows, or chunked to `logit_chunk_bytes` at a time
                   (selfcorrect.train.scoring does the chunking: scoring.CHUNK_BYTES)

A trainable fraction below 1 (e.g. LoRA adapters, issue 21) scales gradients and optimizer
state; the weights stay whole. What is not counted: the CUDA context and allocator slack
(OVERHEAD_BYTES, a flat allowance), generation's KV cache (freed before the update), and a
colocated vLLM engine.
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
