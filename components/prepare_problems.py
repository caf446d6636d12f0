from kfp import dsl
from kfp.dsl import Dataset, Output

from selfcorrect.images import image


@dsl.component(base_image=image("selfcorrect-base"), install_kfp_package=False)
def data_fingerprint(config: dict) -> str:
    """The problems' cache key: a digest of config.data and, for a file source, the file's
    bytes (selfcorrect.data.fingerprint). Never cached; prepare_problems, cached, takes it."""
    from selfcorrect import config as cfg_mod
    from selfcorrect.data.fingerprint import fingerprint

    return fingerprint(cfg_mod.from_dict(config).data)


@dsl.component(base_image=image("selfcorrect-base"), install_kfp_package=False)
def prepare_problems(config: dict, problems: Output[Dataset], fingerprint: str = ""):
    """Build the run's problems (train and eval splits) as Problem JSONL.

    fingerprint: data_fingerprint's key; it only enters KFP's cache key (and the metadata),
    so a run over the same data reuses the cached problems and everything after them.
    """
    from selfcorrect import config as cfg_mod
    from selfcorrect.data.prepare import prepare
    from selfcorrect.records import write_jsonl

    cfg = cfg_mod.from_dict(config)
    rows, stats = prepare(cfg.data)
    n = write_jsonl(problems.path, rows)
    problems.metadata.update({"rows": n, "source": cfg.data.source, "format": "jsonl",
                              "train": sum(p.split == "train" for p in rows),
                              "eval": sum(p.split == "eval" for p in rows),
                              "fingerprint": fingerprint, **stats})
