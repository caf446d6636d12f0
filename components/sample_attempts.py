from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from selfcorrect.images import image


@dsl.component(base_image=image("selfcorrect-trainer"), install_kfp_package=False)
def sample_attempts(problems: Input[Dataset], model: Input[Model], attempts: Output[Dataset],
                    split: str = "eval", temperature: float = 0.0, max_new_tokens: int = 64,
                    batch_size: int = 16, attempt1_template: str = "",
                    correction_template: str = "", dtype: str = "auto",
                    drop_always_solved: bool = False, drop_never_solved: bool = False,
                    filter_samples: int = 4, filter_temperature: float = 0.0,
                    train_temperature: float = 1.0, seed: int = 0,
                    trust_remote_code: bool = False, attn_implementation: str = "auto"):
    """Two attempts per problem of `split`: an answer, then a self-correction of it.

    With a difficulty-filter flag on (drop_always_solved or drop_never_solved), also
    filter_samples first attempts per train problem (turn 1 only, samples 0..k-1) at
    filter_temperature, so verify_attempts judges them and filter_problems can drop the
    problems the model always or never solves.

    Args:
        problems: Problem records (JSONL or Parquet).
        model: A save_pretrained model folder (prepare_model's or a training step's output).
        split: Which problems get two attempts: eval, dev or train.
        temperature: Decoding temperature of the two attempts; 0 is greedy.
        max_new_tokens: Tokens generated per attempt at most.
        batch_size: Problems generated for at once.
        attempt1_template: Template of the first attempt's prompt ({prompt}); "": the task's
            default.
        correction_template: The self-correction instruction; "": the task's default.
        dtype: Weights' dtype: auto (fp32 on CPU, bf16 on GPU), float32, bfloat16 or float16.
        drop_always_solved: The difficulty filter will drop always-solved train problems:
            probe them.
        drop_never_solved: The difficulty filter will drop never-solved train problems:
            probe them.
        filter_samples: The probe's first attempts per train problem.
        filter_temperature: The probe's sampling temperature; 0: train_temperature.
        train_temperature: The training policy's sampling temperature.
        seed: Seed of sampled attempts and of the probe: the same inputs give the same rows.
        trust_remote_code: Run the model's own code from its folder (as model.trust_remote_code).
        attn_implementation: auto, eager, sdpa or flash_attention_2.

    Returns:
        attempts: Attempt records, two turns per problem (JSONL).
    """
    from selfcorrect import models, rollout
    from selfcorrect.config import DataConfig, GenerateConfig, ModelConfig, PromptConfig, build
    from selfcorrect.records import Problem, read, write_jsonl

    g = build(GenerateConfig, {"temperature": temperature, "max_new_tokens": max_new_tokens,
                               "batch_size": batch_size, "seed": seed}, "generate.")
    d = build(DataConfig, {"drop_always_solved": drop_always_solved, "filter_samples": filter_samples,
                           "drop_never_solved": drop_never_solved,
                           "filter_temperature": filter_temperature}, "data.")
    templates = PromptConfig(attempt1=attempt1_template, correction=correction_template)
    every = read(problems.path, Problem)
    todo = [p for p in every if p.split == split]
    settings = {"dtype": dtype, "trust_remote_code": trust_remote_code,
                "attn_implementation": attn_implementation}
    net, tok = models.load(build(ModelConfig, settings, "model."), path=model.path)
    episodes = rollout.two_attempts(net, tok, todo, samples=1, temperature=g.temperature,
                                    max_new_tokens=g.max_new_tokens, batch_size=g.batch_size,
                                    templates=templates, seed=g.seed)
    name = model.metadata.get("name", "model")
    rows = [a for e in episodes for a in e.attempts(name)]
    probed = []
    if d.filters:
        probed = [p for p in every if p.split == "train" and p.split != split]
        rows += rollout.first_attempts(net, tok, probed, name, samples=d.filter_samples,
                                       temperature=d.filter_temperature or train_temperature,
                                       max_new_tokens=g.max_new_tokens,
                                       batch_size=g.batch_size, templates=templates,
                                       seed=g.seed + 1)
    write_jsonl(attempts.path, rows)
    attempts.metadata.update({"rows": len(rows), "problems": len(todo), "split": split,
                              "model": name, "probed_train_problems": len(probed)})
