"""Components are usable alone from their compiled YAML; compiling is reproducible; the
component docs are generated from the specs and committed up to date."""
import subprocess
import sys
from pathlib import Path

import yaml
from kfp import components, dsl, local
from kfp.dsl import Dataset

from selfcorrect import __version__, images, records
from selfcorrect.config import RunConfig
from selfcorrect.pipelines.compile import compile_pipeline, component_file
from selfcorrect.pipelines.compile import components as all_components
from selfcorrect.records import Attempt, Problem, Verdict, read_jsonl, write_jsonl

REPO = Path(__file__).resolve().parent.parent


def _files(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*.yaml"))}


def test_compiling_twice_gives_byte_identical_versioned_files(tmp_path):
    for out in ("a", "b"):   # separate processes: protobuf map order changes between them
        subprocess.run([sys.executable, "-m", "selfcorrect.cli", "compile", "--output",
                        str(tmp_path / out)], check=True, capture_output=True)
    first = _files(tmp_path / "a")
    assert first == _files(tmp_path / "b")
    assert len(first) == 1 + len(all_components())
    for name in all_components():
        path = component_file(tmp_path / "a", name)
        text = path.read_text()
        assert path.name == f"{name}-{__version__}.yaml"
        assert text.startswith(f"# selfcorrect {__version__}: component {name}\n")
        for executor in yaml.safe_load(text)["deploymentSpec"]["executors"].values():
            assert executor["container"]["image"] in {images.image(n) for n in images.IMAGES}


def test_verifier_and_gate_from_yaml_in_another_pipeline_run_locally(tmp_path):
    out = tmp_path / "dist"
    compile_pipeline(out)
    verify = components.load_component_from_file(str(component_file(out, "verify_attempts")))
    gate = components.load_component_from_file(str(component_file(out, "validate_data")))

    problems = [Problem(id="p1", task="math", prompt="What is 2+3?", answer="5", split="eval"),
                Problem(id="p2", task="math", prompt="What is 4*4?", answer="16", split="eval")]
    attempts = [Attempt("p1", 0, 1, "2+3 = 6. Final answer: 6", "m"),
                Attempt("p1", 0, 2, "Correction: 2+3 = 5. The final answer is 5", "m"),
                Attempt("p2", 0, 1, "4*4 = 16, so the answer is 16", "m"),
                Attempt("p2", 0, 2, "Still 16", "m")]
    # another team's pipeline may hand over Parquet: the components read either format
    records.write(str(tmp_path / "problems.parquet"), problems)
    write_jsonl(str(tmp_path / "attempts.jsonl"), attempts)
    cfg = RunConfig().to_dict()
    cfg["verify"].update(direct_num_workers=1, direct_running_mode="in_memory")

    @dsl.pipeline(name="check-answers")
    def check_answers(config: dict, problems_uri: str, attempts_uri: str) -> Dataset:
        probs = dsl.importer(artifact_uri=problems_uri, artifact_class=Dataset, reimport=False)
        atts = dsl.importer(artifact_uri=attempts_uri, artifact_class=Dataset, reimport=False)
        checked = gate(kind="problems", data=probs.output)
        verdicts = verify(config=config, problems=probs.output,
                          attempts=atts.output).after(checked)
        gate(kind="verdicts", data=verdicts.outputs["verdicts"], problems=probs.output)
        return verdicts.outputs["verdicts"]

    local.init(runner=local.SubprocessRunner(use_venv=False),
               pipeline_root=str(tmp_path / "root"), raise_on_error=True)
    task = check_answers(config=cfg, problems_uri=str(tmp_path / "problems.parquet"),
                         attempts_uri=str(tmp_path / "attempts.jsonl"))
    verdicts = {(v.problem_id, v.turn): v.correct
                for v in read_jsonl(task.output.path, Verdict)}
    assert verdicts == {("p1", 1): False, ("p1", 2): True, ("p2", 1): True, ("p2", 2): True}


def test_component_docs_are_generated_from_the_specs():
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_component_docs.py"),
                           "--check"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    text = (REPO / "docs" / "components.md").read_text()
    for name in all_components():
        assert f"## `{name}`" in text


def test_component_docs_name_every_input_and_output():
    sys.path.insert(0, str(REPO / "scripts"))
    import gen_component_docs

    comp = all_components()["verify_attempts"]
    text = gen_component_docs.section("verify_attempts", comp)
    for name in ("config", "problems", "attempts", "beam_args", "verdicts"):
        assert f"| `{name}` |" in text
    assert f"selfcorrect-verifier:{__version__}" in text
    assert "| `beam_args` | List | no | `[]` |" in text
