from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from selfcorrect.images import image


@dsl.component(base_image=image("selfcorrect-verifier"), install_kfp_package=False)
def verify_attempts(config: dict, problems: Input[Dataset], attempts: Input[Dataset],
                    verdicts: Output[Dataset], beam_args: list = []):
    """Verify every attempt with the shared verifier in an Apache Beam pipeline.

    `beam_args` pass straight to Beam (e.g. ["--runner=DataflowRunner", "--project=..."]);
    by default the DirectRunner uses one worker process per core.
    """
    from selfcorrect import config as cfg_mod
    from selfcorrect.verify import beam

    cfg = cfg_mod.from_dict(config)
    v = cfg.verify
    args = [f"--runner={v.runner}", f"--direct_num_workers={v.direct_num_workers}",
            f"--direct_running_mode={v.direct_running_mode}", *beam_args]
    counts = beam.run(problems.path, attempts.path, verdicts.path, pipeline_args=args,
                      timeout_s=v.timeout_s, code_concurrency=v.code_concurrency)
    verdicts.metadata.update({k: float(c) for k, c in counts.items()})
