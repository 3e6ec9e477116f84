"""Tokenisation with the upstream semantics (app/serving/tokenizer.py).

Bio_ClinicalBERT's vocabulary is cased but the model was trained with lower-casing forced
on; every text is ``[CLS] ... [SEP]``, truncated to 256 tokens keeping the final ``[SEP]``,
padded with an attention mask. The vocabularies here are real files: a hand-written cased
one (holding both "Atrial" and "atrial", so a cased tokenizer would pick a different id) and
the WordPiece vocabulary the test checkpoint was trained with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.errors import BundleError
from app.serving.tokenizer import MAX_TOKENS, build_tokenizer, encode, load_tokenizer

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Cased entries come first: a tokenizer that did not lower-case would use them.
CASED_WORDS = ["Atrial", "Fibrillation", "Sinus", "Rhythm", "QT", "ST"]
LOWER_WORDS = ["atrial", "fibrillation", "sinus", "rhythm", "qt", "st", "long", "segment", "elevation", "in", "v1",
               "##s", ".", ",", "a", "the"]


@pytest.fixture(scope="module")
def cased_vocab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(SPECIAL + CASED_WORDS + LOWER_WORDS) + "\n")
    return path


@pytest.fixture(scope="module")
def vocab_ids(cased_vocab: Path) -> dict[str, int]:
    return {tok: i for i, tok in enumerate(cased_vocab.read_text().split("\n")) if tok}


@pytest.fixture(scope="module")
def tok(cased_vocab: Path):
    return build_tokenizer(cased_vocab)


def test_lower_casing_is_forced_on_a_cased_vocabulary(tok, vocab_ids) -> None:
    cased = tok.encode("Atrial Fibrillation. Sinus Rhythm, long QT").ids
    lower = tok.encode("atrial fibrillation. sinus rhythm, long qt").ids
    assert cased == lower
    for word in CASED_WORDS:
        assert vocab_ids[word] not in cased, f"cased token {word!r} used: lower-casing is not on"
    assert vocab_ids["atrial"] in cased and vocab_ids["qt"] in cased


def test_cls_text_sep(tok, vocab_ids) -> None:
    enc = encode(tok, ["Sinus rhythm"])
    assert enc.input_ids.tolist() == [[vocab_ids["[CLS]"], vocab_ids["sinus"], vocab_ids["rhythm"], vocab_ids["[SEP]"]]]
    assert enc.attention_mask.tolist() == [[1, 1, 1, 1]]
    assert enc.input_ids.dtype == np.int64 and enc.attention_mask.dtype == np.int64
    # an unknown word is [UNK], not dropped
    unk = tok.encode("sinus zzzzq").ids
    assert unk == [vocab_ids["[CLS]"], vocab_ids["sinus"], vocab_ids["[UNK]"], vocab_ids["[SEP]"]]


def test_truncation_to_256_keeps_the_final_sep(tok, vocab_ids) -> None:
    words = ["st", "segment", "elevation", "in", "v1"] * 80  # 400 tokens of text
    text = " ".join(words)
    enc = encode(tok, [text, "qt"])
    assert enc.input_ids.shape == (2, MAX_TOKENS) == (2, 256)
    row = enc.input_ids[0].tolist()
    assert row[0] == vocab_ids["[CLS]"] and row[-1] == vocab_ids["[SEP]"]
    assert row.count(vocab_ids["[SEP]"]) == 1
    # the beginning of the text is kept: 254 content tokens, in order
    assert row[1:-1] == [vocab_ids[w] for w in words[:254]]
    assert enc.attention_mask[0].sum() == 256
    # exactly 256 tokens (254 words) is not truncated; 255 words is
    assert len(tok.encode(" ".join(words[:254])).ids) == 256
    assert tok.encode(" ".join(words[:255])).ids[-2] == vocab_ids[words[253]]


def test_batch_padding_to_the_longest_with_a_correct_mask(tok, vocab_ids) -> None:
    texts = ["qt", "atrial fibrillation in v1", "sinus rhythm"]
    enc = encode(tok, texts)
    lengths = [len(tok.encode(t).ids) for t in texts]
    assert lengths == [3, 6, 4]
    assert enc.input_ids.shape == (3, max(lengths))
    assert enc.attention_mask.sum(axis=1).tolist() == lengths
    for i, n in enumerate(lengths):
        assert enc.attention_mask[i, :n].all() and not enc.attention_mask[i, n:].any()  # ones then zeros
        assert (enc.input_ids[i, n:] == vocab_ids["[PAD]"]).all()
        assert enc.input_ids[i, :n].tolist() == tok.encode(texts[i]).ids
    padded = encode(tok, texts, pad_to=256)
    assert padded.input_ids.shape == (3, 256)
    assert np.array_equal(padded.input_ids[:, : max(lengths)], enc.input_ids)
    assert np.array_equal(padded.attention_mask.sum(axis=1), enc.attention_mask.sum(axis=1))
    # pad_to below the longest never truncates
    assert encode(tok, texts, pad_to=2).input_ids.shape == (3, 6)


def test_matches_transformers_bert_tokenizer_with_do_lower_case(small_checkpoint, label_texts) -> None:
    """Independent reference: transformers' BertTokenizer(do_lower_case=True) on the checkpoint's
    real WordPiece vocabulary, over the 71 built-in descriptions and a truncated long text."""
    from transformers import BertTokenizer

    vocab = small_checkpoint.text_dir / "vocab.txt"
    ours = build_tokenizer(vocab)
    ref = BertTokenizer(str(vocab), do_lower_case=True)
    texts = [t.upper() if i % 3 == 0 else t for i, t in enumerate(label_texts)] + [" ".join(label_texts[:8])]
    expected = ref(texts, truncation=True, max_length=256)["input_ids"]
    got = [e.ids for e in ours.encode_batch(texts)]
    assert got == expected
    assert len(got[-1]) == 256  # the long text really was truncated


def test_tokenizer_json_round_trip(tok, tmp_path: Path, label_texts) -> None:
    """The bundle stores tokenizer.json; loading it must tokenise exactly like the builder."""
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    loaded = load_tokenizer(path)
    texts = ["Atrial Fibrillation", " ".join(["st segment"] * 200), *label_texts[:5]]
    a, b = encode(tok, texts), encode(loaded, texts)
    assert np.array_equal(a.input_ids, b.input_ids) and np.array_equal(a.attention_mask, b.attention_mask)
    assert a.input_ids.shape[1] == 256


def test_missing_or_broken_tokenizer_files(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        build_tokenizer(tmp_path / "vocab.txt")
    broken = tmp_path / "tokenizer.json"
    broken.write_text('{"version": "1.0", "model": ')
    with pytest.raises(BundleError, match="cannot read tokenizer"):
        load_tokenizer(broken)
