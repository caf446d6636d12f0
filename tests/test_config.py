import pytest

from selfcorrect import config
from selfcorrect.config import ConfigError


def test_presets_load_and_differ():
    tiny, demo = config.load("tiny"), config.load("demo")
    assert tiny.model.source == "tiny" and demo.model.source == "gguf"
    assert demo.model.path.endswith(".gguf") and demo.model.path.startswith("/")


def test_precedence_defaults_preset_file_set(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("train:\n  alpha: 3\n  beta1: 0.5\n")
    cfg = config.load("tiny", str(f), ["train.alpha=7", "data.operations=*"])
    assert cfg.train.alpha == 7.0           # --set beats the file
    assert cfg.train.beta1 == 0.5           # the file beats the preset and defaults
    assert cfg.train.stage1_steps == 2      # the preset beats the defaults
    assert cfg.data.operations == "*" and cfg.train.beta2 == 0.1


@pytest.mark.parametrize("item, words", [
    ("train.bogus=1", ["train.bogus", "unknown key", "stage1_steps"]),
    ("train.baseline=ppo", ["train.baseline", "'ppo'", "rloo, mean, none"]),
    ("train.zero_stage=4", ["train.zero_stage", "0, 1, 2, 3"]),
    ("train.stage1_steps=many", ["train.stage1_steps", "expected int"]),
    ("model.source=gguf", ["model.path", "required"]),
    ("data.operations=/", ["data.operations"]),
    ("data.filter_temperature=-1", ["data.filter_temperature", ">= 0"]),
    ("eval.sampling_k=1", ["eval.sampling_k", "k >= 2"]),
    ("data.filter_samples=0", ["data.filter_samples"]),
    ("train.samples_per_problem=1", ["RLOO", "samples_per_problem"]),
    ("nothing", ["key=value"]),
])
def test_bad_keys_and_values_name_the_key(item, words):
    with pytest.raises(ConfigError) as e:
        config.load("tiny", overrides=[item])
    for w in words:
        assert w in str(e.value)


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match="demo, testbed, tiny"):
        config.load("huge")


def test_round_trip_through_kfp_struct_floats():
    cfg = config.load("tiny")
    data = cfg.to_dict()
    data["train"]["stage1_steps"] = 2.0     # what a KFP dict parameter turns ints into
    again = config.from_dict(data)
    assert again == cfg and isinstance(again.train.stage1_steps, int)


def test_numbers_given_for_text_keys_are_taken_as_text():
    cfg = config.load("tiny", overrides=["resources.cpu_limit=8", "name=2024"])
    assert cfg.resources.cpu_limit == "8" and cfg.name == "2024"
    with pytest.raises(ConfigError, match="name: expected str"):
        config.load("tiny", overrides=["name=true"])


def test_exponent_without_a_dot_is_a_float():
    from selfcorrect import config

    assert config.load("tiny", overrides=["train.learning_rate=5e-4"]).train.learning_rate == 5e-4
    with pytest.raises(config.ConfigError, match="train.learning_rate: expected float"):
        config.load("tiny", overrides=["train.learning_rate=fast"])


def test_values_as_text_and_dotted_keys_from_a_pipeline_dict_literal():
    """A dict literal of pipeline-parameter channels reaches a step with its values as text
    ("3.0" for an int, "false", "5e-06") and dotted keys; they mean what they say, and a bad
    one names its key and type as before."""
    cfg = config.load("tiny")
    text = {k: str(v).lower() if isinstance(v, bool) else
            (f"{v}.0" if isinstance(v, int) else str(v)) for k, v in config.flat(cfg).items()}
    assert text["train.stage1_steps"] == "2.0" and text["train.skip_stage1"] == "false"
    assert config.from_dict(text) == cfg
    assert config.from_dict({"train.learning_rate": "5e-06", "model": {"seed": "3"}}).model.seed == 3
    for key, value, words in (("train.stage1_steps", "2.5", "expected int, got float 2.5"),
                              ("train.skip_stage1", "maybe", "expected bool, got str 'maybe'"),
                              ("train.bogus", "1", "train.bogus: unknown key")):
        with pytest.raises(ConfigError, match=words):
            config.from_dict({key: value})


def test_flat_lists_the_keys_of_the_given_sections():
    cfg = config.load("tiny")
    assert config.flat(cfg, "output_dir", "verify") == {
        "output_dir": cfg.output_dir, **{f"verify.{k}": v for k, v in cfg.to_dict()["verify"].items()}}
    assert len(config.flat(cfg)) == sum(len(v) if isinstance(v, dict) else 1
                                        for v in cfg.to_dict().values())
