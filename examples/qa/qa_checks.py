"""A check of your own for short-answer questions (verify.custom: qa_checks:exact_match).

The model's final answer must equal the reference after normalising case, punctuation,
articles and spaces; a reference may list several accepted answers separated by "|"
("Paris|City of Paris"). The module only has to be importable where the steps run: here, with
examples/qa on PYTHONPATH; on a cluster, installed in the images.
"""
import re
import string

# the math prompts ask for "Final Answer: The final answer is $X$. I hope it is correct."
_FINAL = re.compile(r"final answer is:?\s*(.+?)\s*(?:\.\s*I hope it is correct|\n|$)",
                    re.IGNORECASE)


def normalise(text: str) -> str:
    """'The  Pacific Ocean.' -> 'pacific ocean'."""
    text = re.sub(r"\\text\{([^}]*)\}", r"\1", text.strip().strip("$"))
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def final_answer(completion: str) -> str | None:
    """The last "final answer is X" of a completion, else its last non-empty line."""
    found = _FINAL.findall(completion)
    if found:
        return found[-1]
    lines = [line for line in completion.splitlines() if line.strip()]
    return lines[-1] if lines else None


def exact_match(problem, completion: str):
    """True when the final answer matches a reference answer, else (False, why)."""
    got = final_answer(completion)
    if got is None:
        return False, "empty answer"
    accepted = [normalise(a) for a in problem.answer.split("|")]
    if normalise(got) in accepted:
        return True
    return False, f"got {got.strip().strip('$')!r}, expected {problem.answer!r}"
