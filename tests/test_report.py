"""The report renders: Markdown and HTML hold the tables, the HTML holds real PNG plots."""
import base64
import re

from selfcorrect import evaluate as ev
from selfcorrect import report
from selfcorrect.records import Attempt, Problem, Verdict


def _models():
    problems = [Problem(f"arith-{a}+{a}", "math", "?", str(2 * a), difficulty=f"+ {len(str(a))}-digit")
                for a in (3, 14, 25, 36)]
    out = {}
    for name, flips in (("base", (False, False, True, True)), ("trained", (True, True, True, False))):
        verdicts = [Verdict(p.id, 0, turn, ok if turn == 2 else p.id.endswith("+3"), 1.0)
                    for p, ok in zip(problems, flips) for turn in (1, 2)]
        attempts = [Attempt(p.id, 0, t, f"answer {t}" if name == "trained" else "same", name)
                    for p in problems for t in (1, 2)]
        out[name] = ev.evaluate_model(verdicts, attempts, problems, samples=100)
    return out


def test_markdown_has_summary_and_breakdowns():
    md = report.markdown(_models())
    assert md.startswith("# Self-correction")
    assert "| base |" in md and "| trained |" in md and "Accuracy@t2" in md
    assert "trained: + 1-digit" in md and "trained: + 2-digit" in md and "base: math" in md
    # base: one wrong attempt 1 (arith-14+14... all but +3 wrong), conditional rates per difficulty
    assert "## Second attempt given the first" in md and "| trained: + 2-digit |" in md


def test_html_has_tables_and_decodable_images():
    training = {"stage I": {"stage": 1, "steps": [{"step": 0.0, "reward_t1": 0.1, "reward_t2": 0.2},
                                                  {"step": 1.0, "reward_t1": 0.2, "reward_t2": 0.4}]}}
    page = report.render_html(_models(), training, title="Report <test>")
    assert page.startswith("<!doctype html>") and "Report &lt;test&gt;" in page
    assert page.count("<table") == 4   # summary, per task, per difficulty, conditional rates
    assert "P(right t2 | wrong t1)" in page and "changed | right t1" in page
    assert "Accuracy@t2" in page and "same answer y2" in page and "trained: + 2-digit" in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 4            # accuracy by turn, i->c/c->i, edit histogram, stage I curve
    for png in images:
        assert base64.b64decode(png).startswith(b"\x89PNG\r\n\x1a\n")
    assert "Training curve of stage I" in page
    no_training = report.render_html(_models())
    assert len(re.findall(r"data:image/png", no_training)) == 3
