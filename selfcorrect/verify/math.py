"""Math answers: extract the final answer from a completion, compare it with math-verify.

Extraction order (the first that matches wins, each taking the *last* occurrence):
  1. the SCoRe format `Final Answer: The final answer is $x$. I hope it is correct.`
  2. `\\boxed{x}` / `\\fbox{x}` (nested braces are matched)
  3. GSM8K `#### x`
  4. the trailing number of the text (thousands separators, decimals, fractions, sign).

Equivalence is decided by `math-verify` (`parse` + `verify`) against `Problem.answer`.

Time is bounded without signals, so this runs in any thread (Beam workers included):
math-verify's own timeouts use `signal.alarm`, which only works in the main thread, so they
are switched off (`parsing_timeout=None`, `timeout_seconds=None`) and replaced by three
deterministic bounds:
  - only the last MAX_TEXT_CHARS characters of a completion are searched;
  - an extracted answer longer than MAX_ANSWER_CHARS is rejected ("answer too long");
  - a parsed answer whose evaluation could explode (power towers, huge exponents, big
    factorials: `2^{2^{100}}`, `(10^{100})!`) is rejected ("answer too complex") before
    sympy is asked to compare it.
The verdict is therefore a pure function of (completion, reference).
"""
from __future__ import annotations

import logging
import re

MAX_TEXT_CHARS = 16_000
MAX_ANSWER_CHARS = 512
MAX_EXPONENT = 10_000        # |e| in b**e
MAX_FACTORIAL = 1_000        # n in n!
VERIFIER = "math-verify"

_FINAL = re.compile(r"final answer is\s*(.+?)\s*(?:\.\s*)?I hope it is correct", re.I | re.S)
_FINAL_LINE = re.compile(r"final answer is:?\s*([^\n]+)", re.I)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_GSM8K = re.compile(r"####\s*([^\n]+)")
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?|-?\.\d+")
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")


def extract_answer(text: str) -> str | None:
    r"""The final answer in a completion, as a string without `$` delimiters, or None.

    >>> extract_answer("So x = 3. Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.")
    '\\frac{1}{2}'
    >>> extract_answer(r"Thus the answer is \boxed{\frac{a}{\sqrt{b}}}.")
    '\\frac{a}{\\sqrt{b}}'
    >>> extract_answer("She pays 3 * 4 = 12 dollars.\n#### 1,200")
    '1200'
    >>> extract_answer("The total is 7 + 8 = 15."), extract_answer("no idea")
    ('15', None)
    """
    text = text[-MAX_TEXT_CHARS:]
    for find in (_find_final, _find_boxed, _find_gsm8k, _find_number):
        answer = find(text)
        if answer is not None:
            answer = _clean(answer)
            if answer:
                return answer
    return None


def check_answer(completion: str, reference: str) -> tuple[bool, str]:
    """(correct, reason): reason is "" when correct, else why not."""
    answer = extract_answer(completion)
    if answer is None:
        return False, "no final answer found"
    if len(answer) > MAX_ANSWER_CHARS:
        return False, f"answer too long ({len(answer)} characters, at most {MAX_ANSWER_CHARS})"
    gold_text = _clean(reference)
    if _normal(answer) == _normal(gold_text):
        return True, ""
    gold, pred = _parse(gold_text), _parse(answer)
    if not gold:
        return False, f"reference answer {_short(reference)!r} could not be parsed"
    if not pred:
        return False, f"answer {_short(answer)!r} could not be parsed"
    if not (_tame(gold) and _tame(pred)):
        return False, f"answer {_short(answer)!r} too complex to compare safely"
    from math_verify import verify

    if verify(gold, pred, timeout_seconds=None):
        return True, ""
    return False, f"wrong answer: got {_short(answer)!r}, expected {_short(reference)!r}"


# --- extraction --------------------------------------------------------------------------

def _find_final(text: str) -> str | None:
    start = text.lower().rfind("final answer is")   # the last one: turn 2 may revise turn 1
    if start < 0:
        return None
    match = _FINAL.match(text, start) or _FINAL_LINE.match(text, start)
    if not match:
        return None
    answer = match.group(1)
    boxed = _find_boxed(answer)
    return boxed if boxed is not None else answer


def _find_boxed(text: str) -> str | None:
    starts = [m.end() for m in _BOXED.finditer(text)]
    for start in reversed(starts[-8:]):   # a few tries keep unbalanced input linear
        depth = 1
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return text[start:i]
    return None


def _find_gsm8k(text: str) -> str | None:
    matches = _GSM8K.findall(text)
    return matches[-1] if matches else None


def _find_number(text: str) -> str | None:
    matches = _NUMBER.findall(text)
    return matches[-1] if matches else None


def _clean(answer: str) -> str:
    """Strip math delimiters, a trailing period and thousands separators."""
    a = answer.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if a.startswith(left) and a.endswith(right) and len(a) >= len(left) + len(right):
            a = a[len(left):len(a) - len(right)].strip()
    a = a.rstrip(".").strip().replace("{,}", ",")
    if a.startswith("$") and a.endswith("$"):
        a = a.strip("$").strip()
    if _THOUSANDS.match(a):
        a = a.replace(",", "")
    return a


def _normal(answer: str) -> str:
    return re.sub(r"\s+", "", answer)


def _short(s: str, n: int = 60) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 3] + "..."


# --- math-verify ---------------------------------------------------------------------------

class _DropTimeoutWarning(logging.Filter):
    """math-verify warns once per process that its timeout is off: we bound time ourselves."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


def _parse(answer: str) -> list:
    from math_verify import parse

    for name in ("math_verify.parser", "math_verify.grader"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropTimeoutWarning) for f in log.filters):
            log.addFilter(_DropTimeoutWarning())
    return parse(f"${answer}$", parsing_timeout=None)


def _tame(parsed: list) -> bool:
    """False when sympy could spend unbounded time or memory evaluating the expression."""
    import sympy

    for item in parsed:
        exprs = list(item) if isinstance(item, sympy.MatrixBase) else [item]
        for expr in exprs:
            if not isinstance(expr, sympy.Basic):
                continue
            for node in sympy.preorder_traversal(expr):
                if isinstance(node, sympy.Pow) and not _small(node.exp, MAX_EXPONENT):
                    return False
                if isinstance(node, (sympy.factorial, sympy.factorial2, sympy.gamma)) \
                        and not _small(node.args[0], MAX_FACTORIAL):
                    return False
    return True


def _small(expr, bound: int) -> bool:
    """True when expr is symbolic, or a number (possibly unevaluated) no larger than bound."""
    import sympy

    if expr.free_symbols:
        return all(abs(n) <= bound for n in expr.atoms(sympy.Number))
    value = expr.evalf(15)  # cheap: mpmath keeps huge exponents symbolic
    return bool(value.is_number and value.is_finite and abs(value) <= bound)
