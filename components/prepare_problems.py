from kfp import dsl
from kfp.dsl import Dataset, Output

from selfcorrect.images import image


@dsl.component(base_image=image("selfcorrect-base"), install_kfp_package=False)
def prepare_problems(config: dict, problems: Output[Dataset]):
    """Build the run's problems (train and eval splits) as Problem JSONL."""
    from selfcorrect import config as cfg_mod
    from selfcorrect.data import arithmetic
    from selfcorrect.records import write_jsonl

    cfg = cfg_mod.from_dict(config)
    d = cfg.data
    rows = arithmetic.generate(d.n_train, d.n_eval, operations=d.operations, digits=d.digits,
                               seed=d.seed)
    n = write_jsonl(problems.path, rows)
    problems.metadata.update({"rows": n, "source": d.source, "format": "jsonl"})
