"""The README's "Your model, your data", followed as written: its my-run.yaml (with the paths
pointed at files made here, and the tiny preset's sizes) and its `selfcorrect run` command, on a
GSM8K-format and a MATH-format train and test file and a small model folder. The whole pipeline
runs (prepare, the gates, sampling, Beam verification, both stages, evaluation, promotion); the
eval set is the test file, no row is dropped silently, and the promoted folder loads with
`from_pretrained` alone and carries a model card."""
import json
import re
from pathlib import Path

import pytest
import yaml

from selfcorrect import config, models
from selfcorrect.cli import main
from selfcorrect.records import Problem, read

pytestmark = pytest.mark.local
README = Path(__file__).resolve().parents[1] / "README.md"


def readme_yaml() -> dict:
    section = README.read_text().split("## Your model, your data", 1)[1].split("\n## ", 1)[0]
    return yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))


def readme_command() -> list[str]:
    section = README.read_text().split("## Your model, your data", 1)[1].split("\n## ", 1)[0]
    line = next(l for l in section.splitlines() if "selfcorrect run --config" in l)
    return line.split("#")[0].split()[1:]          # ["run", "--config", "my-run.yaml"]


ROWS = {
    "gsm8k": lambda i: {"question": f"Sam has {i} pens and gets {i + 1} more. How many pens?",
                        "answer": f"{i} + {i + 1} = {2 * i + 1}\n#### {2 * i + 1}"},
    "math": lambda i: {"problem": f"What is ${i} + {i + 2}$?",
                       "solution": f"Add: $\\boxed{{{2 * i + 2}}}$.", "level": "Level 1"},
}


@pytest.mark.parametrize("fmt", sorted(ROWS))
def test_the_readme_path_from_your_files_to_a_promoted_model(fmt, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, rows in (("train.jsonl", range(10)), ("test.jsonl", range(50, 56))):
        Path(name).write_text("".join(json.dumps(ROWS[fmt](i)) + "\n" for i in rows))
    net, tok = models.load(config.load("tiny").model)
    models.save(net, tok, "my-model")
    run = readme_yaml()
    assert run["data"]["source"] == "gsm8k" and run["data"]["eval_path"] == "test.jsonl"
    run["data"]["source"] = fmt
    run["model"]["path"] = "./my-model"               # README: "or ./my-model"
    Path("my-run.yaml").write_text(yaml.safe_dump(run))
    command = readme_command()
    assert command == ["run", "--config", "my-run.yaml"]
    assert main(command + ["--preset", "tiny", "--set", f"output_dir={tmp_path / 'runs'}",
                           "--set", "data.n_train=0", "--set", "data.n_eval=0",
                           "--set", "promotion.min_gain_over_base=-1",
                           # the random test model answers some MATH prompts with blanks: the
                           # attempts gate would (rightly) stop the run
                           "--set", "gates.max_empty_share=1"]) == 0

    root = tmp_path / "runs" / "kfp-local"
    (problems_file,) = [p for p in root.rglob("problems") if p.is_file()
                        and "prepare-problems" in str(p)]
    problems = read(str(problems_file), Problem)
    evals = [p for p in problems if p.split == "eval"]
    assert sorted(p.prompt for p in evals) == sorted(ROWS[fmt](i)[
        "question" if fmt == "gsm8k" else "problem"] for i in range(50, 56))
    assert len(problems) == 16                        # 10 train + 6 test rows: none dropped
    assert {p.split for p in problems} <= {"train", "dev", "eval"}

    registry = tmp_path / "runs" / "registry" / "models"
    (promoted,) = list(registry.iterdir())
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(promoted)
    AutoTokenizer.from_pretrained(promoted)
    card = (promoted / "README.md").read_text()
    assert "Accuracy@t2" in card and "from_pretrained" in card and "my-gsm8k" in card
    assert not list(promoted.rglob("*optim_states*")) and not (promoted / "logs").exists()
