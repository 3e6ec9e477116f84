"""Randomly initialised checkpoints in the published format, for tests and for trying the API.

Nothing these produce means anything clinically: bundles built from them are marked
``untrained`` in their manifest and every response says so.

Random init is made informative (see shared/model-spec): BatchNorm parameters and running
statistics are randomised (at the authors' init every block's last BatchNorm weight is zero
and the conv paths output nothing), and the TQN is drawn with a larger spread (about 2x, the
head 4x) so that probabilities differ between records and a broken ECG path shows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from app.build.ecg_encoder import Bottleneck, EcgEncoder, EcgEncoderSpec
from app.build.progress import Log, Progress
from app.build.text_encoder import TextEncoder, load_bert_config
from app.build.tqn import TQN, TqnSpec
from app.contract import PRETRAINING

BIO_CLINICAL_BERT_CONFIG = {
    "architectures": ["BertModel"],
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 0,
    "type_vocab_size": 2,
    "vocab_size": 28996,
}

SMALL_BERT_CONFIG = {
    **BIO_CLINICAL_BERT_CONFIG,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "vocab_size": 4000,
}

# A fallback corpus so a vocabulary can be trained even without label texts.
BASE_CORPUS = (
    "normal sinus rhythm atrial fibrillation flutter bradycardia tachycardia left right bundle branch block "
    "anterior inferior lateral septal myocardial infarction ischemia hypertrophy ventricular premature complex "
    "st segment elevation depression t wave inversion qrs duration pr interval qt prolongation axis deviation "
    "leads i ii iii avr avl avf v1 v2 v3 v4 v5 v6 amplitude voltage millivolt milliseconds wide narrow "
    "p wave absent irregular regular rate beats per minute pacing paced rhythm low voltage high voltage"
)


@dataclass(frozen=True)
class DemoSizes:
    tqn_layers: int = 7
    ecg: EcgEncoderSpec = field(default_factory=EcgEncoderSpec)
    bert_config: dict[str, Any] | None = None  # None: SMALL_BERT_CONFIG


def randomise_batchnorm(module: nn.Module, generator: torch.Generator) -> None:
    """Random BatchNorm affine terms, then running statistics measured on ECG-like input.

    Calibrating the statistics (as training would) keeps activations well scaled through the
    33 blocks, so that different records give clearly different features.
    """
    bns = [m for m in module.modules() if isinstance(m, nn.BatchNorm1d)]
    with torch.no_grad():
        for m in bns:
            n = m.num_features
            m.weight.copy_(torch.empty(n).uniform_(0.5, 1.5, generator=generator))
            m.bias.copy_(torch.randn(n, generator=generator) * 0.1)
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batch
        # Residual branches start small (not zero, as at the authors' init): with full-size
        # branches a random BatchNorm ResNet is chaotic (2.5 uV of quantisation moved
        # probabilities by 0.1); at 0.1-0.2 that falls to ~2e-3 while records still differ
        # by ~0.1 in probability.
        for block in module.modules():
            if isinstance(block, Bottleneck):
                stage = block.convs[2]
                assert isinstance(stage, nn.Sequential)
                last = stage[1]
                assert isinstance(last, nn.BatchNorm1d)
                last.weight.copy_(torch.empty(last.num_features).uniform_(0.1, 0.2, generator=generator))
        # random walks of ~1 mV excursions, in the pretraining window (12 leads x 10 s at 100 Hz)
        walk = torch.randn(16, *PRETRAINING.window_shape, generator=generator).cumsum(-1) * 0.05
        module.train()
        module(walk - walk.mean(-1, keepdim=True))
        module.eval()
        for m in bns:
            m.momentum = 0.1
            assert m.num_batches_tracked is not None  # track_running_stats is on
            m.num_batches_tracked.fill_(1000)


def widen_tqn(tqn: TQN, generator: torch.Generator) -> None:
    """Scale the default init by 1.25x (the head by 2.5x); give LayerNorms non-trivial affine terms.

    Measured on real records: probabilities then range over ~0.9 within a record and differ by
    ~0.1 between records, while fp32 rounding moves them by only ~2e-5 (2x/4x reached 2e-4,
    above the 1e-4 parity bound, because the widened decoder amplifies rounding)."""
    with torch.no_grad():
        for name, p in tqn.named_parameters():
            if name == "logit_scale":
                continue
            if "norm" in name:
                if name.endswith("weight"):
                    p.copy_(torch.empty(p.shape).uniform_(0.8, 1.2, generator=generator))
                else:
                    p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
                continue
            if name.endswith("bias") and not p.abs().sum():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.02)
            p.mul_(2.5 if name.startswith("mlp_head") else 1.25)


def widen_text_encoder(text: TextEncoder) -> None:
    """Scale the BERT's weight matrices (10x for the small test BERT, 5x at full size).

    At plain random init every text maps to nearly the same vector (mean cosine 0.99999),
    so all labels would score alike; widened, distinct texts get distinct vectors (mean
    cosine ~0.8) while padding still changes nothing (the attention mask does its job).
    """
    factor = 10.0 if text.bert_model.config.hidden_size < 768 else 5.0
    with torch.no_grad():
        for name, p in text.bert_model.named_parameters():
            if p.dim() == 2 and not name.startswith("embeddings"):
                p.mul_(factor)


def write_text_model_dir(out_dir: Path, bert_config: dict[str, Any], vocab_tokens: list[str]) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(bert_config, indent=2))
    (out_dir / "vocab.txt").write_text("\n".join(vocab_tokens) + "\n")
    return out_dir


def train_demo_vocab(corpus: Iterable[str], *, vocab_size: int = 4000) -> list[str]:
    """A real WordPiece vocabulary trained with the ``tokenizers`` library on ``corpus``.

    Used because Bio_ClinicalBERT's vocabulary cannot be downloaded offline. The ids it
    produces are valid for any embedding table with at least ``vocab_size`` rows.
    """
    from tokenizers.implementations.bert_wordpiece import BertWordPieceTokenizer

    tok = BertWordPieceTokenizer(lowercase=True)
    texts = [BASE_CORPUS, *corpus]
    tok.train_from_iterator(iter(texts), vocab_size=vocab_size, min_frequency=1, show_progress=False)
    vocab = tok.get_vocab()
    return [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]


def build_demo_checkpoint(
    path: Path, text_model_dir: Path, *, sizes: DemoSizes = DemoSizes(), seed: int = 0
) -> Path:
    """Write a checkpoint with the published structure (sections, aliases, position_ids)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    ecg = EcgEncoder(sizes.ecg)
    randomise_batchnorm(ecg, gen)
    tqn = TQN(TqnSpec(n_layers=sizes.tqn_layers))
    widen_tqn(tqn, gen)
    bert_config = load_bert_config(text_model_dir)
    text = TextEncoder(bert_config)
    widen_text_encoder(text)
    text_sd = text.state_dict()
    # transformers <= 4.30 saved this buffer, and so does the published file
    text_sd["bert_model.embeddings.position_ids"] = torch.arange(bert_config.max_position_embeddings).unsqueeze(0)
    config = {
        "tqn_model_layers": sizes.tqn_layers,
        "bert_model_name": "emilyalsentzer/Bio_ClinicalBERT",
        "ecg_model_name": "xresnet1d_101",
        "H": 4,
        "d_model": 768,
        "demo": {"seed": seed, "ecg_spec": asdict(sizes.ecg)},
    }
    checkpoint = {
        "ecg_model": ecg.state_dict(),
        "model": tqn.state_dict(),
        "text_encoder": text_sd,
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
        "lr_scheduler": {"last_epoch": 3},
        "config": config,
        "epoch": 3,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


UNTRAINED_NOTE = (
    "UNTRAINED DEMO MODEL: randomly initialised weights in the published format. "
    "Its outputs mean nothing clinically; use it only to try the API."
)


def build_demo_bundle(
    out_dir: Path,
    *,
    corpus: Iterable[str] = (),
    full_size_text: bool = False,
    tqn_layers: int = 7,
    seed: int = 0,
    parity_windows: np.ndarray | None = None,
    log: Log = lambda _msg: None,
    progress: bool | None = False,
    overwrite: bool = False,
) -> Path:
    """Random checkpoint in the real format -> exported bundle marked ``untrained``.

    The text encoder is a small BERT by default (fast to build); ``full_size_text`` uses the
    Bio_ClinicalBERT configuration (110 M parameters) for realistic timings. ``log`` and
    ``progress`` as in ``export_bundle``: a line per step with its duration, a tqdm bar.
    """
    import tempfile

    from app.build.export import export_bundle
    from app.errors import CheckpointError

    # Refuse before the (slow) vocabulary/checkpoint work, not after it; export checks again.
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise CheckpointError(f"output directory {out_dir} is not empty (use --overwrite to replace it)")
    bert: dict[str, Any] = dict(BIO_CLINICAL_BERT_CONFIG if full_size_text else SMALL_BERT_CONFIG)
    texts = list(corpus)
    with tempfile.TemporaryDirectory(prefix="ecgfm-demo-") as tmp:
        with Progress(2, "demo weights", log, bar=progress) as steps:
            with steps.step("train the WordPiece vocabulary"):
                vocab = train_demo_vocab(texts, vocab_size=min(4000, bert["vocab_size"]))
                text_dir = write_text_model_dir(Path(tmp) / "text_model", bert, vocab)
            with steps.step("build the random checkpoint"):
                ckpt = build_demo_checkpoint(Path(tmp) / "demo_checkpoint.pt", text_dir,
                                             sizes=DemoSizes(tqn_layers=tqn_layers), seed=seed)
        result = export_bundle(
            ckpt,
            text_dir,
            out_dir,
            parity_windows=parity_windows,
            parity_texts=texts[:71] if len(texts) >= 71 else None,
            log=log,
            progress=progress,
            overwrite=overwrite,
            extra_manifest={
                "untrained": True,
                "untrained_note": UNTRAINED_NOTE,
                "model_version": f"demo-untrained-seed{seed}" + ("-fullsize" if full_size_text else ""),
                "vocabulary": {
                    "source": "WordPiece trained with the tokenizers library on the built-in label texts "
                    "(Bio_ClinicalBERT's vocabulary is not available offline)",
                    "tokens": len(vocab),
                },
                "text_model": "Bio_ClinicalBERT configuration" if full_size_text else "small BERT (2 layers, 64 wide)",
            },
        )
    return result.bundle_dir
