"""KFP components: thin adapters over the selfcorrect library, one module per step.

Each is a lightweight Python component whose image is the package's own (see
selfcorrect.images); the function body imports the library, so nothing heavy is
imported when a pipeline is compiled.
"""
from selfcorrect.components.evaluate import evaluate
from selfcorrect.components.filter_problems import filter_problems
from selfcorrect.components.prepare_model import prepare_model
from selfcorrect.components.promote import decide_promotion, promote_model
from selfcorrect.components.prepare_problems import data_fingerprint, prepare_problems
from selfcorrect.components.pretrain import pretrain_testbed
from selfcorrect.components.sample_attempts import sample_attempts
from selfcorrect.components.sampling_study import config_flag, sampling_study
from selfcorrect.components.sft_baseline import sft_baseline
from selfcorrect.components.train import train_stage1, train_stage2
from selfcorrect.components.validate_data import validate_data
from selfcorrect.components.verify_attempts import verify_attempts

__all__ = ["data_fingerprint", "prepare_problems", "prepare_model", "validate_data", "filter_problems",
           "sample_attempts", "verify_attempts", "train_stage1", "train_stage2", "evaluate",
           "decide_promotion", "promote_model", "config_flag", "sampling_study",
           "pretrain_testbed", "sft_baseline"]
