"""Tokenizers behind one interface: Gemma's SentencePiece model and a char tokenizer for toy tasks.

Both expose ``bos_id``, ``eos_id``, ``pad_id``, ``vocab_size``, ``encode(text, add_bos, add_eos)`` and
``decode(ids)``; ``decode`` stops at the first EOS and omits PAD / BOS. ``pad_batch`` turns id lists into
the ``[B, T]`` token and mask arrays the sampler and the model take; ``encode_prompt`` adds an optional
chat template (Gemma's turn format) for instruction-tuned checkpoints.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "CHAT_TEMPLATES",
    "CharTokenizer",
    "SentencePieceTokenizer",
    "Tokenizer",
    "encode_prompt",
    "pad_batch",
]


@runtime_checkable
class Tokenizer(Protocol):
    """What the sampler, tasks and RL loop need from a tokenizer."""

    bos_id: int
    eos_id: int
    pad_id: int
    vocab_size: int

    def encode(self, text: str, add_bos: bool = True, add_eos: bool = False) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class CharTokenizer:
    """One id per character of a fixed alphabet: pad 0, bos 1, eos 2, unk 3, then the alphabet.

    Example:
      >>> tok = CharTokenizer("ab")
      >>> tok.encode("abc")
      [1, 4, 5, 3]
      >>> tok.decode([1, 4, 5, 2, 4])
      'ab'
    """

    pad_id = 0
    bos_id = 1
    eos_id = 2
    unk_id = 3
    unk_char = "?"

    def __init__(self, alphabet: str):
        if len(set(alphabet)) != len(alphabet):
            raise ValueError("alphabet has repeated characters")
        self.alphabet = alphabet
        self._to_id = {ch: i + 4 for i, ch in enumerate(alphabet)}
        self.vocab_size = 4 + len(alphabet)

    def encode(self, text: str, add_bos: bool = True, add_eos: bool = False) -> list[int]:
        """Encodes ``text`` (unknown characters -> ``unk_id``)."""
        ids = [self._to_id.get(ch, self.unk_id) for ch in text]
        return ([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else [])

    def decode(self, ids: Sequence[int]) -> str:
        """Decodes up to the first EOS; PAD and BOS are dropped, UNK becomes ``unk_char``."""
        out = []
        for i in np.asarray(ids, dtype=np.int64).reshape(-1).tolist():
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id):
                continue
            out.append(self.alphabet[i - 4] if 4 <= i < self.vocab_size else self.unk_char)
        return "".join(out)

    def special_id(self, piece: str) -> int:
        """Char tokenizers have no special pieces beyond pad / bos / eos / unk."""
        raise ValueError(
            f"the char tokenizer has no {piece!r} token; chat templates need a SentencePiece "
            "tokenizer whose model has Gemma's turn pieces"
        )


class SentencePieceTokenizer:
    """A SentencePiece model from a local path (e.g. Gemma's ``tokenizer.model``; nothing downloaded).

    Gemma's model has pad 0, eos 1, bos 2; a model without a pad piece falls back to ``pad_id = 0``
    only if that is not EOS, else to the unk id.
    """

    def __init__(self, model_path: str):
        import sentencepiece as spm

        self._sp = spm.SentencePieceProcessor()
        try:
            ok = self._sp.Load(str(model_path))
        except (OSError, RuntimeError) as e:
            raise OSError(f"cannot load SentencePiece model {model_path}: {e}") from e
        if not ok:
            raise OSError(f"cannot load SentencePiece model {model_path}")
        self.vocab_size = int(self._sp.GetPieceSize())
        self.bos_id = int(self._sp.bos_id())
        self.eos_id = int(self._sp.eos_id())
        pad = int(self._sp.pad_id())
        if pad < 0:
            pad = self._sp.unk_id() if self.eos_id == 0 else 0
        self.pad_id = int(pad)
        if min(self.bos_id, self.eos_id) < 0:
            raise ValueError("the SentencePiece model needs BOS and EOS pieces")

    def encode(self, text: str, add_bos: bool = True, add_eos: bool = False) -> list[int]:
        """Encodes ``text`` into piece ids."""
        ids = list(self._sp.EncodeAsIds(text))
        return ([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else [])

    def decode(self, ids: Sequence[int]) -> str:
        """Decodes up to the first EOS, dropping PAD / BOS."""
        out = []
        for i in np.asarray(ids, dtype=np.int64).reshape(-1).tolist():
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id):
                continue
            out.append(i)
        return self._sp.DecodeIds(out)

    def special_id(self, piece: str) -> int:
        """The id of a piece the model has (e.g. ``"<start_of_turn>"``); ``ValueError`` if absent."""
        i = int(self._sp.PieceToId(piece))
        if i == int(self._sp.unk_id()) and piece != self._sp.IdToPiece(i):
            raise ValueError(f"the SentencePiece model has no {piece!r} piece")
        return i


CHAT_TEMPLATES = ("gemma",)


def encode_prompt(tok: Any, text: str, chat_template: str | None = None) -> list[int]:
    """BOS + ``text``, or with ``chat_template="gemma"`` Gemma's single user turn and the model cue:
    ``<bos><start_of_turn>user\n{text}<end_of_turn>\n<start_of_turn>model\n``.

    The turn markers are the model's own pieces (looked up by name, never spelled out in text for
    the tokenizer to split), so a tokenizer without them raises ``ValueError`` instead of training
    on a template the checkpoint never saw.
    """
    if chat_template is None:
        return tok.encode(text, add_bos=True)
    if chat_template != "gemma":
        raise ValueError(f"unknown chat template {chat_template!r}; known: {CHAT_TEMPLATES}")
    start, end = tok.special_id("<start_of_turn>"), tok.special_id("<end_of_turn>")
    piece = functools.partial(tok.encode, add_bos=False)
    return [tok.bos_id, start, *piece("user\n" + text), end, *piece("\n"), start, *piece("model\n")]


def pad_batch(
    ids: Sequence[Sequence[int]], pad_id: int, side: str = "left", length: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pads id lists to one length.

    Args:
      ids: ``B`` lists of ids (possibly of different lengths).
      pad_id: id written in padded slots.
      side: ``"left"`` (prompts for sampling) or ``"right"``.
      length: total length ``T``; defaults to the longest list (``ValueError`` if a list is longer).

    Returns:
      ``(tokens int32 [B, T], mask bool [B, T])``, mask True on real tokens.
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    t = max((len(x) for x in ids), default=0) if length is None else length
    tokens = np.full((len(ids), t), pad_id, np.int32)
    mask = np.zeros((len(ids), t), bool)
    for b, row in enumerate(ids):
        n = len(row)
        if n > t:
            raise ValueError(f"row {b} has {n} ids > length {t}")
        sl = slice(t - n, t) if side == "left" else slice(0, n)
        tokens[b, sl] = np.asarray(row, np.int32)
        mask[b, sl] = True
    return tokens, mask
