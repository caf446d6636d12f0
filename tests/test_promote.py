"""The promotion gate's decision, and registering a model with its manifest."""
import json

import pytest

from selfcorrect import __version__, config, promote

RULE = {"min_gain_over_base": 0.05, "min_gain_over_current": 0.0, "max_delta_c_to_i": 0.1}


def test_decide_each_condition_passes_and_fails():
    good = {"accuracy_t2": 0.6, "delta_c_to_i": 0.05}
    ok = promote.decide(good, {"accuracy_t2": 0.5}, None, RULE)
    assert ok.promote and all(r.startswith("pass") for r in ok.reasons)
    assert "no model promoted yet" in ok.reasons[1]
    small_gain = promote.decide(good, {"accuracy_t2": 0.58}, None, RULE)
    assert not small_gain.promote and small_gain.reasons[0].startswith("FAIL")
    current = {"id": "m-1", "metrics": {"accuracy_t2": 0.7}}
    worse = promote.decide(good, {"accuracy_t2": 0.5}, current, RULE)
    assert not worse.promote and worse.reasons[1].startswith("FAIL") and "m-1" in worse.reasons[1]
    breaks = promote.decide({"accuracy_t2": 0.6, "delta_c_to_i": 0.2}, {"accuracy_t2": 0.5}, None, RULE)
    assert [r[:4] for r in breaks.reasons] == ["pass", "pass", "FAIL"]
    assert "not promoted" in breaks.to_markdown()


def test_promote_writes_model_and_manifest_then_gate_reads_it(tmp_path):
    cfg = config.load("tiny", overrides=[f"output_dir={tmp_path}"]).to_dict()
    registry = promote.registry_uri(cfg["promotion"]["registry"], cfg["output_dir"])
    assert registry == str(tmp_path / "registry")
    assert promote.read_current(registry) is None
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights")
    entry = promote.manifest(cfg, {"accuracy_t2": 0.5, "delta_c_to_i": 0.0},
                             {"problems": "/data/problems"}, "tiny-score",
                             promote.Decision(True, ["pass: x"]))
    uri = promote.promote(str(model), registry, entry)
    assert (tmp_path / "registry" / "models" / entry["id"] / "model.safetensors").read_bytes() == b"weights"
    saved = json.loads((tmp_path / "registry" / "models" / entry["id"] / "manifest.json").read_text())
    assert saved["pipeline_version"] == __version__ and saved["config"] == cfg
    assert saved["data"] == {"problems": "/data/problems"} and saved["uri"] == uri
    current = promote.read_current(registry)
    assert current == saved
    # the next run's gate compares against it
    again = promote.decide({"accuracy_t2": 0.5, "delta_c_to_i": 0.0}, {"accuracy_t2": 0.0}, current,
                           {**RULE, "min_gain_over_current": 0.01})
    assert not again.promote and entry["id"] in again.reasons[1]


def test_read_current_names_the_bad_file_and_field(tmp_path):
    (tmp_path / "current.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"current.json: line 1: not valid JSON"):
        promote.read_current(str(tmp_path))
    (tmp_path / "current.json").write_text(json.dumps({"metrics": {}}))
    with pytest.raises(ValueError, match=r"current.json: field 'metrics.accuracy_t2'"):
        promote.read_current(str(tmp_path))


def test_promotion_config_rejects_out_of_range_values():
    with pytest.raises(config.ConfigError, match="promotion.max_delta_c_to_i"):
        config.load("tiny", overrides=["promotion.max_delta_c_to_i=2"])
    with pytest.raises(config.ConfigError, match="eval.confidence"):
        config.load("tiny", overrides=["eval.confidence=95"])


def test_promote_doctests():
    import doctest

    result = doctest.testmod(promote)
    assert result.attempted > 0 and result.failed == 0


def test_promote_to_gcs_registry(tmp_path, gs_prefix):
    from selfcorrect import storage

    registry = f"{gs_prefix}/models-registry"
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"w")
    (model / "sub" / "tokenizer.json").write_text("{}")
    entry = promote.manifest({"k": 1}, {"accuracy_t2": 0.25, "delta_c_to_i": 0.0}, {}, "m")
    uri = promote.promote(str(model), registry, entry)
    assert uri == f"{registry}/models/{entry['id']}"
    assert storage.read_bytes(f"{uri}/model.safetensors") == b"w"
    assert storage.exists(f"{uri}/sub/tokenizer.json") and storage.exists(f"{uri}/manifest.json")
    assert promote.read_current(registry)["metrics"]["accuracy_t2"] == 0.25


def test_compiled_pipeline_gates_promotion_with_a_condition(tmp_path):
    import yaml
    from kfp import compiler

    from selfcorrect.pipelines.score import score_pipeline

    path = tmp_path / "p.yaml"
    compiler.Compiler().compile(score_pipeline, str(path))
    ir = next(yaml.safe_load_all(path.read_text()))   # then the Kubernetes platform spec
    gate = ir["components"]["comp-selfcorrect-promotion-gate"]["dag"]["tasks"]
    assert set(gate) == {"decide-promotion", "condition-1"}
    condition = gate["condition-1"]["triggerPolicy"]["condition"]
    assert "decide-promotion-Output" in condition and condition.endswith("== true")
    inner = ir["components"][gate["condition-1"]["componentRef"]["name"]]["dag"]["tasks"]
    assert set(inner) == {"promote-model"}


def test_decision_rests_on_gated_eval_rows_and_refuses_results_that_disagree(tmp_path):
    from types import SimpleNamespace

    from selfcorrect import evaluate
    from selfcorrect.components import decide_promotion
    from selfcorrect.records import EvalRow, write_jsonl

    art = lambda name: SimpleNamespace(path=str(tmp_path / name), metadata={})  # noqa: E731
    row = lambda m, i, t1, t2: EvalRow(m, f"p{i}", 0, "math", "all", t1, t2, 0.1, False)  # noqa: E731
    rows = [row("base", 0, False, False), row("base", 1, True, True),
            row("trained", 0, False, True), row("trained", 1, True, True)]
    write_jsonl(str(tmp_path / "rows"), rows)
    summary = lambda m: evaluate.self_correction_metrics(  # noqa: E731
        [(r.correct_t1, r.correct_t2) for r in rows if r.model == m])
    cfg = {"output_dir": str(tmp_path)}
    (tmp_path / "results").write_text(json.dumps({"base": summary("base"), "trained": summary("trained")}))
    decision = art("decision")
    assert decide_promotion.python_func(**cfg, results=art("results"), decision=decision,
                                        eval_rows=art("rows")) is True       # 100% vs 50%
    assert decision.metadata["trained_episodes"] == 2
    (tmp_path / "results").write_text(json.dumps({"base": summary("base"),
                                                  "trained": {**summary("trained"), "accuracy_t2": 0.25}}))
    with pytest.raises(ValueError, match="trained accuracy_t2 = 0.25, but its gated eval rows give 1.0"):
        decide_promotion.python_func(**cfg, results=art("results"), decision=art("d2"),
                                     eval_rows=art("rows"))


def test_registry_in_a_pod_must_be_in_the_artifact_store(monkeypatch, tmp_path):
    """On a cluster a local registry vanishes with the pod: every run would see nothing promoted."""
    cfg = config.load("tiny", overrides=[f"output_dir={tmp_path}"]).to_dict()
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    with pytest.raises(ValueError, match="promotion.registry: .*vanishes with it.*output_dir"):
        promote.registry_uri(cfg["promotion"]["registry"], cfg["output_dir"])
    remote = config.load("tiny", overrides=["output_dir=gs://bucket/runs"], local=False).to_dict()
    assert promote.registry_uri(remote["promotion"]["registry"], remote["output_dir"]) == "gs://bucket/runs/registry"
    fuse = config.load("tiny", overrides=["promotion.registry=/gcs/bucket/registry"]).to_dict()
    assert promote.registry_uri(fuse["promotion"]["registry"], fuse["output_dir"]) == "/gcs/bucket/registry"


def test_the_registered_model_is_what_from_pretrained_loads_with_a_card_and_no_training_state(tmp_path):
    """Weights, tokenizer, config, a model card with the metrics and their intervals, the
    manifest; never the DeepSpeed optimizer state, checkpoints or TensorBoard logs."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfcorrect import models

    cfg = config.load("tiny", overrides=[f"output_dir={tmp_path}"])
    model_dir = tmp_path / "model"
    net, tok = models.load(cfg.model)
    models.save(net, tok, str(model_dir))
    for state in ("logs/events.out.tfevents.1", "checkpoints/step2/mp_rank_00_model_states.pt",
                  "global_step4/zero_pp_rank_0_mp_rank_00_optim_states.pt", "latest",
                  "zero_to_fp32.py"):
        (model_dir / state).parent.mkdir(parents=True, exist_ok=True)
        (model_dir / state).write_bytes(b"state")
    trained = {"n": 6, "accuracy_t1": 0.5, "accuracy_t2": 2 / 3, "delta": 1 / 6,
               "delta_i_to_c": 1 / 6, "delta_c_to_i": 0.0, "accuracy_t2_ci_low": 0.333,
               "accuracy_t2_ci_high": 1.0}
    entry = promote.manifest(cfg.to_dict(), trained, {"problems": "/p"}, "tiny-score")
    uri = promote.promote(str(model_dir), str(tmp_path / "registry"), entry,
                          base={"accuracy_t1": 0.5, "accuracy_t2": 0.5, "delta": 0.0})
    names = {p.relative_to(uri).as_posix() for p in __import__("pathlib").Path(uri).rglob("*")
             if p.is_file()}
    assert {"config.json", "model.safetensors", "README.md", "manifest.json"} <= names
    assert not {n for n in names if promote.training_state(n)}, names
    assert not {p.name for p in __import__("pathlib").Path(uri).iterdir()} & {"logs", "checkpoints",
                                                                            "global_step4"}
    card = (__import__("pathlib").Path(uri) / "README.md").read_text()
    assert "| Accuracy@t2 | 50.0 | 66.7 | [33.3, 100.0] |" in card
    assert "from_pretrained" in card and "6 problems" in card
    loaded = AutoModelForCausalLM.from_pretrained(uri)
    AutoTokenizer.from_pretrained(uri)
    key = "transformer.h.0.attn.c_attn.weight"
    assert loaded.state_dict()[key].equal(net.state_dict()[key])
