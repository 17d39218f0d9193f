"""Tests of the char and SentencePiece tokenizers and of pad_batch."""

from __future__ import annotations

import numpy as np
import pytest

from passk_jax import testing
from passk_jax.tokenizers import CharTokenizer, SentencePieceTokenizer, Tokenizer, pad_batch


def test_char_tokenizer_roundtrip_and_specials():
    tok = CharTokenizer("abc ")
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (0, 1, 2, 8)
    ids = tok.encode("ab c", add_eos=True)
    assert ids == [1, 4, 5, 7, 6, 2]
    assert tok.decode(ids) == "ab c"
    assert tok.encode("ax", add_bos=False) == [4, tok.unk_id]
    assert tok.decode([0, 0, 1, 4, 2, 5, 5]) == "a"  # pads / bos dropped, stops at eos
    assert tok.decode(np.array([4, 3])) == "a?"
    assert isinstance(tok, Tokenizer)
    with pytest.raises(ValueError):
        CharTokenizer("aa")


def test_tiny_tokenizer_fits_tiny_model():
    tok = testing.tiny_tokenizer()
    assert tok.vocab_size <= testing.tiny_config().vocab_size
    text = "12+34=46"
    assert tok.decode(tok.encode(text)) == text


def test_pad_batch_left_and_right():
    tokens, mask = pad_batch([[5, 6, 7], [8]], pad_id=0)
    np.testing.assert_array_equal(tokens, [[5, 6, 7], [0, 0, 8]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [0, 0, 1]])
    assert tokens.dtype == np.int32 and mask.dtype == bool
    tokens, mask = pad_batch([[5, 6, 7], [8]], pad_id=9, side="right", length=4)
    np.testing.assert_array_equal(tokens, [[5, 6, 7, 9], [8, 9, 9, 9]])
    np.testing.assert_array_equal(mask, [[1, 1, 1, 0], [1, 0, 0, 0]])
    with pytest.raises(ValueError):
        pad_batch([[1, 2, 3]], pad_id=0, length=2)
    with pytest.raises(ValueError):
        pad_batch([[1]], pad_id=0, side="middle")


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    spm = pytest.importorskip("sentencepiece")
    d = tmp_path_factory.mktemp("sp")
    corpus = d / "corpus.txt"
    words = (
        "the maze has walls and doors solve it step by step pass at policy optimisation rewards "
        "sets of samples gradient estimator unbiased prompt completion model token language "
        "reinforcement learning answer question number correct wrong verify check compute sum"
    ).split()
    rng = np.random.RandomState(0)
    lines = [" ".join(rng.choice(words, size=12)) + f" {rng.randint(1000)}." for _ in range(400)]
    corpus.write_text("\n".join(lines))
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(d / "tok"),
        vocab_size=100,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        user_defined_symbols=["<start_of_turn>", "<end_of_turn>"],  # as in Gemma's model
        minloglevel=2,
    )
    return str(d / "tok.model")


def test_sentencepiece_tokenizer(sp_model):
    tok = SentencePieceTokenizer(sp_model)
    assert isinstance(tok, Tokenizer)
    assert (tok.pad_id, tok.eos_id, tok.bos_id, tok.vocab_size) == (0, 1, 2, 100)  # Gemma's ids
    text = "solve the maze step by step"
    ids = tok.encode(text, add_eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert len(ids) < len(text)  # sub-word pieces, not characters
    assert tok.decode(ids) == text
    assert tok.decode(ids + [5, 6]) == text  # stops at EOS
    assert tok.decode([tok.pad_id, tok.pad_id] + ids) == text
    with pytest.raises(OSError):
        SentencePieceTokenizer(sp_model + ".missing")


def test_gemma_chat_template(sp_model):
    from passk_jax.tokenizers import encode_prompt

    tok = SentencePieceTokenizer(sp_model)
    start, end = tok.special_id("<start_of_turn>"), tok.special_id("<end_of_turn>")
    assert start != end and 3 not in (start, end)  # real pieces, not unk (id 3)
    text = "solve the maze"
    plain = encode_prompt(tok, text)
    assert plain == tok.encode(text, add_bos=True)
    ids = encode_prompt(tok, text, "gemma")
    # <bos><start_of_turn>user\n{text}<end_of_turn>\n<start_of_turn>model\n, markers as single ids
    assert ids[:2] == [tok.bos_id, start] and ids.count(start) == 2 and ids.count(end) == 1
    user = ids[2 : ids.index(end)]
    assert user == tok.encode("user\n" + text, add_bos=False)
    tail = ids[ids.index(end) + 1 :]
    assert tail == tok.encode("\n", add_bos=False) + [start] + tok.encode("model\n", add_bos=False)
    assert "solve the maze" in tok.decode(ids)
    with pytest.raises(ValueError, match="no '<nope>' piece"):
        tok.special_id("<nope>")
    with pytest.raises(ValueError, match="unknown chat template"):
        encode_prompt(tok, text, "llama")
    with pytest.raises(ValueError, match="char tokenizer has no"):
        encode_prompt(CharTokenizer("ab"), "ab", "gemma")
