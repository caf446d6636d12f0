from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from selfcorrect.images import image


@dsl.component(base_image=image("selfcorrect-trainer"), install_kfp_package=False)
def sample_attempts(config: dict, problems: Input[Dataset], model: Input[Model],
                    attempts: Output[Dataset], split: str = "eval",
                    difficulty_probe: bool = False):
    """Two attempts per problem of `split` (greedy unless generate.temperature > 0).

    difficulty_probe: when config.data.drop_always_solved or drop_never_solved is on, also
    data.filter_samples first attempts per train problem at data.filter_temperature (0: at
    train.temperature, the training policy's sampling; turn 1 only, samples 0..k-1), so
    verify_attempts judges them and filter_problems can drop the problems the model always
    or never solves. Off, or with both flags off: `split` only.
    """
    from selfcorrect import config as cfg_mod
    from selfcorrect import models, rollout
    from selfcorrect.records import Problem, read, write_jsonl

    cfg = cfg_mod.from_dict(config)
    every = read(problems.path, Problem)
    todo = [p for p in every if p.split == split]
    net, tok = models.load(cfg.model, path=model.path)
    g, d = cfg.generate, cfg.data
    episodes = rollout.two_attempts(net, tok, todo, samples=1, temperature=g.temperature,
                                    max_new_tokens=g.max_new_tokens, batch_size=g.batch_size,
                                    templates=cfg.prompts)
    name = model.metadata.get("name", cfg.model.name or cfg.model.source)
    rows = [a for e in episodes for a in e.attempts(name)]
    probed = []
    if difficulty_probe and d.filters:
        probed = [p for p in every if p.split == "train" and p.split != split]
        rows += rollout.first_attempts(net, tok, probed, name, samples=d.filter_samples,
                                       temperature=d.filter_temperature or cfg.train.temperature,
                                       max_new_tokens=g.max_new_tokens,
                                       batch_size=g.batch_size, templates=cfg.prompts)
    write_jsonl(attempts.path, rows)
    attempts.metadata.update({"rows": len(rows), "problems": len(todo), "split": split,
                              "model": name, "probed_train_problems": len(probed)})
