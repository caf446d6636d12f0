"""Components are usable alone from their compiled YAML; compiling is reproducible; the
component docs are generated from the specs and committed up to date."""
import json
import subprocess
import sys
from pathlib import Path

import yaml
from kfp import components, dsl, local
from kfp.dsl import Dataset

from selfcorrect import __version__, images, records
from selfcorrect.pipelines.compile import compile_pipeline, component_file
from selfcorrect.pipelines.compile import components as all_components
from selfcorrect.records import Attempt, Problem, Verdict, read, write_jsonl

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


def test_every_input_and_output_is_described_in_the_yaml(tmp_path):
    """Issue 14: KFP fills description fields from the Google-style docstrings; every
    component's YAML describes the component, each input and each output."""
    from selfcorrect.pipelines.compile import compile_components

    for path in compile_components(tmp_path):
        text = path.read_text()
        (comp,) = yaml.safe_load(text)["components"].values()
        assert "\n# Description: " in text, path.name    # KFP keeps it in the header
        for side in ("inputDefinitions", "outputDefinitions"):
            for kind in ("parameters", "artifacts"):
                for name, io in comp.get(side, {}).get(kind, {}).items():
                    assert io.get("description", "").strip(), f"{path.name}: {name}"


def test_verifier_gate_and_evaluator_from_yaml_in_another_pipeline_run_locally(tmp_path):
    """Issue 14's closing evidence: three compiled component YAMLs used alone, with only
    their documented inputs (no run configuration), in a small pipeline run by kfp.local."""
    out = tmp_path / "dist"
    compile_pipeline(out)
    load = lambda name: components.load_component_from_file(str(component_file(out, name)))  # noqa: E731
    verify, gate, evaluate = load("verify_attempts"), load("validate_data"), load("evaluate")

    problems = [Problem(id="p1", task="math", prompt="What is 2+3?", answer="5", split="eval"),
                Problem(id="p2", task="math", prompt="What is 4*4?", answer="16", split="eval")]
    attempts = [Attempt("p1", 0, 1, "2+3 = 6. Final answer: 6", "m"),
                Attempt("p1", 0, 2, "Correction: 2+3 = 5. The final answer is 5", "m"),
                Attempt("p2", 0, 1, "4*4 = 16, so the answer is 16", "m"),
                Attempt("p2", 0, 2, "Still 16", "m")]
    # another team's pipeline may hand over Parquet: the components read either format
    records.write(str(tmp_path / "problems.parquet"), problems)
    write_jsonl(str(tmp_path / "attempts.jsonl"), attempts)

    @dsl.pipeline(name="check-answers")
    def check_answers(problems_uri: str, attempts_uri: str) -> Dataset:
        probs = dsl.importer(artifact_uri=problems_uri, artifact_class=Dataset, reimport=False)
        atts = dsl.importer(artifact_uri=attempts_uri, artifact_class=Dataset, reimport=False)
        checked = gate(kind="problems", data=probs.output)
        verdicts = verify(problems=probs.output, attempts=atts.output, direct_num_workers=1,
                          direct_running_mode="in_memory").after(checked)
        gated = gate(kind="verdicts", data=verdicts.outputs["verdicts"], problems=probs.output,
                     quarantine=True)
        ok = gated.outputs["clean"]
        report = evaluate(problems=probs.output, base_attempts=atts.output, base_verdicts=ok,
                          trained_attempts=atts.output, trained_verdicts=ok,
                          bootstrap_samples=50)
        return report.outputs["results"]

    local.init(runner=local.SubprocessRunner(use_venv=False),
               pipeline_root=str(tmp_path / "root"), raise_on_error=True)
    task = check_answers(problems_uri=str(tmp_path / "problems.parquet"),
                         attempts_uri=str(tmp_path / "attempts.jsonl"))
    (run,) = (tmp_path / "root").glob("check-answers-*")
    verdicts = {(v.problem_id, v.turn): v.correct
                for v in read(str(run / "verify-attempts" / "verdicts"), Verdict)}
    assert verdicts == {("p1", 1): False, ("p1", 2): True, ("p2", 1): True, ("p2", 2): True}
    results = json.loads(Path(task.output.path).read_text())
    assert results["trained"]["accuracy_t1"] == 0.5 and results["trained"]["accuracy_t2"] == 1.0
    assert results["trained"]["delta_i_to_c"] == 0.5 and results["base"] == results["trained"]


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
    for name in ("problems", "attempts", "runner", "timeout_s", "beam_args", "verdicts"):
        assert f"| `{name}` |" in text
    assert "config" not in text
    assert f"selfcorrect-verifier:{__version__}" in text
    assert "| `beam_args` | List | no | `[]` | Passed straight to Beam" in text
    assert "| `timeout_s` | Float | no | `10.0` | Seconds one answer check may take. |" in text


def test_the_docs_examples_compile_with_the_component_yaml(tmp_path):
    """Each component's example in docs/components.md loads its YAML and compiles."""
    from kfp import compiler

    from selfcorrect.pipelines.compile import compile_components

    sys.path.insert(0, str(REPO / "scripts"))
    import gen_component_docs

    compile_components(tmp_path / "dist")
    for name, comp in all_components().items():
        code = gen_component_docs.example(name, comp.component_spec.inputs or {})
        scope = {}
        exec(code.replace('"dist/', f'"{tmp_path}/dist/'), scope)
        compiler.Compiler().compile(scope["my_pipeline"], str(tmp_path / f"{name}.yaml"))
