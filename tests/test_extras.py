"""The light install and the extras: commands name the extra they lack; verify runs in process.

The last test installs `pip install -c containers/requirements.lock .` (no extras) into a fresh
venv and verifies a file of attempts there (slow: about a minute, from pip's cache).
"""
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from selfcorrect import cli, extras
from selfcorrect.records import Attempt, Problem, read, write_jsonl
from selfcorrect.verify import cli as vcli

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def final(x) -> str:
    return f"Final Answer: The final answer is ${x}$. I hope it is correct."


def files(tmp_path):
    problems = [Problem(id=f"p{a}", task="math", prompt=f"{a}+{a}?", answer=str(2 * a)) for a in range(3)]
    attempts = [Attempt(problem_id=p.id, sample=0, turn=t, model="m",
                        completion=final(int(p.answer) + (t == 1))) for p in problems for t in (1, 2)]
    attempts.append(Attempt(problem_id="nowhere", sample=0, turn=1, completion=final(1), model="m"))
    attempts.append(Attempt(problem_id="p1", sample=1, turn=1, completion="x", model="m"))
    pp, ap = tmp_path / "problems.jsonl", tmp_path / "attempts.jsonl"
    write_jsonl(pp, problems)
    write_jsonl(ap, attempts)
    return str(pp), str(ap)


def test_every_extra_named_in_the_code_is_an_extra_of_the_package():
    assert set(extras.MODULES) <= set(PYPROJECT["optional-dependencies"])
    every = {e for r in PYPROJECT["optional-dependencies"]["all"] for e in r[r.index("[") + 1:-1].split(",")}
    assert set(cli.NEEDS.values()) and {e for need in cli.NEEDS.values() for e in need} <= every


def test_the_core_needs_none_of_the_heavy_stacks():
    core = " ".join(PYPROJECT["dependencies"])
    for heavy in ("torch", "transformers", "deepspeed", "apache-beam", "kfp", "great-expectations",
                  "datasets", "pyarrow", "google-cloud-storage"):
        assert heavy not in core


def test_a_command_names_the_extra_it_lacks(monkeypatch, capsys):
    monkeypatch.setitem(extras.MODULES, "kfp", ("kfp", "no_such_module_anywhere"))
    assert cli.main(["compile", "--output", "dist"]) == 2
    assert "selfcorrect compile needs the [kfp] extra: pip install 'selfcorrect[kfp]'" \
        in capsys.readouterr().err
    with pytest.raises(extras.MissingExtra, match=r"\[kfp\] extra"):
        extras.require("it", "kfp", "train")


def test_verify_in_process_gives_what_beam_gives(tmp_path):
    problems, attempts = files(tmp_path)
    out = {}
    for mode in ("beam", "local"):
        args = ["--problems", problems, "--attempts", attempts, "--output", str(tmp_path / f"{mode}.jsonl"),
                "--dead-letters", str(tmp_path / f"{mode}-dead.jsonl")]
        assert vcli.main(args + (["--in-process"] if mode == "local" else [])) == 0
        out[mode] = (read(tmp_path / f"{mode}.jsonl", vcli.Verdict),
                     (tmp_path / f"{mode}-dead.jsonl").read_text())
    assert out["beam"] == out["local"]
    verdicts, dead = out["local"]
    assert [(v.problem_id, v.turn, v.correct) for v in verdicts] == [
        ("p0", 1, False), ("p0", 2, True), ("p1", 1, False), ("p1", 2, True), ("p1", 1, False),
        ("p2", 1, False), ("p2", 2, True)]
    assert [json.loads(line)["problem_id"] for line in dead.splitlines()] == ["nowhere"]


def test_verify_without_beam_runs_in_process_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(extras.MODULES, "beam", ("no_such_module_anywhere",))
    problems, attempts = files(tmp_path)
    args = ["--problems", problems, "--attempts", attempts, "--output", str(tmp_path / "v.jsonl")]
    assert vcli.main(args) == 0
    captured = capsys.readouterr()
    assert "verifying in this process" in captured.err
    assert json.loads(captured.out) == {"verdicts": 7, "correct": 3, "dead_letters": 1}
    assert vcli.main(args + ["--runner", "DaskRunner"]) == 2       # Beam options need Beam
    assert "selfcorrect[beam]" in capsys.readouterr().err


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())


@pytest.mark.slow
def test_the_light_install_verifies_a_file_and_is_a_fifth_of_the_full_one(tmp_path):
    venv = tmp_path / "light"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin/python"), "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run(pip + ["install", "-c", str(REPO / "containers/requirements.lock"), str(REPO)],
                   check=True, cwd=tmp_path, env={**os.environ, "PIP_NO_INPUT": "1"})
    problems, attempts = files(tmp_path)
    done = subprocess.run([str(venv / "bin/selfcorrect"), "verify", "--problems", problems, "--attempts",
                           attempts, "--output", str(tmp_path / "v.jsonl")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"verdicts": 7, "correct": 3, "dead_letters": 1}
    assert "verifying in this process" in done.stderr
    needs = subprocess.run([str(venv / "bin/selfcorrect"), "compile"], capture_output=True, text=True)
    assert needs.returncode == 2 and "pip install 'selfcorrect[kfp]'" in needs.stderr
    light = _size(next(venv.glob("lib/python3*/site-packages")))
    full = _size(Path(next(p for p in sys.path if p.endswith("site-packages"))))
    assert light * 5 < full, (light, full)
