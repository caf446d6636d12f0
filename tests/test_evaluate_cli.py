"""`selfcorrect evaluate`: generation + Beam verification + metrics + report, outside the DAG."""
import json

import pytest

from selfcorrect import cli, models
from selfcorrect.config import ModelConfig
from selfcorrect.data import arithmetic
from selfcorrect.records import write_jsonl

FAST = ["--preset", "tiny", "--set", "verify.direct_running_mode=in_memory",
        "--set", "generate.max_new_tokens=4", "--set", "eval.bootstrap_samples=50"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalcli")
    for name, seed in (("model", 0), ("base", 1)):
        net, tok = models.tiny_model(ModelConfig(seed=seed))
        models.save(net, tok, str(root / name))
    problems = arithmetic.generate(2, 3, seed=5)
    write_jsonl(str(root / "problems.jsonl"), problems)
    return root


def test_evaluate_two_models_writes_results_and_report(setup, capsys):
    """Two sampled episodes per problem, so the sampling study runs too."""
    out = setup / "out"
    rc = cli.main(["evaluate", "--model", str(setup / "model"), "--baseline", str(setup / "base"),
                   "--problems", str(setup / "problems.jsonl"), "--output", str(out), *FAST,
                   "--samples", "2", "--set", "generate.temperature=1.0"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| baseline |" in printed and "| model |" in printed and "report.html" in printed
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["baseline", "model"]
    for name, m in results.items():
        assert m["n"] == 6                      # the eval split only, 3 problems x 2 samples
        verdicts = (out / name / "verdicts.jsonl").read_text().splitlines()
        assert len(verdicts) == 12              # two turns, verified by the Beam step
        correct = [json.loads(v)["correct"] for v in verdicts]
        assert m["accuracy_t1"] == pytest.approx(sum(correct[0::2]) / 6)
        assert m["k"] == 2 and 0 <= m["majority_half_k_t2"] <= 1
    page = (out / "report.html").read_text()
    assert page.count("<table") == 5 and "Sampling study" in page and page.count("data:image/png;base64,") == 3
    assert "| model |" in (out / "report.md").read_text()


def test_swap_control_regenerates_attempt2_after_another_problems_attempt1(setup):
    out = setup / "swap"
    assert cli.main(["evaluate", "--model", str(setup / "model"), "--problems",
                     str(setup / "problems.jsonl"), "--output", str(out), *FAST,
                     "--swap-control"]) == 0
    swapped = [json.loads(x) for x in (out / "model" / "swap-attempts.jsonl").read_text().splitlines()]
    verdicts = (out / "model" / "swap-verdicts.jsonl").read_text().splitlines()
    assert len(swapped) == len(verdicts) == 3 and {a["turn"] for a in swapped} == {2}
    m = json.loads((out / "results.json").read_text())["model"]
    wrong = json.loads((out / "details.json").read_text())["model"]["outcomes"]
    n_wrong = sum(not o[2] for o in wrong)
    assert m["swap_fix_rate_n"] == m["fix_rate_n"] == n_wrong
    if n_wrong:
        assert 0 <= m["swap_fix_rate"] <= 1 and m["swap_gap"] == pytest.approx(
            m["fix_rate"] - m["swap_fix_rate"])
    assert all(len(o) == 7 and o[5] is not None for o in wrong)
    assert "swapped y1" in (out / "report.md").read_text()


def test_evaluate_errors_name_the_file(setup, capsys):
    only_eval = setup / "eval_only.jsonl"
    write_jsonl(str(only_eval), arithmetic.generate(0, 2, seed=5))
    rc = cli.main(["evaluate", "--model", str(setup / "model"), "--problems", str(only_eval),
                   "--split", "train", *FAST])
    assert rc == 2
    assert "eval_only.jsonl: no problems with split 'train'" in capsys.readouterr().err
    rc = cli.main(["evaluate", "--model", str(setup / "model"), "--problems", str(only_eval),
                   "--samples", "2", *FAST])
    assert rc == 2 and "generate.temperature" in capsys.readouterr().err
    bad = setup / "bad.jsonl"
    bad.write_text('{"id": "p", "task": "math", "prompt": 3}\n')
    rc = cli.main(["evaluate", "--model", str(setup / "model"), "--problems", str(bad), *FAST])
    assert rc == 2
    assert "bad.jsonl: row 1: field 'prompt'" in capsys.readouterr().err
    rc = cli.main(["evaluate", "--model", str(setup), "--problems",
                   str(setup / "problems.jsonl"), *FAST])
    assert rc == 2
    assert "neither a save_pretrained folder" in capsys.readouterr().err


def test_evaluate_a_model_in_a_bucket(setup, gcs, capsys, monkeypatch, tmp_path):
    """--model gs://...: copied once to the local cache (SELFCORRECT_CACHE), then loaded."""
    from selfcorrect import storage

    monkeypatch.setenv("SELFCORRECT_CACHE", str(tmp_path))
    uri = f"{gcs}/models/evalcli"
    storage.upload_tree(str(setup / "model"), uri)
    out = setup / "out-gcs"
    rc = cli.main(["evaluate", "--model", uri, "--problems", str(setup / "problems.jsonl"),
                   "--output", str(out), *FAST])
    assert rc == 0, capsys.readouterr().err
    assert json.loads((out / "results.json").read_text())["model"]["n"] == 3
    assert list((tmp_path / "models").glob("*/config.json"))


def test_evaluate_an_unknown_hub_id_is_an_error(setup, capsys, monkeypatch, tmp_path):
    """No network here: the offline Hub has no such model, and says which one and where."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    rc = cli.main(["evaluate", "--model", "someorg/some-model", "--revision", "v2",
                   "--problems", str(setup / "problems.jsonl"), "--output", str(tmp_path), *FAST])
    assert rc == 2
    assert "the Hub model someorg/some-model at revision v2" in capsys.readouterr().err
