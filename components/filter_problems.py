from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from selfcorrect.images import image


@dsl.component(base_image=image("selfcorrect-base"), install_kfp_package=False)
def filter_problems(config: dict, problems: Input[Dataset], verdicts: Input[Dataset],
                    filtered: Output[Dataset]):
    """Difficulty filter: drop train problems the base model solves always
    (data.drop_always_solved) or never (data.drop_never_solved) on its first attempt.

    A copy of problems when both flags are off. Eval problems are always kept, and so are
    problems without verdicts (counted as no_verdicts). In the SCoRe pipeline the verdicts
    come from the base model's sample_attempts(difficulty_probe=True): data.filter_samples
    first attempts per train problem at data.filter_temperature (default: train.temperature).
    """
    from selfcorrect import config as cfg_mod
    from selfcorrect.data.prepare import difficulty_filter
    from selfcorrect.records import Problem, Verdict, read, write_jsonl

    d = cfg_mod.from_dict(config).data
    rows = read(problems.path, Problem)
    counts = {"always_solved": 0, "never_solved": 0, "no_verdicts": 0, "kept": len(rows)}
    if d.filters:
        rows, counts = difficulty_filter(rows, read(verdicts.path, Verdict),
                                         drop_always=d.drop_always_solved,
                                         drop_never=d.drop_never_solved)
    if not rows:
        raise ValueError("filter_problems: no problems left; check data.drop_always_solved "
                         "and data.drop_never_solved")
    write_jsonl(filtered.path, rows)
    filtered.metadata.update({"rows": len(rows), "format": "jsonl",
                              "train": sum(p.split == "train" for p in rows),
                              "eval": sum(p.split == "eval" for p in rows), **counts})
