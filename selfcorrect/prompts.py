"""Attempt-1 and self-correction prompts (the paper's App. C), and how they become tokens.

The correction instruction never says whether the first attempt was right. With a chat
model the turns are user/assistant messages through its chat template; a model without
one (the tiny test model) gets the same turns as plain text.
"""
from __future__ import annotations

from selfcorrect.records import Problem

FINAL_ANSWER = ('At the end of the Solution, when you give your final answer, write it in the form '
                '"Final Answer: The final answer is $answer$. I hope it is correct."')

ATTEMPT1 = {
    "math": ("You are a math expert. When you respond, respond only with the Solution of the final "
             "Problem, thinking step by step. " + FINAL_ANSWER + "\n\nProblem: {prompt}"),
    "code": "{prompt}",
}
CORRECTION = {
    "math": ("There might be an error in the solution above because of lack of understanding of the "
             "question. Please correct the error, if any, and rewrite the solution. Only output the "
             "final solution! " + FINAL_ANSWER),
    "code": ("There might be an error in the code above because of lack of understanding of the "
             "question. Please correct the error, if any, and rewrite the solution. Only output the "
             "final correct Python program!"),
}


def attempt1_text(problem: Problem, template: str = "") -> str:
    return (template or ATTEMPT1[problem.task]).format(prompt=problem.prompt)


def correction_text(problem: Problem, template: str = "") -> str:
    return template or CORRECTION[problem.task]


def messages(problem: Problem, first_attempt: str | None = None, templates=None) -> list[dict]:
    """The conversation up to the turn the model answers next (turn 1, or turn 2 after y1)."""
    a1 = getattr(templates, "attempt1", "") if templates else ""
    corr = getattr(templates, "correction", "") if templates else ""
    msgs = [{"role": "user", "content": attempt1_text(problem, a1)}]
    if first_attempt is not None:
        msgs += [{"role": "assistant", "content": first_attempt},
                 {"role": "user", "content": correction_text(problem, corr)}]
    return msgs


_MARK = "selfcorrect-attempt-1-marker"


def correction_glue(tokenizer, problem: Problem, templates=None) -> str:
    """What follows attempt 1's content in the turn-2 prompt: the end of its turn, the
    correction instruction, the start of the next answer (render of a conversation whose
    attempt 1 is a marker, after the marker). Attempt 2's prompt is attempt 1's prompt, its
    tokens and this text's tokens: a row that extends attempt 1's row exactly.

    >>> from selfcorrect.records import Problem
    >>> correction_glue(None, Problem("p", "code", "f")).startswith("\\n\\nUser: There might")
    True
    """
    text = render(tokenizer, messages(problem, _MARK, templates))
    return text[text.index(_MARK) + len(_MARK):]


def render(tokenizer, msgs: list[dict]) -> str:
    """The prompt string the model continues from, ending where its answer begins."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    parts = [("User: " if m["role"] == "user" else "Assistant: ") + m["content"] for m in msgs]
    return "\n\n".join(parts) + "\n\nAssistant: "
