from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from selfcorrect.images import image


@dsl.component(base_image=image("selfcorrect-verifier"), install_kfp_package=False)
def verify_attempts(problems: Input[Dataset], attempts: Input[Dataset], verdicts: Output[Dataset],
                    runner: str = "DirectRunner", direct_num_workers: int = 0,
                    direct_running_mode: str = "multi_processing", timeout_s: float = 10.0,
                    code_concurrency: int = 2, custom: str = "", beam_args: list = []):
    """Verify every attempt with the shared verifier in an Apache Beam pipeline.

    The verifier is the one training rewards and evaluation use, so a reward and a metric
    cannot drift apart. Attempts whose check fails go to a dead-letter count, not the run.

    Args:
        problems: Problem records (JSONL or Parquet): the references the attempts are checked
            against.
        attempts: Attempt records (JSONL or Parquet), e.g. sample_attempts' output.
        runner: Beam runner: DirectRunner on one machine; DaskRunner (a Dask cluster),
            DataflowRunner, FlinkRunner, ... with their options in beam_args.
        direct_num_workers: DirectRunner worker processes; 0: one per CPU of the step's
            CPU limit (cgroup quota), not of the node.
        direct_running_mode: DirectRunner mode: multi_processing, multi_threading or in_memory.
        timeout_s: Seconds one answer check may take.
        code_concurrency: Code sandboxes run at once in each Beam worker.
        custom: Your own check as module:function (e.g. mypkg.checks:exact_match), called with
            (problem, completion) instead of the built-in checks; it must be installed in
            the verifier image. "": the built-in checks.
        beam_args: Passed straight to Beam after the options above, e.g.
            ["--dask_client_address=tcp://dask-scheduler:8786", "--temp_location=gs://B/tmp"]
            or ["--project=my-project", "--region=us-central1"].

    Returns:
        verdicts: One Verdict per attempt (JSONL, sorted); its metadata counts
            verdicts, correct ones and dead letters.
    """
    from selfcorrect.config import VerifyConfig, build
    from selfcorrect.verify import beam

    v = build(VerifyConfig, {"runner": runner, "direct_num_workers": direct_num_workers,
                             "direct_running_mode": direct_running_mode, "timeout_s": timeout_s,
                             "code_concurrency": code_concurrency, "custom": custom}, "verify.")
    counts = beam.run(problems.path, attempts.path, verdicts.path,
                      pipeline_args=beam.pipeline_args(v, beam_args),
                      timeout_s=v.timeout_s, code_concurrency=v.code_concurrency,
                      custom=v.custom)
    verdicts.metadata.update({k: float(c) for k, c in counts.items()})
