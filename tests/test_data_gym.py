"""reasoning-gym as a problem source: offline, seeded, stable ids, and the shared verifier
agrees with reasoning-gym's own scorer on right and wrong answers."""
import re

import pytest

from selfcorrect import config
from selfcorrect.data import gym
from selfcorrect.data.prepare import prepare
from selfcorrect.verify import verify


def _wrong(answer: str) -> str:
    """A different answer of the same shape: its first integer plus one (12 -> 13,
    3/7 -> 4/7, -4 -> -3, \\dfrac{3}{7} -> \\dfrac{4}{7})."""
    return re.sub(r"-?\d+", lambda m: str(int(m.group()) + 1), answer, count=1)


@pytest.mark.parametrize("dataset", gym.GYM_DATASETS)
def test_verifier_agrees_with_reasoning_gym_scorer(dataset):
    import reasoning_gym

    data = reasoning_gym.create_dataset(dataset, size=25, seed=7)
    for entry in data:
        p = gym.problem_of(dataset, entry)
        right = f"Let me work it out.\nFinal Answer: The final answer is ${p.answer}$. I hope it is correct."
        wrong = _wrong(p.answer)
        assert verify(p, right).correct and data.score_answer(p.answer, entry) == 1.0, (p.prompt, p.answer)
        assert not verify(p, f"The final answer is ${wrong}$.").correct, (p.prompt, p.answer, wrong)
        assert data.score_answer(wrong, entry) < 1.0


def test_generated_set_is_seeded_split_by_id_and_grows_stably():
    small = gym.generate("simple_equations", 6, 4, seed=3)
    again = gym.generate("simple_equations", 6, 4, seed=3)
    assert small == again and len({p.id for p in small}) == 10
    assert [p.split for p in small].count("eval") == 4
    assert all(p.id.startswith("rg-simple_equations-") and p.source == "reasoning_gym:simple_equations"
               for p in small)
    bigger = {p.id: p.split for p in gym.generate("simple_equations", 12, 8, seed=3)}
    assert all(bigger.get(p.id, p.split) == p.split for p in small)   # a problem never changes side


def test_prepare_from_config_and_unknown_dataset_named():
    cfg = config.load(None, overrides=["data.source=reasoning_gym", "data.gym_dataset=chain_sum",
                                       "data.n_train=3", "data.n_eval=2"])
    rows, stats = prepare(cfg.data)
    assert stats["written"] == 5 and {p.task for p in rows} == {"math"}
    with pytest.raises(config.ConfigError, match="data.gym_dataset.*gsm_symbolic"):
        config.load(None, overrides=["data.source=reasoning_gym", "data.gym_dataset=arc_agi"])


def test_config_offers_exactly_the_checked_datasets():
    import dataclasses

    (f,) = [f for f in dataclasses.fields(config.DataConfig) if f.name == "gym_dataset"]
    assert f.metadata["choices"] == gym.GYM_DATASETS and f.default == gym.GYM_DATASETS[0]
