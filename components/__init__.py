"""KFP components: thin adapters over the selfcorrect library, one module per step.

Each is a lightweight Python component whose image is the package's own (see
selfcorrect.images); the function body imports the library, so nothing heavy is
imported when a pipeline is compiled. Each takes the typed parameters it reads, with
defaults, documented in its Google-style docstring (KFP copies those lines into the
compiled YAML; docs/components.md is generated from them).

STABILITY says what a user may rely on:
  stable: the interface changes only with a major version; tested alone from its YAML.
  beta: the interface may still change in a minor version.
  experimental: may change at any time (multi-GPU training is not verified on GPUs yet).
"""
from selfcorrect.components.evaluate import evaluate
from selfcorrect.components.filter_problems import filter_problems
from selfcorrect.components.prepare_model import model_fingerprint, prepare_model
from selfcorrect.components.promote import decide_promotion, promote_model
from selfcorrect.components.prepare_problems import data_fingerprint, prepare_problems
from selfcorrect.components.pretrain import pretrain_testbed
from selfcorrect.components.sample_attempts import sample_attempts
from selfcorrect.components.sampling_study import sampling_study
from selfcorrect.components.sft_baseline import sft_baseline
from selfcorrect.components.train import train_stage1, train_stage2
from selfcorrect.components.validate_data import validate_data
from selfcorrect.components.verify_attempts import verify_attempts

__all__ = ["data_fingerprint", "prepare_problems", "model_fingerprint", "prepare_model",
           "validate_data", "filter_problems",
           "sample_attempts", "verify_attempts", "train_stage1", "train_stage2", "evaluate",
           "decide_promotion", "promote_model", "sampling_study",
           "pretrain_testbed", "sft_baseline"]

STABILITY = {"verify_attempts": "stable", "validate_data": "stable", "evaluate": "stable",
             "data_fingerprint": "beta", "prepare_problems": "beta", "prepare_model": "beta",
             "model_fingerprint": "beta",
             "sample_attempts": "beta", "filter_problems": "beta", "decide_promotion": "beta",
             "promote_model": "beta", "train_stage1": "experimental",
             "train_stage2": "experimental", "sampling_study": "experimental",
             "sft_baseline": "experimental", "pretrain_testbed": "experimental"}
