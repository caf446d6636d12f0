"""The testbed: chain task, noisy student, character tokenizer, SFT rows, pretraining, baselines."""
import random
from collections import Counter

import pytest

from selfcorrect import config, prompts
from selfcorrect.experiments import baselines, testbed
from selfcorrect.data import chain
from selfcorrect.records import Attempt, Problem, Verdict
from selfcorrect.train import sft
from selfcorrect.verify import verify


def test_chain_problems_are_solvable_split_and_half_hard():
    ps = chain.generate(300, 300, steps=3, hard_share=0.5, seed=4)
    assert Counter(p.split for p in ps) == {"train": 300, "eval": 300}
    assert len({p.id for p in ps}) == 600
    hard = Counter(chain.hard_steps(p.prompt) for p in ps)
    assert set(hard) == {0, 1} and 240 < hard[1] < 360
    for p in ps:
        start, ops = chain.parse(p.prompt)
        right = chain.solution(start, ops, chain.Student().values(start, ops))   # no rng: no errors
        assert verify(p, right).correct and right.endswith("=" + p.answer)


def test_chain_rejects_bad_settings_and_prompts():
    with pytest.raises(ValueError, match="chain_hard_share"):
        chain.generate(1, 1, hard_share=1.5)
    with pytest.raises(ValueError, match="chain problem '4\\*5'"):
        chain.parse("4*5")


def test_student_errors_are_the_misconceptions_and_touch_more_than_one_digit():
    st, rng = chain.Student(p_hard=0.6, p_easy=0.0), random.Random(0)
    hard = Problem("h", "math", "47+5", answer="52")       # carries
    easy = Problem("e", "math", "41+5", answer="46")
    wrong_hard = sum(not verify(hard, st.attempt(hard.prompt, rng)).correct for _ in range(2000))
    assert 0.56 < wrong_hard / 2000 < 0.64
    assert all(st.attempt(easy.prompt, rng) == "41+5=46" for _ in range(200))
    assert st.attempt("47+5", random.Random(1)) in ("47+5=52", "47+5=42")   # forgot the carry
    # a borrow taken the wrong way round: 42-5 -> 43, both digits wrong (not 37)
    assert {st.attempt("42-5", rng) for _ in range(100)} == {"42-5=37", "42-5=43"}


def test_attempt_two_mostly_resolves_or_second_guesses_and_rarely_checks():
    st, rng = chain.Student(), random.Random(2)
    ps = chain.generate(1500, 1, steps=2, seed=1)
    eps = [(p, *st.episode(p.prompt, rng)) for p in ps]
    kinds = Counter(k for *_, k in eps)
    assert 0.08 < kinds["check"] / len(eps) < 0.12
    assert kinds["resolve"] + kinds["doubt"] > 0.6 * len(eps) and kinds["copy"] < 0.2 * len(eps)
    for p, first, second, kind in eps:
        if kind == "check":      # a reliable check, stopping at attempt 1's first wrong step
            assert second.startswith("check:")
            verdicts = chain.verdicts_of(second)
            assert [step for step, _ in verdicts] == chain.steps_of(first)[:len(verdicts)]
            assert all((said == "ok") == chain.check_step(step) for step, said in verdicts)
            assert (verdicts[-1][1] == "wrong") == (not all(map(chain.check_step, chain.steps_of(first))))
        if kind == "doubt":      # the first step with a big operand written one short
            at = next(i for i, (_, op) in enumerate(chain.parse(p.prompt)[1]) if op >= st.doubt_from)
            was, now = chain.steps_of(first)[at], chain.steps_of(second)[at]
            assert chain.steps_of(second)[:at] == chain.steps_of(first)[:at]
            assert abs(int(was.split("=")[1]) - int(now.split("=")[1])) == 1
        if kind == "copy":
            assert second == first
    right = [(verify(p, a).correct, verify(p, b).correct) for p, a, b, _ in eps]
    c_to_i, i_to_c = sum(a and not b for a, b in right), sum(b and not a for a, b in right)
    assert c_to_i > i_to_c + 0.02 * len(eps)     # the traces' Delta is negative


def test_checking_documents_are_right_and_balanced():
    st, rng = chain.Student(), random.Random(3)
    docs = [chain.checking_document(rng, st) for _ in range(2000)]
    said, hard = [], 0
    for user, answer in docs:
        step = user["content"].removeprefix("check ")
        (checked, verdict), = chain.verdicts_of(answer["content"])
        assert checked == step and answer["content"] == chain.verdict(step)
        said.append(verdict == "ok")
        assert said[-1] == chain.check_step(step)
        start, ((op, operand),) = chain.parse(step.split("=")[0])
        hard += chain.is_hard(start, op, operand)
    assert 0.45 < sum(said) / len(said) < 0.55 and 0.45 < hard / len(docs) < 0.55
    with pytest.raises(ValueError, match="chain step '4\\*5=20'"):
        chain.check_step("4*5=20")


def test_tokenizer_is_characters_with_a_chat_template():
    tok = testbed.tokenizer()
    ids = tok("47+5=52", add_special_tokens=False)["input_ids"]
    assert len(ids) == 7 and tok.decode(ids) == "47+5=52"
    msgs = prompts.messages(Problem("p", "math", "47+5"), "47+5=42",
                            config.PromptConfig(testbed.ATTEMPT1, testbed.CORRECTION))
    text = prompts.render(tok, msgs)
    assert text == ("<|user|>47+5<|end|><|assistant|>47+5=42<|end|><|user|>"
                    f"{testbed.CORRECTION}<|end|><|assistant|>")
    assert tok.eos_token == "<|end|>" and tok.pad_token_id != tok.eos_token_id


def test_turn_rows_merge_turns_and_mask_only_answers():
    tok = testbed.tokenizer()
    msgs = prompts.messages(Problem("p", "math", "4+5"), "4+5=9",
                            config.PromptConfig("{prompt}", "fix")) + \
        [{"role": "assistant", "content": "4+5=8"}]
    (ids, mask), = sft.turn_rows(tok, msgs)
    targets = tok.decode([t for t, m in zip(ids, mask) if m], skip_special_tokens=False)
    assert targets == "4+5=9<|end|>4+5=8<|end|>"
    (ids2, mask2), = sft.turn_rows(tok, msgs, last_only=True)
    assert ids2 == ids and tok.decode([t for t, m in zip(ids2, mask2) if m],
                                      skip_special_tokens=False) == "4+5=8<|end|>"


def test_pretrain_cli_writes_a_model_the_rollout_uses(tmp_path, capsys):
    import json

    from selfcorrect import cli, models, rollout
    from selfcorrect.experiments import testbed_base

    out = tmp_path / "tb"
    assert cli.main(["pretrain", "--output", str(out), "--set", "pretrain.steps=3",
                     "--set", "pretrain.traces=50", "--set", "pretrain.problems=40",
                     "--set", "pretrain.checks=30",
                     "--set", "pretrain.hidden=32", "--set", "pretrain.layers=1"]) == 0
    for name in ("config.json", "tokenizer.json", "resolved_config.json", "metrics.json"):
        assert (out / name).is_file(), name
    cfg = config.load("testbed", overrides=[f"model.path={out}"])
    model, tok = models.load(cfg.model, str(out))
    eps = rollout.two_attempts(model, tok, [Problem("p", "math", "47+5", answer="52")],
                               max_new_tokens=5, templates=cfg.prompts)
    assert eps[0].first.prompt_ids[:1] == [tok.convert_tokens_to_ids("<|user|>")]
    # the base figures on the dev split (an untrained model: the checker's verdicts are noise)
    capsys.readouterr()
    assert cli.main(["testbed-base", "--model", str(out), "--set", "data.n_dev=6",
                     "--set", "generate.max_new_tokens=8", "--samples", "1"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["split"] == "dev" and figures["problems"] == 6
    g = figures["greedy"]
    assert g["delta"] == g["accuracy_t2"] - g["accuracy_t1"] == g["delta_i_to_c"] - g["delta_c_to_i"]
    assert set(figures["sampled"]) == set(g)
    # the checker put to given attempts' steps: 47+5=42 (hard, wrong), 42+1=43, 41+5=46 (right)
    c = testbed_base.checker_figures(model, tok, ["47+5=42,42+1=43", "41+5=46"])
    assert (c["steps"], c["hard_steps"], c["solving_on_hard"]) == (3, 1, 0)
    assert round(c["solving_accuracy"], 6) == round(200 / 3, 6)
    assert c["checker_on_wrong_steps"] in (0, 100) and c["checker_on_right_steps"] in (0, 50, 100)
    assert abs(3 * c["checker_accuracy"] - 2 * c["checker_on_right_steps"] - c["checker_on_wrong_steps"]) < 1e-6


def test_pretrain_refuses_another_task(capsys):
    from selfcorrect import cli

    assert cli.main(["pretrain", "--output", "x", "--set", "data.source=arithmetic"]) == 2
    assert "data.source=chain" in capsys.readouterr().err


def _records(pid, texts_ok):
    attempts, verdicts = [], []
    for sample, ((t1, ok1), (t2, ok2)) in enumerate(texts_ok):
        attempts += [Attempt(pid, sample, 1, t1, "m"), Attempt(pid, sample, 2, t2, "m")]
        verdicts += [Verdict(pid, sample, 1, ok1, float(ok1), "v"),
                     Verdict(pid, sample, 2, ok2, float(ok2), "v")]
    return attempts, verdicts


def test_star_keeps_episodes_with_a_correct_second_attempt():
    p = Problem("q", "math", "4+5", answer="9")
    a, v = _records("q", [(("4+5=8", False), ("4+5=9", True)), (("4+5=9", True), ("4+5=8", False)),
                          (("4+5=9", True), ("4+5=9", True))])
    data = baselines.conversations("star", [p], a, v)
    assert [(c[1]["content"], c[3]["content"]) for c in data] == [("4+5=8", "4+5=9"),
                                                                   ("4+5=9", "4+5=9")]


def test_pair_sft_pairs_an_incorrect_with_a_correct_attempt():
    p = Problem("q", "math", "4+5", answer="9")
    a, v = _records("q", [(("4+5=8", False), ("4+5=7", False)), (("4+5=9", True), ("4+5=9", True))])
    data = baselines.conversations("pair_sft", [p], a, v, per_problem=10)
    assert sorted((c[1]["content"], c[3]["content"]) for c in data) == [("4+5=7", "4+5=9"),
                                                                       ("4+5=8", "4+5=9")]


def test_baselines_refuse_unverified_attempts_and_unknown_methods():
    p = Problem("q", "math", "4+5", answer="9")
    a, v = _records("q", [(("4+5=8", False), ("4+5=9", True))])
    with pytest.raises(ValueError, match="without a verdict.*'q' sample 0 turn 2"):
        baselines.conversations("star", [p], a, v[:1])
    with pytest.raises(ValueError, match="method: 'dpo'"):
        baselines.conversations("dpo", [p], a, v)


def test_pretrain_and_sft_baseline_components_run_on_their_inputs(tmp_path):
    """Both components through python_func: the testbed model, then Pair-SFT on hand-written
    verified attempts (records as sample_attempts / verify_attempts write them)."""
    import json
    from types import SimpleNamespace

    from kfp.dsl import Metrics

    from selfcorrect.components.pretrain import pretrain_testbed
    from selfcorrect.components.sft_baseline import sft_baseline
    from selfcorrect.records import write_jsonl

    art = lambda p: SimpleNamespace(path=str(p), metadata={})  # noqa: E731
    cfg = config.load("testbed", overrides=[
        "pretrain.steps=2", "pretrain.traces=20", "pretrain.checks=10", "pretrain.problems=20",
        "pretrain.hidden=32", "pretrain.layers=1", "train.stage1_steps=1", "train.stage2_steps=1",
        "train.problems_per_step=1", "train.samples_per_problem=2"]).to_dict()
    base, m = art(tmp_path / "base"), Metrics()
    m.path = str(tmp_path / "m1")
    pretrain_testbed.python_func(config=cfg, model=base, metrics=m)
    assert (tmp_path / "base" / "config.json").is_file() and m.metadata["parameters"] > 0

    p = Problem("chain-47+5+1", "math", "47+5+1", answer="53", split="train")
    attempts, verdicts = _records(p.id, [(("47+5=42,42+1=43", False), ("47+5=52,52+1=53", True))])
    for name, rows in (("p", [p]), ("a", attempts), ("v", verdicts)):
        write_jsonl(str(tmp_path / f"{name}.jsonl"), rows)
    out, m2 = art(tmp_path / "pair"), Metrics()
    m2.path = str(tmp_path / "m2")
    sft_baseline.python_func(config=cfg, method="pair_sft", problems=art(tmp_path / "p.jsonl"),
                             attempts=art(tmp_path / "a.jsonl"), verdicts=art(tmp_path / "v.jsonl"),
                             base_model=base, model=out, metrics=m2)
    assert m2.metadata["examples"] == 1.0 and out.metadata["method"] == "pair_sft"
    history = json.loads((tmp_path / "pair" / "metrics.json").read_text())["steps"]
    assert len(history) == 2 and history[0]["tokens"] > 0
