"""Any reasoning-gym dataset by name, scored by the dataset's own (possibly continuous) scorer.

Splits: ``train`` and ``eval`` come from ``reasoning_gym.create_dataset(name, size=..., seed=...)``
with two different seeds. reasoning-gym derives item ``i`` from ``Random(seed + i)``, so nearby seeds
give shifted copies of the same items; the split seeds are therefore spaced ``2**40`` apart
(``(2 * seed + split) * 2**40``) and, in addition, training items whose question also occurs in
``eval`` are dropped (``train`` is refilled from further indices), so held-out questions are never
trained on.

Scoring: the text between the last ``<answer>`` ... ``</answer>`` pair if there is one, else the raw
completion, goes to ``dataset.score_answer(answer, entry)``; the result is clamped to ``[0, 1]``, and any
exception, NaN or non-numeric result gives 0.0. In the main thread a wall-clock limit
(``timeout_s``, SIGALRM) guards scorers that might run long on adversarial strings; in worker threads
no limit applies. Rewards can be continuous (many reasoning-gym scorers give partial credit), so
``binary`` is False unless the caller says otherwise.

Example::

    task = ReasoningGymTask("basic_arithmetic", seed=0, num_train=1000, num_eval=100)
    p = task.prompts("eval", 1)[0]
    task.score(p, f"<answer>{p.target}</answer>")   # 1.0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from passk_jax.tasks.base import Prompt, TaskBase, alarm_timeout, extract_answer_tag, safe_reward

__all__ = ["DEFAULT_SUFFIX", "ReasoningGymTask", "extract_rg_answer"]

DEFAULT_SUFFIX = ""
_SEED_STRIDE = 2**40


def extract_rg_answer(completion: str) -> str:
    """The last ``<answer>`` ... ``</answer>`` content of ``completion``, else the raw (stripped) text."""
    if not isinstance(completion, str):
        return ""
    tagged = extract_answer_tag(completion)
    return (completion if tagged is None else tagged).strip()


class ReasoningGymTask(TaskBase):
    """A reasoning-gym procedural dataset behind the :class:`~passk_jax.tasks.base.Task` interface."""

    alphabet = None

    def __init__(
        self,
        dataset: str,
        seed: int = 0,
        num_train: int = 1000,
        num_eval: int = 200,
        config: Mapping[str, Any] | None = None,
        suffix: str = DEFAULT_SUFFIX,
        binary: bool = False,
        timeout_s: float | None = 5.0,
    ):
        """Build the task.

        Args:
          dataset: reasoning-gym dataset name (``reasoning_gym.factory.DATASETS``), e.g.
            ``"basic_arithmetic"``, ``"countdown"``, ``"maze"``.
          seed: base seed (>= 0); the split seeds are derived from it.
          num_train, num_eval: split sizes.
          config: extra keyword arguments of the dataset's config (difficulty knobs).
          suffix: text appended to every question (e.g. an ``<answer>`` format instruction).
          binary: declare rewards binary (only if the dataset's scorer is known to be 0/1).
          timeout_s: wall-clock limit per scorer call in the main thread (None: no limit).
        """
        try:
            import reasoning_gym
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(
                "ReasoningGymTask needs the `reasoning-gym` package (pip install 'passk_jax[tasks]')"
            ) from e
        if int(seed) < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.dataset_name = dataset
        self.name = f"reasoning_gym/{dataset}"
        self.seed = int(seed)
        self.num_train, self.num_eval = int(num_train), int(num_eval)
        self.config = dict(config or {})
        self.suffix = suffix
        self.binary = bool(binary)
        self.timeout_s = timeout_s
        self._rg = reasoning_gym
        # One dataset object per split (scoring uses the train one: score_answer reads the entry).
        self._datasets = {
            split: reasoning_gym.create_dataset(
                dataset, size=max(1, n), seed=(2 * self.seed + i) * _SEED_STRIDE, **self.config
            )
            for i, (split, n) in enumerate((("train", self.num_train), ("eval", self.num_eval)))
        }
        self._cache: dict[str, list[Prompt]] = {}

    def _entry_prompt(self, split: str, idx: int, entry: Mapping[str, Any], pos: int) -> Prompt:
        answer = entry.get("answer")
        return Prompt(
            text=str(entry["question"]) + self.suffix,
            target=None if answer is None else str(answer),
            meta={"entry": entry, "split": split, "index": idx},
            uid=f"{self.name}/{split}/{pos:06d}",
        )

    def _split(self, split: str) -> list[Prompt]:
        if split in self._cache:
            return self._cache[split]
        ds = self._datasets[split]
        if split == "eval":
            items = [self._entry_prompt(split, i, ds[i], i) for i in range(self.num_eval)]
        else:
            held_out = {p.meta["entry"]["question"] for p in self._split("eval")}
            items, idx = [], 0
            limit = 10 * self.num_train + 1000
            while len(items) < self.num_train:
                if idx >= limit:
                    raise ValueError(
                        f"{self.name}: only {len(items)} training items differ from the eval "
                        f"questions after {limit} draws; the dataset is too small for num_train"
                    )
                entry = ds[idx]  # item idx depends only on (seed, idx), not on the dataset size
                if entry["question"] not in held_out:
                    items.append(self._entry_prompt(split, idx, entry, len(items)))
                idx += 1
        self._cache[split] = items
        return items

    def score(self, prompt: Prompt, completion: str) -> float:
        """The dataset's own reward of the extracted answer, in ``[0, 1]``; never raises."""

        def _score() -> Any:
            entry = prompt.meta["entry"]
            answer = extract_rg_answer(completion)
            with alarm_timeout(self.timeout_s):
                return self._datasets["train"].score_answer(answer, entry)

        return safe_reward(_score)
