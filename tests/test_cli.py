from selfcorrect import __version__
from selfcorrect.cli import main


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
