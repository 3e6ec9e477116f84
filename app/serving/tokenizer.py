"""WordPiece tokenisation with the upstream semantics.

Bio_ClinicalBERT's vocabulary is cased, but the model was trained with lower-casing forced
on. Each text becomes ``[CLS] ... [SEP]``, truncated to 256 tokens with the final ``[SEP]``
kept, and padded with an attention mask. Padding to the longest text of a batch gives the
same vectors as padding to 256 (the mask hides the pads), so batches are padded dynamically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tokenizers.implementations.bert_wordpiece import BertWordPieceTokenizer

from app.errors import BundleError

MAX_TOKENS = 256


@dataclass(frozen=True)
class Encoded:
    input_ids: np.ndarray  # (N, L) int64
    attention_mask: np.ndarray  # (N, L) int64


def build_tokenizer(vocab_file: Path, *, max_tokens: int = MAX_TOKENS) -> Tokenizer:
    """A WordPiece tokenizer from ``vocab.txt`` with lower-casing forced on."""
    if not Path(vocab_file).is_file():
        raise BundleError(f"vocabulary {vocab_file} does not exist")
    wrapper = BertWordPieceTokenizer(str(vocab_file), lowercase=True, clean_text=True, handle_chinese_chars=True)
    tok = wrapper._tokenizer  # the underlying tokenizers.Tokenizer, serialisable to tokenizer.json
    tok.enable_truncation(max_length=max_tokens)
    tok.no_padding()
    return tok


def load_tokenizer(tokenizer_json: Path) -> Tokenizer:
    try:
        tok = Tokenizer.from_file(str(tokenizer_json))
    except Exception as exc:  # tokenizers raises plain Exception subclasses
        raise BundleError(f"cannot read tokenizer {tokenizer_json}: {exc}") from exc
    return tok


def token_ids(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    """``[CLS] ... [SEP]`` ids of each text, truncated, unpadded."""
    return [e.ids for e in tok.encode_batch(texts)]


def pad(ids: list[list[int]], *, pad_id: int = 0, pad_to: int | None = None) -> Encoded:
    """Pad to the longest sequence (or to ``pad_to``) with an attention mask."""
    width = max(max((len(i) for i in ids), default=0), pad_to or 0)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return Encoded(input_ids, mask)


def pad_id_of(tok: Tokenizer) -> int:
    return tok.token_to_id("[PAD]") or 0


def encode(tok: Tokenizer, texts: list[str], *, pad_to: int | None = None) -> Encoded:
    """Token ids and mask, padded to the longest text (or to ``pad_to``)."""
    return pad(token_ids(tok, texts), pad_id=pad_id_of(tok), pad_to=pad_to)
