from typing import Optional

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Output

from selfcorrect.images import image


@dsl.component(base_image=image("selfcorrect-base"), install_kfp_package=False)
def evaluate(problems: Input[Dataset],
             base_attempts: Input[Dataset], base_verdicts: Input[Dataset],
             trained_attempts: Input[Dataset], trained_verdicts: Input[Dataset],
             metrics: Output[Metrics], report: Output[Markdown], html: Output[HTML],
             results: Output[Dataset], details: Output[Dataset], rows: Output[Dataset],
             stage1_steps: Optional[Input[Dataset]] = None,
             stage2_steps: Optional[Input[Dataset]] = None,
             stage1_attempts: Optional[Input[Dataset]] = None,
             stage1_verdicts: Optional[Input[Dataset]] = None,
             bootstrap_samples: int = 1000, confidence: float = 0.95, seed: int = 0):
    """Self-correction metrics for the base and the trained model, from verifier verdicts.

    Accuracy@t1, Accuracy@t2, Delta(t1,t2), Delta_i->c and Delta_c->i per model, with
    bootstrap intervals over (problem, sample). Only eval-split problems count: attempts and
    verdicts on train problems (the difficulty probe's) are left out.

    Args:
        problems: Problem records (JSONL or Parquet); the eval split is evaluated.
        base_attempts: The base model's Attempt records (two turns per episode).
        base_verdicts: Verdicts on base_attempts.
        trained_attempts: The trained model's Attempt records.
        trained_verdicts: Verdicts on trained_attempts.
        stage1_steps: TrainStep records of Stage I; adds its training curves to the HTML.
        stage2_steps: TrainStep records of Stage II; adds its curves.
        stage1_attempts: The Stage I model's attempts; with stage1_verdicts, adds it as the
            row "stage1".
        stage1_verdicts: Verdicts on stage1_attempts.
        bootstrap_samples: Bootstrap resamples per confidence interval.
        confidence: Confidence level of the intervals.
        seed: Bootstrap seed.

    Returns:
        metrics: The scalars per model (<model>_accuracy_t2, ...).
        report: Markdown tables with bootstrap intervals.
        html: The report with plots.
        results: {model: summary} JSON (fractions), what decide_promotion reads.
        details: Per task / per difficulty metrics and edit ratios as JSON.
        rows: One EvalRow per model and eval episode (JSONL; the eval_rows gate
            checks it).
    """
    import dataclasses

    from selfcorrect import evaluate as ev
    from selfcorrect import report as rep
    from selfcorrect.config import EvalConfig, build
    from selfcorrect.records import Attempt, Problem, TrainStep, Verdict, read, write_jsonl

    e = build(EvalConfig, {"bootstrap_samples": bootstrap_samples, "confidence": confidence,
                           "seed": seed}, "eval.")
    todo = [p for p in read(problems.path, Problem) if p.split == "eval"]
    ids = {p.id for p in todo}
    models, episodes = {}, []
    evaluated = [("base", base_attempts, base_verdicts)]
    if stage1_attempts is not None and stage1_verdicts is not None:
        evaluated.append(("stage1", stage1_attempts, stage1_verdicts))
    evaluated.append(("trained", trained_attempts, trained_verdicts))
    for name, att, ver in evaluated:
        verdicts = [v for v in read(ver.path, Verdict) if v.problem_id in ids]
        tries = [a for a in read(att.path, Attempt) if a.problem_id in ids]
        models[name] = ev.evaluate_model(verdicts, tries, todo, samples=e.bootstrap_samples,
                                         confidence=e.confidence, seed=e.seed)
        episodes += ev.eval_rows(name, verdicts, tries, todo)
        for key, value in models[name]["summary"].items():
            if value is not None:       # a conditional rate with no episode to condition on
                metrics.log_metric(f"{name}_{key}", value)
    training = {stage: {"steps": [dataclasses.asdict(r) for r in read(steps.path, TrainStep)]}
                for stage, steps in (("stage I", stage1_steps), ("stage II", stage2_steps))
                if steps is not None}
    rep.write(models, training, results=results.path, details=details.path,
              markdown_path=report.path, html_path=html.path)
    write_jsonl(rows.path, episodes)
    rows.metadata.update({"kind": "eval_rows", "rows": len(episodes), "format": "jsonl",
                          "models": list(models)})
