"""Accelerator and resource requests of the training components, from config (KFP task settings).

    task = train_stage1(...)
    apply_resources(task, cfg)

Default (empty resources config): nothing is requested, the task runs on CPU. NOT VERIFIED ON
GPU: the compiled requests are tested, no cluster has scheduled them yet.
"""
from __future__ import annotations

from selfcorrect.config import RunConfig


def apply_resources(task, cfg: RunConfig):
    """Set accelerator type/limit, CPU and memory limits on a KFP PipelineTask; returns it."""
    res = cfg.resources
    if res.accelerator_count:
        task.set_accelerator_type(res.accelerator_type)
        task.set_accelerator_limit(res.accelerator_count)
    if res.cpu_limit:
        task.set_cpu_limit(res.cpu_limit)
    if res.memory_limit:
        task.set_memory_limit(res.memory_limit)
    return task
