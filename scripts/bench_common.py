"""What the bench scripts share: the machine's matmul peak, a model's matmul parameters, the
peak resident memory of a block, and the demo model as an fp32 folder (made once).

    from bench_common import PeakRSS, matmul_params, matmul_peak, model_folder
"""
from __future__ import annotations

import ctypes
import threading
import time
from pathlib import Path

import psutil
import torch

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / ".cache" / "bench" / "smollm2-135m-instruct-fp32"


def matmul_peak(n: int, reps: int = 5, device: str = "cpu", dtype=torch.float32) -> float:
    """FLOP/s of an n x n @ n x n matmul, best of `reps` (after one warm-up)."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(reps):
        if device != "cpu":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        torch.matmul(a, b)
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def matmul_params(model) -> int:
    embedding = model.get_input_embeddings().weight
    return sum(p.numel() for p in model.parameters() if p is not embedding) + (
        embedding.numel() if model.config.tie_word_embeddings else 0)   # tied: the LM head


class PeakRSS:
    """Peak resident memory of this process during the block, above what it held before."""

    def __enter__(self):
        _trim()     # hand freed heap back first, else the other side's growth hides this one's
        self.proc, self.peak, self.stop = psutil.Process(), 0, threading.Event()
        self.base = self.proc.memory_info().rss
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self):
        while not self.stop.wait(0.01):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.extra = max(self.peak, self.proc.memory_info().rss) - self.base


def _trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):     # not glibc: peak figures include reused heap
        pass


def model_folder(cfg) -> Path:
    """The demo model dequantised to fp32 and saved once; both sides load this folder."""
    from selfcorrect import models

    if not (MODEL_DIR / "config.json").is_file():
        net, tok = models.load(cfg.model)
        models.save(net, tok, str(MODEL_DIR))
    return MODEL_DIR
