from kfp import dsl
from kfp.dsl import Dataset, Output

from selfcorrect.images import image


@dsl.component(base_image=image("selfcorrect-base"), install_kfp_package=False)
def data_fingerprint(data: dict = {}) -> str:
    """The problems' cache key: a digest of the data section and, for a file source, the
    file's bytes (selfcorrect.data.fingerprint). Never cache it; prepare_problems takes it.

    Args:
        data: The problem source, as prepare_problems takes it.

    Returns:
        Output: A hex digest; the same for the same settings and the same file bytes.
    """
    from selfcorrect.config import DataConfig, build
    from selfcorrect.data.fingerprint import fingerprint

    return fingerprint(build(DataConfig, data, "data."))


@dsl.component(base_image=image("selfcorrect-base"), install_kfp_package=False)
def prepare_problems(problems: Output[Dataset], data: dict = {}, fingerprint: str = ""):
    """Build the run's problems (train and eval splits) as Problem JSONL.

    Args:
        data: The problem source: the keys of selfcorrect.config.DataConfig (docs/data.md),
            e.g. {"source": "gsm8k", "path": "gs://bucket/gsm8k.jsonl", "n_train": 1000};
            values may be text ("1000"); missing keys take their defaults; {}: 16 + 16
            generated arithmetic problems. A source's options are many and mostly its own
            (digits, chain_steps, gym_dataset, path), hence one mapping, not a parameter each.
        fingerprint: data_fingerprint's key; it only enters KFP's cache key (and the
            metadata), so a run over the same data reuses the cached problems and every step
            after them.

    Returns:
        problems: Problem records (JSONL); its metadata counts rows per split and
            names the source.
    """
    from selfcorrect.config import DataConfig, build
    from selfcorrect.data.prepare import describe, prepare
    from selfcorrect.records import write_jsonl

    cfg = build(DataConfig, data, "data.")
    rows, stats = prepare(cfg)
    print(describe(stats, cfg), flush=True)
    n = write_jsonl(problems.path, rows)
    problems.metadata.update({"rows": n, "source": cfg.source, "format": "jsonl",
                              **{s: sum(p.split == s for p in rows) for s in ("train", "dev", "eval")},
                              "fingerprint": fingerprint, **stats})
