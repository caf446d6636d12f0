"""verify.custom: your check, by import path, in the Beam transform, the training rewards and
evaluation alike; the example in examples/qa; its failures as dead letters; bad paths as
ConfigErrors before any work."""
import json
import sys
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from selfcorrect import config
from selfcorrect.config import ConfigError
from selfcorrect.data.prepare import prepare
from selfcorrect.records import Attempt, Problem
from selfcorrect.train import loop
from selfcorrect.verify import beam as vbeam
from selfcorrect.verify import verify
from selfcorrect.verify.custom import judge, load_check

QA = Path(__file__).resolve().parents[1] / "examples" / "qa"
CHECK = "qa_checks:exact_match"


@pytest.fixture
def qa_path(monkeypatch):
    monkeypatch.syspath_prepend(str(QA))
    return QA


@pytest.fixture
def checks(tmp_path, monkeypatch):
    """A module of checks made in the test, importable as `my_checks`."""
    (tmp_path / "my_checks.py").write_text(
        "def partial(problem, completion):\n"
        "    return 0.5 if problem.answer in completion else 0.0\n"
        "def broken(problem, completion):\n"
        "    if 'boom' in completion:\n"
        "        raise RuntimeError('the check itself failed')\n"
        "    return True\n"
        "def wrong_type(problem, completion):\n"
        "    return 'yes'\n"
        "def always(problem, completion):\n"
        "    return True\n"
        "NOT_A_FUNCTION = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_checks"
    sys.modules.pop("my_checks", None)
    load_check.cache_clear()


def final(x) -> str:
    return f"Final Answer: The final answer is ${x}$. I hope it is correct."


def qa_problems(qa_path):
    cfg = config.load(None, str(qa_path / "qa.yaml"), [f"data.path={qa_path / 'qa.jsonl'}"])
    rows, _ = prepare(cfg.data)
    return cfg, rows


def test_the_example_check_judges_the_example_file(qa_path):
    cfg, problems = qa_problems(qa_path)
    assert cfg.verify.custom == CHECK
    assert [p.split for p in problems].count("eval") == 3 and len(problems) == 8
    ocean = next(p for p in problems if p.id == "qa-largest-ocean")
    assert verify(ocean, final("the Pacific Ocean"), custom=CHECK).correct
    wrong = verify(ocean, final("Atlantic"), custom=CHECK)
    assert (wrong.correct, wrong.reward, wrong.verifier) == (False, 0.0, f"custom:{CHECK}")
    assert wrong.reason == "got 'Atlantic', expected 'Pacific|Pacific Ocean'"


def test_the_beam_transform_and_the_training_reward_give_the_same_rewards(qa_path):
    _, problems = qa_problems(qa_path)
    answers = {"qa-longest-river": "the Nile", "qa-capital-japan": "Kyoto",
               "qa-gold-symbol": "Au."}
    attempts = [Attempt(problem_id=pid, sample=0, turn=t, completion=final(text), model="m")
                for pid, text in answers.items() for t in (1, 2)]
    by_id = {p.id: p for p in problems}
    rewards = {(a.problem_id, a.turn): loop.verifier_reward(by_id[a.problem_id], a.completion,
                                                            custom=CHECK) for a in attempts}
    assert rewards == {(pid, t): float(pid != "qa-capital-japan") for pid in answers for t in (1, 2)}
    with BeamTestPipeline() as p:
        out = ({"problems": p | "P" >> beam.Create(problems),
                "attempts": p | "A" >> beam.Create(attempts)}
               | vbeam.VerifyAttempts(custom=CHECK))
        assert_that(out["verdicts"] | beam.Map(lambda v: ((v.problem_id, v.turn), v.reward)),
                    equal_to(list(rewards.items())))


def test_a_failing_check_is_a_dead_letter_and_the_rest_goes_on(checks):
    problem = Problem(id="q", task="math", prompt="?", answer="42")
    attempts = [Attempt(problem_id="q", sample=s, turn=1, completion=c, model="m")
                for s, c in enumerate(["42", "boom", "41"])]
    pipeline = BeamTestPipeline()
    with pipeline as p:
        out = ({"problems": p | "P" >> beam.Create([problem]),
                "attempts": p | "A" >> beam.Create(attempts)}
               | vbeam.VerifyAttempts(custom=f"{checks}:broken"))
        assert_that(out["verdicts"] | beam.Map(lambda v: (v.sample, v.correct)),
                    equal_to([(0, True), (2, True)]), label="verdicts")
        assert_that(out["dead_letters"] | beam.Map(lambda d: (d["sample"], d["error"])),
                    equal_to([(1, "RuntimeError: the check itself failed")]), label="dead")
    counters = {c.key.metric.name: c.committed for c in
                pipeline.result.metrics().query(MetricsFilter().with_namespace(vbeam.NAMESPACE))["counters"]}
    assert counters["verifier_errors"] == 1 and counters["verdicts"] == 2


def test_verdicts_a_check_may_return(checks):
    p = Problem(id="q", task="math", prompt="?", answer="42")
    assert judge(f"{checks}:partial", p, "it is 42") == (False, 0.5, f"not accepted by {checks}:partial")
    assert judge(f"{checks}:always", p, "") == (True, 1.0, "")
    with pytest.raises(TypeError, match="returned str 'yes'; return True or False"):
        judge(f"{checks}:wrong_type", p, "")
    with pytest.raises(RuntimeError, match="verify.custom my_checks:broken failed on problem 'q'"):
        loop.verifier_reward(p, "boom", custom=f"{checks}:broken")


def test_a_bad_import_path_is_a_config_error_before_any_work(checks, tmp_path):
    cases = {"nowhere.at_all:check": "no module named 'nowhere'",
             f"{checks}:alway": "has no 'alway'; did you mean my_checks:always?",
             f"{checks}:NOT_A_FUNCTION": "NOT_A_FUNCTION is a int, not a function",
             "my_checks.always": "use module:function"}
    for spec, message in cases.items():
        with pytest.raises(ConfigError, match="verify.custom: .*" + message.replace("?", r"\?")):
            config.load("tiny", overrides=[f"verify.custom={spec}",
                                           f"output_dir={tmp_path / 'run'}"])
    assert not (tmp_path / "run").exists()
    # the Beam step's own entry point checks it before reading any file
    with pytest.raises(ConfigError, match="no module named 'nowhere'"):
        vbeam.run(str(tmp_path / "missing.jsonl"), str(tmp_path / "missing.jsonl"),
                  str(tmp_path / "out.jsonl"), custom="nowhere.at_all:check")


@pytest.mark.slow
def test_training_rewards_come_from_the_custom_check(checks, tmp_path):
    """One Stage I step of the tiny model: the math verifier would give random text reward 0,
    the custom check `always` gives every attempt 1."""
    cfg = config.load("tiny", overrides=["train.stage1_steps=1", f"verify.custom={checks}:always"])
    problems = [Problem(id=f"p{i}", task="math", prompt=f"What is {i} + {i}?", answer=str(2 * i))
                for i in range(4)]
    loop.run_stage(cfg, 1, init_path=None, reference_path=None, problems=problems,
                   output_dir=str(tmp_path / "stage1"), log_dir=str(tmp_path / "tb"))
    (step,) = json.loads((tmp_path / "stage1" / "metrics.json").read_text())["steps"]
    assert step["reward_t1"] == step["reward_t2"] == 1.0


def test_a_cluster_run_is_reminded_to_install_the_check():
    from selfcorrect import cluster_checks

    cfg = config.load("tiny", overrides=["verify.custom=mypkg.checks:exact_match"], local=False)
    (found,) = [f for f in cluster_checks.findings(cfg) if f.key == "verify.custom"]
    assert not found.error and "install the package" in found.message
