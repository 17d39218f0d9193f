"""MATH (Hendrycks) and GSM8K from TFDS or JSONL, with ``math-verify`` answer equivalence.

Loading (``source``):

* ``"jsonl"``: one JSON object per line; the question is ``problem`` or ``question``, the reference
  ``solution`` or ``answer`` (MATH rows may also carry a short ``answer``, as MATH-500 does).
* ``"tfds"``: ``tensorflow_datasets.load(tfds_name, split=..., data_dir=..., download=False)``; the
  package is imported lazily and a clear ``ImportError`` names the fix when it is missing. TFDS ships
  ``gsm8k`` (the default ``tfds_name`` of GSM8K); there is no canonical TFDS builder of Hendrycks MATH,
  so ``tfds_name`` must be given for MATH (e.g. a locally built dataset with the MATH fields).
* ``"auto"`` (default): JSONL when paths are given, else TFDS.

Gold answers: MATH -> the row's ``answer`` field if present, else the brace-balanced content of the last
``\\boxed{...}`` of the solution; GSM8K -> the text after the last ``####`` of the answer, commas removed.

Model answers: the last ``<answer>`` pair if present, else the last balanced ``\\boxed{...}``, else (GSM8K)
the text after the last ``####``, else the last number in the completion. Equivalence: numbers that
both parse as floats are compared directly (relative tolerance 1e-6); otherwise ``math_verify.parse``
and ``math_verify.verify`` decide. Every failure scores 0.0; the reward is binary.

Bounded time: :meth:`MathTask.score` and :meth:`MathTask.score_batch` run the check in scorer
processes (:class:`~passk_jax.tasks.base.ScorerPool`) with the enforced deadline ``timeout_s``: a check
that overruns (sympy evaluating ``(10^{9999})^{9999}`` inside C code, where no signal reaches it) is
killed with its process and scores 0.0. Before that, cheap filters reject most pathological answers
without parsing them: answers longer than ``max_answer_chars`` (default 300) and what
:func:`is_explosive` flags; inside the worker a ``SIGALRM`` at 80% of the deadline stops pure-Python
overruns without costing the process. math-verify's own timeouts are switched off
(``parsing_timeout=None``, ``timeout_seconds=None``).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from passk_jax.tasks.base import (
    Prompt,
    TaskBase,
    alarm_timeout,
    extract_answer_tag,
    extract_boxed,
    safe_reward,
)

__all__ = [
    "DEFAULT_SUFFIX",
    "MathTask",
    "extract_model_answer",
    "gold_answer",
    "is_explosive",
    "load_jsonl",
    "math_equal",
]

DEFAULT_SUFFIX = "\nPut your final answer within \\boxed{}."
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")
_KINDS = ("math", "gsm8k")


def _strip_number(text: str) -> str:
    return text.replace(",", "").replace("$", "").strip().rstrip(".")


def gold_answer(row: dict[str, Any], kind: str) -> str | None:
    """The reference final answer of one dataset row (module docstring has the rules)."""
    if kind == "gsm8k":
        text = str(row.get("answer", row.get("solution", "")))
        if "####" not in text:
            return None
        return _strip_number(text.rsplit("####", 1)[1])
    if row.get("answer") not in (None, "") and "solution" in row:
        return str(row["answer"]).strip()
    return extract_boxed(str(row.get("solution", row.get("answer", ""))))


def extract_model_answer(completion: str, kind: str = "math") -> str | None:
    """The model's final answer in ``completion`` (module docstring has the rules), or ``None``."""
    if not isinstance(completion, str):
        return None
    tagged = extract_answer_tag(completion)
    if tagged is not None:
        inner = extract_boxed(tagged)
        return (inner if inner is not None else tagged).strip()
    boxed = extract_boxed(completion)
    if boxed is not None:
        return boxed.strip()
    if kind == "gsm8k" and "####" in completion:
        return _strip_number(completion.rsplit("####", 1)[1].split("\n", 1)[0])
    numbers = _NUMBER.findall(completion)
    return numbers[-1].replace(",", "") if numbers else None


def _as_float(text: str) -> float | None:
    text = _strip_number(text)
    if not _NUMBER.fullmatch(text):
        return None
    try:
        value = float(text.replace(",", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _group_end(text: str) -> int:
    """Index of the brace closing the group that opens at ``text[0]`` (``len(text)`` if unclosed)."""
    depth = 0
    for i, ch in enumerate(text):
        depth += (ch == "{") - (ch == "}")
        if depth == 0:
            return i
    return len(text)


def is_explosive(text: str) -> bool:
    """Whether ``text`` may make sympy compute astronomically large numbers (then it is not parsed).

    Flags nested or chained exponents (``9^{9^{9}}``, ``9^9^9``, ``2**3**4``), exponents or factorial
    arguments with more than 4 digits, factorials of bracketed expressions, and powers of powers whose
    numeric exponents multiply to more than 10,000 (``(10^{9999})^{9999}``). sympy evaluates such
    expressions eagerly inside C code, where no signal can stop it (the scorer's deadline kills the
    process instead), and can exhaust memory. Real MATH / GSM8K answers essentially never look like
    this.
    """
    if "**" in text and text.count("**") + text.count("^") >= 2:
        return True
    exponents = [int(e) for e in re.findall(r"(?:\^|\*\*)\s*\{?\s*(\d{1,4})\b", text)]
    if len(exponents) >= 2 and math.prod(exponents) > 10_000:
        return True
    for m in re.finditer(r"\^|\*\*", text):
        rest = text[m.end() :].lstrip()
        if rest.startswith("{"):
            end = _group_end(rest)
            group, after = rest[1:end], rest[end + 1 :].lstrip()
        else:
            token = re.match(r"\(?[\w.\\]*\)?", rest)
            group = token.group(0) if token else ""
            after = rest[len(group) :].lstrip()
        if any(ch in group for ch in "^!") or after.startswith(("^", "**", "!")):
            return True
        if re.search(r"\d{5,}", group):
            return True
    for m in re.finditer(r"!", text):
        before = text[: m.start()].rstrip()
        if before.endswith((")", "}", "]")) or re.search(r"\d{5,}$", before):
            return True
    return False


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> Any:
    from math_verify import parse

    return parse(f"\\boxed{{{gold}}}", parsing_timeout=None)


@functools.lru_cache(maxsize=65536)
def _verify_cached(gold: str, pred: str) -> bool:
    from math_verify import parse, verify

    g = _parse_gold(gold)
    p = parse(f"\\boxed{{{pred}}}", parsing_timeout=None)
    if not g or not p:
        return False
    return bool(verify(g, p, timeout_seconds=None))


def math_equal(gold: str, pred: str, timeout_s: float | None = 5.0) -> bool:
    """Whether ``pred`` equals ``gold`` as numbers or, failing that, by ``math_verify``; never raises.

    Results are memoised per ``(gold, pred)`` (timeouts and errors are not cached). Predictions that
    :func:`is_explosive` flags are rejected without parsing.
    """
    try:
        a, b = _as_float(gold), _as_float(pred)
        if a is not None and b is not None:
            return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
        if is_explosive(pred):
            return False
        with alarm_timeout(None if timeout_s is None else 0.8 * timeout_s):
            return _verify_cached(gold, pred)
    except Exception:  # noqa: BLE001 -- never raise on model output (timeouts included)
        return False


def load_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a JSONL file (blank lines skipped)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _load_tfds(name: str, split: str, data_dir: str | None) -> list[dict[str, Any]]:
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(
            "source='tfds' needs `tensorflow-datasets` (and TensorFlow) with the dataset already "
            "prepared on this machine (pip install 'passk_jax[tfds]'); or pass JSONL files with "
            "source='jsonl', train_path=..., eval_path=..."
        ) from e
    ds = tfds.load(name, split=split, data_dir=data_dir, download=False)
    rows = []
    for ex in tfds.as_numpy(ds):
        rows.append({k: v.decode("utf-8") if isinstance(v, bytes) else v for k, v in ex.items()})
    return rows


class MathTask(TaskBase):
    """MATH or GSM8K word problems with a binary ``math-verify`` reward (module docstring)."""

    binary = True
    alphabet = None

    def __init__(
        self,
        kind: str = "math",
        train_path: str | os.PathLike | None = None,
        eval_path: str | os.PathLike | None = None,
        source: str = "auto",
        tfds_name: str | None = None,
        tfds_data_dir: str | None = None,
        tfds_splits: tuple[str, str] = ("train", "test"),
        suffix: str = DEFAULT_SUFFIX,
        shuffle_seed: int | None = None,
        timeout_s: float | None = 5.0,
        max_answer_chars: int = 300,
    ):
        """Build the task.

        Args:
          kind: ``"math"`` or ``"gsm8k"`` (answer conventions).
          train_path, eval_path: JSONL files of the ``train`` / ``eval`` splits (source ``jsonl``).
          source: ``"auto"``, ``"jsonl"`` or ``"tfds"``.
          tfds_name, tfds_data_dir, tfds_splits: TFDS builder name (default ``gsm8k`` for GSM8K),
            data directory and the TFDS split names of ``train`` / ``eval``.
          suffix: instruction appended to every problem.
          shuffle_seed: if set, each split is permuted with this seed (else file order).
          timeout_s: enforced deadline of one score (the scorer process is killed after it).
          max_answer_chars: extracted answers longer than this score 0 without being parsed.
        """
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
        if source == "auto":
            source = "jsonl" if (train_path or eval_path) else "tfds"
        if source not in ("jsonl", "tfds"):
            raise ValueError(f"source must be 'auto', 'jsonl' or 'tfds', got {source!r}")
        self.kind, self.name = kind, kind
        self.suffix = suffix
        self.timeout_s, self.max_answer_chars = timeout_s, int(max_answer_chars)
        self.score_deadline_s = 5.0 if timeout_s is None else float(timeout_s)
        if source == "jsonl":
            rows = {
                split: load_jsonl(path) if path is not None else []
                for split, path in (("train", train_path), ("eval", eval_path))
            }
        else:
            name = tfds_name or ("gsm8k" if kind == "gsm8k" else None)
            if name is None:
                raise ValueError(
                    "MATH from TFDS needs tfds_name (no canonical TFDS builder exists)"
                )
            rows = {
                split: _load_tfds(name, tfds_split, tfds_data_dir)
                for split, tfds_split in zip(("train", "eval"), tfds_splits, strict=True)
            }
        self._prompts = {
            split: self._make_prompts(split, r, shuffle_seed) for split, r in rows.items()
        }

    def _make_prompts(
        self, split: str, rows: Sequence[dict[str, Any]], shuffle_seed: int | None
    ) -> list[Prompt]:
        order = np.arange(len(rows))
        if shuffle_seed is not None:
            order = np.random.default_rng([shuffle_seed, 0 if split == "train" else 1]).permutation(
                len(rows)
            )
        out = []
        for pos, i in enumerate(order):
            row = rows[int(i)]
            question = row.get("problem", row.get("question"))
            if question is None:
                raise ValueError(f"{self.name} {split} row {int(i)} has no 'problem' / 'question'")
            gold = gold_answer(row, self.kind)
            if gold is None:
                raise ValueError(f"{self.name} {split} row {int(i)}: no gold answer found")
            target = row.get("solution", row.get("answer"))
            out.append(
                Prompt(
                    text=str(question) + self.suffix,
                    target=None if target is None else str(target),
                    meta={"gold": gold, "row": int(i)},
                    uid=f"{self.name}/{split}/{pos:06d}",
                )
            )
        return out

    def _split(self, split: str) -> Sequence[Prompt]:
        return self._prompts[split]

    def _score(self, prompt: Prompt, completion: str) -> float:
        """1.0 iff the extracted model answer is equivalent to the gold answer (runs in a worker)."""

        def _check() -> float:
            pred = extract_model_answer(completion, self.kind)
            if pred is None or not pred or len(pred) > self.max_answer_chars:
                return 0.0
            return float(math_equal(str(prompt.meta["gold"]), pred, self.timeout_s))

        return safe_reward(_check)


logging.getLogger("math_verify").setLevel(logging.ERROR)
