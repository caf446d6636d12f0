"""`selfcorrect run`'s console: one line per finished step, and while a step runs its name,
elapsed time, live progress line and log file (pipelines/progress.py, fed as kfp.local feeds it)."""
from rich.console import Console

from selfcorrect.pipelines.progress import TaskLogs


def test_the_running_step_shows_its_progress_and_log_then_one_line(tmp_path):
    console = Console(record=True, width=200, force_terminal=False)
    logs = TaskLogs(console, tmp_path, {"train-stage2": "train-stage2"})
    logs.write("Executing task 'train-stage2'\n")
    logs.write("loading\n")
    logs.write("SCoRe stage 2:  10%|#         | 1/10 [00:03<00:27,  3.0s/step, r1=0.25, r2=0.50]")
    logs.write("\rSCoRe stage 2:  20%|##        | 2/10 [00:06<00:24,  3.0s/step, r1=0.50, r2=0.75, "
               "tok_s=812]")
    view = Console(record=True, width=200)
    view.print(logs)
    text = view.export_text()
    assert "running train-stage2" in text and "2/10" in text and "tok_s=812" in text
    assert f"log: {tmp_path / 'train-stage2.log'}" in text
    logs.write("\n[figures] r2 0.75\nTask 'train-stage2' finished with status SUCCESS\n")
    finished = console.export_text()
    assert "ok" in finished and "train-stage2  r2 0.75" in finished
    view = Console(record=True, width=200)
    view.print(logs)
    assert "running" not in view.export_text()             # nothing runs now
    logs.close()
    assert "2/10" in (tmp_path / "train-stage2.log").read_text()
