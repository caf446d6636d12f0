from kfp import dsl
from kfp.dsl import Dataset, Output

from selfcorrect.images import image


@dsl.component(base_image=image("selfcorrect-base"), install_kfp_package=False)
def prepare_problems(config: dict, problems: Output[Dataset]):
    """Build the run's problems (train and eval splits) as Problem JSONL."""
    from selfcorrect import config as cfg_mod
    from selfcorrect.data.prepare import prepare
    from selfcorrect.records import write_jsonl

    cfg = cfg_mod.from_dict(config)
    rows, stats = prepare(cfg.data)
    n = write_jsonl(problems.path, rows)
    problems.metadata.update({"rows": n, "source": cfg.data.source, "format": "jsonl",
                              "train": sum(p.split == "train" for p in rows),
                              "eval": sum(p.split == "eval" for p in rows), **stats})
