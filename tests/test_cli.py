import json
import subprocess
import sys

import pytest
import yaml

from selfcorrect import __version__, config
from selfcorrect.cli import main
from selfcorrect.records import Attempt, Problem, read, write_jsonl


def test_compile_writes_the_versioned_yaml(tmp_path, capsys):
    assert main(["compile", "--output", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip().endswith(f"selfcorrect-pipeline-{__version__}.yaml")


def test_bad_config_stops_before_any_work_with_exit_2(tmp_path, capsys):
    assert main(["run", "--preset", "tiny", "--set", f"output_dir={tmp_path}",
                 "--set", "train.kl_estimator=k9"]) == 2
    err = capsys.readouterr().err
    assert "train.kl_estimator" in err and "k2, k3" in err
    assert not any(tmp_path.iterdir())       # nothing started


def test_subcommands_are_delegated(tmp_path, capsys):
    assert main(["validate", "--kind", "problems", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err


def test_help_lists_the_presets_and_every_command(capsys):
    from selfcorrect.config import preset_names

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "{" + ",".join(preset_names()) + "}" in text
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for command in ("run", "compile", "config", "prepare", "verify", "evaluate", "submit"):
        assert f"\n    {command} " in text
    assert "kfp.local" not in text and "IR YAML" not in text     # no internals


def test_an_unknown_command_gets_a_suggestion(capsys):
    assert main(["evalute", "--model", "m"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'evalute'; did you mean 'evaluate'?" in err and "prepare" in err


def test_an_unknown_key_gets_a_suggestion(capsys):
    assert main(["config", "show", "--preset", "tiny", "--set", "train.learning_rat=1e-5"]) == 2
    assert "train.learning_rat: unknown key; did you mean train.learning_rate?" in capsys.readouterr().err
    assert main(["config", "show", "--set", "trian.stage1_steps=1"]) == 2
    assert "trian: unknown key; did you mean train?" in capsys.readouterr().err
    assert main(["config", "show", "--set", "data.source=gsm8"]) == 2
    assert "did you mean gsm8k?" in capsys.readouterr().err


def test_config_show_prints_the_resolved_settings_as_a_config_file(tmp_path, capsys):
    assert main(["config", "show", "--preset", "tiny", "--set", "train.stage1_steps=7"]) == 0
    text = capsys.readouterr().out
    shown = yaml.safe_load(text)
    assert shown["train"]["stage1_steps"] == 7 and shown["model"]["source"] == "tiny"
    (tmp_path / "shown.yaml").write_text(text)
    again = config.load(None, str(tmp_path / "shown.yaml"), local=False)
    assert again == config.load("tiny", overrides=["train.stage1_steps=7"], local=False)


def test_prepare_and_verify_take_preset_config_and_set(tmp_path, capsys):
    problems = tmp_path / "problems.jsonl"
    assert main(["prepare", "--preset", "tiny", "--set", "data.n_train=3", "--set",
                 "data.n_eval=2", "--output", str(problems)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["source"], out["train"], out["eval"]) == ("arithmetic", 3, 2)
    assert main(["prepare", "--set", "data.n_train=3", "--n-train", "4", "--output",
                 str(problems)]) == 0                        # a flag wins over the settings
    assert json.loads(capsys.readouterr().out)["train"] == 4
    attempts = tmp_path / "attempts.jsonl"
    rows = read(str(problems), Problem)
    write_jsonl(str(attempts), [Attempt(problem_id=p.id, sample=0, turn=1, completion="no",
                                        model="m") for p in rows])
    verify = ["verify", "--problems", str(problems), "--attempts", str(attempts), "--output",
              str(tmp_path / "v.jsonl"), "--set", "verify.direct_running_mode=in_memory",
              "--direct_num_workers=1"]
    assert main(verify) == 0 and json.loads(capsys.readouterr().out)["correct"] == 0
    (tmp_path / "cli_checks.py").write_text("def yes(problem, completion):\n    return True\n")
    sys.path.insert(0, str(tmp_path))
    try:
        assert main([*verify, "--set", "verify.custom=cli_checks:yes"]) == 0
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("cli_checks", None)
    assert json.loads(capsys.readouterr().out)["correct"] == len(rows)
    assert main([*verify, "--custom", "cli_checks:nope"]) == 2
    assert "verify.custom: 'cli_checks:nope': no module named 'cli_checks'" in capsys.readouterr().err


def test_commands_with_settings_take_config_and_set(capsys):
    for command in ("run", "compile", "evaluate", "prepare", "verify", "validate", "submit",
                    "schedule", "repro", "pretrain"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "--config" in text and "--set KEY=VALUE" in text and "--preset {" in text, command


def test_the_beam_apitools_warning_is_not_shown():
    code = "import selfcorrect.verify.beam; import apache_beam.io.gcp.internal.clients.bigquery"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "apitools" not in done.stderr
