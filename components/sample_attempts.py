from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from selfcorrect.images import image


@dsl.component(base_image=image("selfcorrect-base"), install_kfp_package=False)
def sample_attempts(config: dict, problems: Input[Dataset], model: Input[Model],
                    attempts: Output[Dataset], split: str = "eval"):
    """Two attempts per problem of `split` (greedy unless generate.temperature > 0)."""
    from selfcorrect import config as cfg_mod
    from selfcorrect import models, rollout
    from selfcorrect.records import Problem, read_jsonl, write_jsonl

    cfg = cfg_mod.from_dict(config)
    todo = [p for p in read_jsonl(problems.path, Problem) if p.split == split]
    net, tok = models.load(cfg.model, path=model.path)
    g = cfg.generate
    episodes = rollout.two_attempts(net, tok, todo, samples=1, temperature=g.temperature,
                                    max_new_tokens=g.max_new_tokens, batch_size=g.batch_size,
                                    templates=cfg.prompts)
    name = model.metadata.get("name", cfg.model.name or cfg.model.source)
    rows = [a for e in episodes for a in e.attempts(name)]
    write_jsonl(attempts.path, rows)
    attempts.metadata.update({"rows": len(rows), "problems": len(todo), "split": split,
                              "model": name})
