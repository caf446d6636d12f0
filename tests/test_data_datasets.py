"""Your data as users bring it: Hugging Face datasets (save_to_disk folders, folders of data
files, .arrow files) with their official splits, separate eval and dev files, other column
names, and caps that say what they dropped. Every dataset is made here (no download)."""
import json

import pytest

from selfcorrect.config import ConfigError, DataConfig
from selfcorrect.data import prepare as prep
from selfcorrect.data.fingerprint import fingerprint
from selfcorrect.records import RecordError

datasets = pytest.importorskip("datasets")


def gsm8k_rows(n: int, start: int = 0) -> list[dict]:
    return [{"question": f"Tom has {i} apples and buys {i} more. How many now?",
             "answer": f"He has {i} + {i} = {2 * i}.\n#### {2 * i:,}"} for i in range(start, start + n)]


def math_rows(n: int, start: int = 0) -> list[dict]:
    return [{"question": f"Compute ${i}/{i + 1}$ plus zero.", "solution": f"It is $\\boxed{{\\frac{{{i}}}{{{i + 1}}}}}$.",
             "level": "Level 1", "type": "Prealgebra"} for i in range(start, start + n)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_a_saved_dataset_dict_gives_its_official_test_split_as_eval(tmp_path):
    folder = tmp_path / "gsm8k"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(gsm8k_rows(30)),
                          "test": datasets.Dataset.from_list(gsm8k_rows(12, start=100))}
                         ).save_to_disk(str(folder))
    problems, stats = prep.prepare(DataConfig(source="gsm8k", path=str(folder)))
    by = {s: [p for p in problems if p.split == s] for s in ("train", "dev", "eval")}
    assert (len(by["train"]), len(by["dev"]), len(by["eval"])) == (30, 0, 12)   # 0: all rows
    assert {p.answer for p in by["eval"]} == {str(2 * i) for i in range(100, 112)}  # "#### 2,0x"
    assert stats["over_cap"] == 0 and stats["read"] == 42
    assert "train 30, eval 12" in prep.describe(stats, DataConfig())


def test_dev_is_carved_from_the_train_split_by_hash(tmp_path):
    folder = tmp_path / "gsm8k"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(gsm8k_rows(200)),
                          "test": datasets.Dataset.from_list(gsm8k_rows(10, start=500))}
                         ).save_to_disk(str(folder))
    problems, _ = prep.prepare(DataConfig(source="gsm8k", path=str(folder), dev_fraction=0.25))
    counts = {s: sum(p.split == s for p in problems) for s in ("train", "dev", "eval")}
    assert counts["eval"] == 10 and 30 <= counts["dev"] <= 70 and counts["train"] + counts["dev"] == 200
    again, _ = prep.prepare(DataConfig(source="gsm8k", path=str(folder), dev_fraction=0.25))
    assert again == problems                                          # ids decide: repeatable


def test_a_folder_of_parquet_files_with_other_column_names(tmp_path):
    """MATH rows whose problem column is called `question` (data.columns maps it)."""
    data = tmp_path / "math" / "data"
    data.mkdir(parents=True)
    datasets.Dataset.from_list(math_rows(8)).to_parquet(str(data / "train-00000-of-00001.parquet"))
    datasets.Dataset.from_list(math_rows(5, start=50)).to_parquet(str(data / "test-00000-of-00001.parquet"))
    cfg = DataConfig(source="math", path=str(tmp_path / "math"), columns="problem=question")
    problems, _ = prep.prepare(cfg)
    evals = [p for p in problems if p.split == "eval"]
    assert len(evals) == 5 and evals[0].answer == "\\frac{50}{51}"
    assert evals[0].prompt == "Compute $50/51$ plus zero."
    with pytest.raises(RecordError, match=r"math\[test\]: row 1.*'prob'.*missing \(data.columns maps problem"):
        prep.prepare(DataConfig(source="math", path=str(tmp_path / "math"), columns="problem=prob"))
    with pytest.raises(RecordError, match="no split 'validation'; its splits: train, test"):
        prep.prepare(DataConfig(source="math", path=str(tmp_path / "math"), eval_split="validation"))


def test_separate_eval_and_dev_files_and_caps_that_say_what_they_dropped(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", gsm8k_rows(20) + gsm8k_rows(1, start=300))
    test = write_jsonl(tmp_path / "test.jsonl", gsm8k_rows(6, start=300))   # 300 is in both
    dev = write_jsonl(tmp_path / "dev.jsonl", gsm8k_rows(4, start=400))
    cfg = DataConfig(source="gsm8k", path=train, eval_path=test, dev_path=dev, n_train=15)
    problems, stats = prep.prepare(cfg)
    counts = {s: sum(p.split == s for p in problems) for s in ("train", "dev", "eval")}
    assert counts == {"train": 15, "dev": 4, "eval": 6}
    assert stats["duplicate_prompts"] == 1                  # the train copy of a test problem
    assert "2 * 300" not in " ".join(p.prompt for p in problems if p.split == "train")
    assert stats["splits"]["train"] == {"kept": 15, "over_cap": 5}
    line = prep.describe(stats, cfg)
    assert "train 15 (data.n_train=15 dropped 5 rows; 0 keeps all), dev 4, eval 6" in line
    assert "1 duplicate prompt dropped" in line


def test_an_arrow_file_without_splits_is_split_by_id_hash(tmp_path):
    datasets.Dataset.from_list(gsm8k_rows(40)).save_to_disk(str(tmp_path / "one"))
    arrow = next((tmp_path / "one").glob("*.arrow"))
    problems, _ = prep.prepare(DataConfig(source="gsm8k", path=str(arrow)))
    assert len(problems) == 40 and {p.split for p in problems} == {"train", "eval"}


def test_generic_rows_may_be_dev_and_generated_sources_count_dev_exactly(tmp_path):
    rows = [{"id": f"g{i}", "task": "math", "prompt": f"{i}+1?", "answer": str(i + 1),
             "split": ["train", "dev", "eval"][i % 3]} for i in range(9)]
    problems, _ = prep.prepare(DataConfig(source="generic", path=write_jsonl(tmp_path / "g.jsonl", rows)))
    assert [p.split for p in problems] == [r["split"] for r in rows]
    rows[0]["split"] = "test"
    with pytest.raises(RecordError, match="split.*expected 'train', 'dev' or 'eval'"):
        prep.prepare(DataConfig(source="generic", path=write_jsonl(tmp_path / "h.jsonl", rows)))
    made, _ = prep.prepare(DataConfig(source="arithmetic", n_train=5, n_eval=4, n_dev=3,
                                      dev_fraction=0.2))
    assert [p.split for p in made].count("dev") == 3 and len(made) == 12
    plain, _ = prep.prepare(DataConfig(source="arithmetic"))            # 0: the generator's 16
    assert (sum(p.split == "train" for p in plain), sum(p.split == "eval" for p in plain)) == (16, 16)
    with pytest.raises(ValueError, match="data.n_dev.*data.dev_fraction"):
        prep.prepare(DataConfig(source="arithmetic", n_dev=3))


def test_bad_data_settings_name_the_key():
    with pytest.raises(ConfigError, match="data.eval_path: .*csv"):
        DataConfig(source="gsm8k", path="train.jsonl", eval_path="test.csv")
    with pytest.raises(ConfigError, match="data.dev_fraction"):
        DataConfig(eval_fraction=0.5, dev_fraction=0.5)
    with pytest.raises(ConfigError, match="data.n_dev: must be >= 0"):
        DataConfig(n_dev=-1)
    with pytest.raises(ConfigError, match="data.columns: 'question'; use field=column"):
        DataConfig(source="gsm8k", path="hf:openai/gsm8k", columns="question")


def test_the_fingerprint_follows_a_dataset_folders_content(tmp_path):
    folder = tmp_path / "d"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(gsm8k_rows(3))}).save_to_disk(str(folder))
    cfg = DataConfig(source="gsm8k", path=str(folder))
    before = fingerprint(cfg)
    assert fingerprint(cfg) == before
    datasets.DatasetDict({"train": datasets.Dataset.from_list(gsm8k_rows(4))}).save_to_disk(str(folder))
    assert fingerprint(cfg) != before
