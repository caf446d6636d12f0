from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from selfcorrect.images import image


@dsl.component(base_image=image("selfcorrect-base"), install_kfp_package=False)
def filter_problems(problems: Input[Dataset], verdicts: Input[Dataset], filtered: Output[Dataset],
                    drop_always_solved: bool = False, drop_never_solved: bool = False):
    """Difficulty filter: drop train problems the base model always or never solves on its
    first attempt.

    A copy of problems when both flags are off. Eval problems are always kept, and so are
    problems without verdicts (counted as no_verdicts). In the SCoRe pipeline the verdicts
    come from the base model's sample_attempts probe (several first attempts per train
    problem under the training policy's sampling).

    Args:
        problems: Problem records (JSONL or Parquet).
        verdicts: Verdicts on first attempts (turn 1) of the train problems.
        drop_always_solved: Drop train problems whose every first attempt is correct.
        drop_never_solved: Drop train problems whose every first attempt is wrong.

    Returns:
        filtered: The problems kept (JSONL); its metadata counts always_solved,
            never_solved, no_verdicts and kept.
    """
    from selfcorrect.data.prepare import difficulty_filter
    from selfcorrect.records import Problem, Verdict, read, write_jsonl

    rows = read(problems.path, Problem)
    counts = {"always_solved": 0, "never_solved": 0, "no_verdicts": 0, "kept": len(rows)}
    if drop_always_solved or drop_never_solved:
        rows, counts = difficulty_filter(rows, read(verdicts.path, Verdict),
                                         drop_always=drop_always_solved,
                                         drop_never=drop_never_solved)
    if not rows:
        raise ValueError("filter_problems: no problems left; check drop_always_solved "
                         "(data.drop_always_solved) and drop_never_solved")
    write_jsonl(filtered.path, rows)
    filtered.metadata.update({"rows": len(rows), "format": "jsonl",
                              "train": sum(p.split == "train" for p in rows),
                              "dev": sum(p.split == "dev" for p in rows),
                              "eval": sum(p.split == "eval" for p in rows), **counts})
