"""Loading the published checkpoint faithfully (app/build/checkpoint.py and the modules).

The checkpoints are real files written with ``torch.save`` in the published format by
``app.build.demo`` and compared with ``shared/model-spec/checkpoint_keys.tsv``. Semantics are
checked against references computed here independently (``torch.nn.MultiheadAttention`` in
the authors' sequence-first layout, a hand-written AvgPool, the BERT pooler by hand).
"""

from __future__ import annotations

import copy
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from app.errors import CheckpointError
from app.build import demo
from app.build.checkpoint import build_ecg_encoder, build_text_encoder, build_tqn, file_sha256, read_checkpoint
from app.build.ecg_encoder import EcgEncoder
from app.build.text_encoder import TextEncoder, load_bert_config
from app.serving.tokenizer import build_tokenizer, encode
from app.build.tqn import TQN

SPEC_TSV = Path(__file__).resolve().parents[2].parent / "shared" / "model-spec" / "checkpoint_keys.tsv"
ECG_PARAMS = 7_865_984
TQN_PARAMS = 45_708_547
TEXT_PARAMS = 110_082_049


# --- helpers and fixtures -------------------------------------------------------------------


def spec_rows() -> list[dict[str, str]]:
    if not SPEC_TSV.is_file():
        pytest.skip(f"model spec not found at {SPEC_TSV}")
    lines = SPEC_TSV.read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, (line.split("\t") + [""] * len(header))[: len(header)])) for line in lines[1:] if line]


def spec_section(section: str) -> dict[str, tuple[tuple[int, ...], str]]:
    out = {}
    for row in spec_rows():
        if row["section"] == section:
            shape = tuple(int(x) for x in row["shape"].strip("[]").split(",") if x.strip())
            out[row["key"]] = (shape, row["dtype"])
    return out


def described(sd: dict[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in sd.items()}


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())  # parameters() counts a shared tensor once


@pytest.fixture(scope="module")
def full_checkpoint(small_checkpoint, tmp_path_factory) -> Path:
    """The demo checkpoint at full size (7-layer TQN, xresnet1d101 widths), small BERT."""
    return demo.build_demo_checkpoint(tmp_path_factory.mktemp("full") / "full.pt", small_checkpoint.text_dir,
                                      sizes=demo.DemoSizes(tqn_layers=7))


@pytest.fixture(scope="module")
def full(full_checkpoint):
    ckpt = read_checkpoint(full_checkpoint)
    return ckpt, build_ecg_encoder(ckpt), build_tqn(ckpt)


@pytest.fixture(scope="module")
def small(small_checkpoint):
    ckpt = read_checkpoint(small_checkpoint.path)
    return ckpt, build_ecg_encoder(ckpt), build_tqn(ckpt), build_text_encoder(ckpt, small_checkpoint.text_dir)


@pytest.fixture(scope="module")
def small_raw(small_checkpoint) -> dict:
    return torch.load(small_checkpoint.path, map_location="cpu", weights_only=True)


def variant(raw: dict, path: Path, **changes) -> Path:
    """A copy of the checkpoint dict (sections copied shallowly) with changes, saved to ``path``."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    out.update(changes)
    torch.save(out, path)
    return path


@pytest.fixture(scope="module")
def windows(real_windows) -> torch.Tensor:
    return torch.from_numpy(real_windows[[0, 2, 5]])  # three records: CPSC, Georgia, PTB


@pytest.fixture(scope="module")
def label_feats() -> torch.Tensor:
    """Nine distinct label vectors (the TQN's input). Random, not the demo text encoder's output:
    a randomly initialised BERT maps every text to almost the same vector (cosine 0.99999), which
    would hide label interaction."""
    return torch.randn(9, 768, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def informative_text(small) -> TextEncoder:
    """The checkpoint's text encoder with BERT matrices scaled 10x so that texts differ (cosine
    ~0.7 instead of 0.99999): masking and padding mistakes then show."""
    text = copy.deepcopy(small[3])
    with torch.no_grad():
        for name, p in text.bert_model.named_parameters():
            if p.dim() == 2 and "LayerNorm" not in name:
                p.mul_(10)
    return text.eval()


# --- 1. strict loading of the published structure ------------------------------------------


@pytest.mark.parametrize("section", ["ecg_model", "model"])
def test_demo_checkpoint_sections_equal_the_published_key_list(full_checkpoint, section) -> None:
    raw = torch.load(full_checkpoint, map_location="cpu", weights_only=True)
    assert described(raw[section]) == spec_section(section)
    assert {"ecg_model", "model", "text_encoder", "config", "epoch", "optimizer", "lr_scheduler"} <= set(raw)


def test_full_size_parameter_counts_and_shared_aliases(full_checkpoint, full) -> None:
    ckpt, ecg, tqn = full
    assert n_params(ecg) == ECG_PARAMS
    assert n_params(tqn) == TQN_PARAMS
    assert len(tqn.decoder.layers) == 7
    # every alias in the spec is the same tensor in the loaded module and in the file
    raw = torch.load(full_checkpoint, map_location="cpu", weights_only=True)
    modules = {"ecg_model": ecg.state_dict(keep_vars=True), "model": tqn.state_dict(keep_vars=True)}
    aliases = [r for r in spec_rows() if r["alias_of"] and r["section"] in modules]
    assert len(aliases) > 500
    for r in aliases:
        sd, key, target = modules[r["section"]], r["key"], r["alias_of"]
        assert sd[key] is sd[target], key
        assert raw[r["section"]][key].untyped_storage().data_ptr() == raw[r["section"]][target].untyped_storage().data_ptr()
    # loading put the file's values in: alias pairs and a sample of keys
    assert torch.equal(ecg.state_dict()["4.0.convpath.0.1.0.weight"], raw["ecg_model"]["4.0.convs.1.0.weight"])
    assert torch.equal(tqn.decoder.norm.weight, raw["model"]["decoder_norm.weight"])
    for section, sd in (("ecg_model", ecg.state_dict()), ("model", tqn.state_dict())):
        for key, value in raw[section].items():
            assert torch.equal(sd[key], value), key


def test_full_size_text_encoder_structure_matches_the_published_key_list(small_checkpoint) -> None:
    """Bio_ClinicalBERT's config gives exactly the published text_encoder keys (position_ids aside)."""
    config_dir = demo.write_text_model_dir(small_checkpoint.text_dir.parent / "bio_clinical_cfg",
                                           demo.BIO_CLINICAL_BERT_CONFIG, ["[PAD]"])
    with torch.device("meta"):
        text = TextEncoder(load_bert_config(config_dir))
    expected = spec_section("text_encoder")
    assert expected.pop("bert_model.embeddings.position_ids") == ((1, 512), "int64")
    assert described(text.state_dict()) == expected
    assert n_params(text) == TEXT_PARAMS


def test_position_ids_present_or_absent_load_the_same(small_raw, small_checkpoint, small, tmp_path) -> None:
    assert "bert_model.embeddings.position_ids" in small_raw["text_encoder"]  # as in the published file
    text_sd = dict(small_raw["text_encoder"])
    del text_sd["bert_model.embeddings.position_ids"]
    path = variant(small_raw, tmp_path / "no_position_ids.pt", text_encoder=text_sd)
    text = build_text_encoder(read_checkpoint(path), small_checkpoint.text_dir)
    tok = build_tokenizer(small_checkpoint.text_dir / "vocab.txt")
    enc = encode(tok, ["sinus rhythm", "atrial fibrillation with rapid ventricular response"])
    ids, mask = torch.from_numpy(enc.input_ids), torch.from_numpy(enc.attention_mask)
    with torch.no_grad():
        assert torch.equal(text(ids, mask), small[3](ids, mask))
    # a position_ids buffer of the wrong length is named
    text_sd["bert_model.embeddings.position_ids"] = torch.arange(300).unsqueeze(0)
    bad = variant(small_raw, tmp_path / "bad_position_ids.pt", text_encoder=text_sd)
    with pytest.raises(CheckpointError, match="position_ids has 300 positions"):
        build_text_encoder(read_checkpoint(bad), small_checkpoint.text_dir)


def test_tqn_model_layers_in_config_is_honoured(small, full, small_raw, tmp_path) -> None:
    assert len(small[2].decoder.layers) == 2 and small[0].config["tqn_model_layers"] == 2
    assert len(full[2].decoder.layers) == 7
    # a 2-layer file whose config claims 3 layers: the missing layer's keys are listed
    cfg = dict(small_raw["config"], tqn_model_layers=3)
    with pytest.raises(CheckpointError, match=r"missing keys: decoder\.layers\.2\.") as err:
        build_tqn(read_checkpoint(variant(small_raw, tmp_path / "l3.pt", config=cfg)))
    assert all(k.startswith("decoder.layers.2.") for k in err.value.details["missing"])
    # claiming 1 layer: layer 1's keys are unexpected
    cfg = dict(small_raw["config"], tqn_model_layers=1)
    with pytest.raises(CheckpointError, match=r"unexpected keys: decoder\.layers\.1\."):
        build_tqn(read_checkpoint(variant(small_raw, tmp_path / "l1.pt", config=cfg)))
    # no tqn_model_layers: the published default, 7
    cfg = {k: v for k, v in small_raw["config"].items() if k != "tqn_model_layers"}
    with pytest.raises(CheckpointError, match=r"\(90 in all\)") as err:
        build_tqn(read_checkpoint(variant(small_raw, tmp_path / "l_default.pt", config=cfg)))
    assert {k.split(".")[2] for k in err.value.details["missing"]} == {"2", "3", "4", "5", "6"}


def test_round_trip_through_torch_save_gives_identical_outputs(small, small_checkpoint, tmp_path, windows, label_feats) -> None:
    ckpt, ecg, tqn, text = small
    path = tmp_path / "round_trip.pt"
    torch.save({"ecg_model": ecg.state_dict(), "model": tqn.state_dict(), "text_encoder": text.state_dict(),
                "config": ckpt.config, "epoch": 3}, path)
    again = read_checkpoint(path)
    assert again.sha256 == file_sha256(path) != ckpt.sha256
    ecg2, tqn2, text2 = build_ecg_encoder(again), build_tqn(again), build_text_encoder(again, small_checkpoint.text_dir)
    ids = torch.tensor([[2, 40, 41, 42, 3]])
    with torch.no_grad():
        p1, a1 = tqn(ecg(windows), label_feats)
        p2, a2 = tqn2(ecg2(windows), label_feats)
        assert torch.equal(p1, p2) and torch.equal(a1, a2)
        assert torch.equal(text(ids, torch.ones_like(ids)), text2(ids, torch.ones_like(ids)))


# --- 2. bad files are CheckpointErrors that name the problem -------------------------------


class _Payload:
    """Unpickling this runs os.mkdir(marker): arbitrary code a safe load must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_random_bytes_and_non_torch_zip(tmp_path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint"):
        read_checkpoint(junk)
    other_zip = tmp_path / "other.pt"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("readme.txt", "not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_checkpoint(other_zip)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "absent.pt")


def test_truncated_file(small_checkpoint, tmp_path) -> None:
    data = small_checkpoint.path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(cut)


def test_pickle_needing_arbitrary_code_is_refused_and_not_run(small_raw, tmp_path) -> None:
    marker = tmp_path / "code_ran"
    path = variant(small_raw, tmp_path / "evil.pt", extra=_Payload(marker))
    with pytest.raises(CheckpointError, match="not a safe checkpoint") as err:
        read_checkpoint(path)
    assert "weights" in str(err.value).lower() or "unsupported" in str(err.value).lower()
    assert not marker.exists(), "the payload ran"
    # the payload is live: an unsafe load would have run it
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.is_dir()


def test_not_a_dict_and_missing_section(small_raw, tmp_path) -> None:
    lst = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], lst)
    with pytest.raises(CheckpointError, match="holds a list"):
        read_checkpoint(lst)
    no_model = {k: v for k, v in small_raw.items() if k != "model"}
    path = tmp_path / "no_model.pt"
    torch.save(no_model, path)
    with pytest.raises(CheckpointError, match=r"lacks section\(s\) \['model'\]") as err:
        read_checkpoint(path)
    assert err.value.details["missing_sections"] == ["model"]
    notsd = variant(small_raw, tmp_path / "notsd.pt", ecg_model={"0.0.weight": [1, 2]})
    with pytest.raises(CheckpointError, match="'ecg_model' .* not a state_dict"):
        read_checkpoint(notsd)


def test_missing_key_is_listed(small_raw, tmp_path) -> None:
    ecg_sd = dict(small_raw["ecg_model"])
    del ecg_sd["6.22.convs.1.1.running_var"], ecg_sd["6.22.convpath.0.1.1.running_var"]
    with pytest.raises(CheckpointError, match=r"'ecg_model'.*missing keys: 6\.22\.convpath\.0\.1\.1\.running_var, "
                                              r"6\.22\.convs\.1\.1\.running_var") as err:
        build_ecg_encoder(read_checkpoint(variant(small_raw, tmp_path / "m.pt", ecg_model=ecg_sd)))
    assert err.value.details["missing"] == ["6.22.convpath.0.1.1.running_var", "6.22.convs.1.1.running_var"]
    tqn_sd = dict(small_raw["model"])
    del tqn_sd["mlp_head.2.bias"]
    with pytest.raises(CheckpointError, match=r"'model'.*missing keys: mlp_head\.2\.bias"):
        build_tqn(read_checkpoint(variant(small_raw, tmp_path / "m2.pt", model=tqn_sd)))


def test_unexpected_key_is_listed(small_raw, small_checkpoint, tmp_path) -> None:
    tqn_sd = dict(small_raw["model"], **{"decoder.extra_proj.weight": torch.zeros(3)})
    with pytest.raises(CheckpointError, match=r"unexpected keys: decoder\.extra_proj\.weight") as err:
        build_tqn(read_checkpoint(variant(small_raw, tmp_path / "u.pt", model=tqn_sd)))
    assert err.value.details["unexpected"] == ["decoder.extra_proj.weight"] and not err.value.details["missing"]
    text_sd = dict(small_raw["text_encoder"], **{"bert_model.cls.predictions.bias": torch.zeros(4000)})
    with pytest.raises(CheckpointError, match=r"'text_encoder'.*unexpected keys: bert_model\.cls\.predictions\.bias"):
        build_text_encoder(read_checkpoint(variant(small_raw, tmp_path / "u2.pt", text_encoder=text_sd)),
                           small_checkpoint.text_dir)


def test_wrong_shape_is_listed_with_both_shapes(small_raw, small_checkpoint, tmp_path) -> None:
    tqn_sd = dict(small_raw["model"], **{"decoder.layers.1.linear2.bias": torch.zeros(700)})
    with pytest.raises(CheckpointError, match=r"wrong shapes: decoder\.layers\.1\.linear2\.bias \[700\] \(expected \[768\]\)"):
        build_tqn(read_checkpoint(variant(small_raw, tmp_path / "s.pt", model=tqn_sd)))
    ecg_sd = dict(small_raw["ecg_model"], **{"5.0.convs.1.0.weight": torch.zeros(128, 128, 3)})
    with pytest.raises(CheckpointError, match=r"5\.0\.convs\.1\.0\.weight \[128, 128, 3\] \(expected \[128, 128, 5\]\)"):
        build_ecg_encoder(read_checkpoint(variant(small_raw, tmp_path / "s2.pt", ecg_model=ecg_sd)))
    # the text encoder is built from config.json: a 4000-row embedding against a 28996-word config
    big_vocab = demo.write_text_model_dir(tmp_path / "big_vocab", demo.SMALL_BERT_CONFIG | {"vocab_size": 28996},
                                          ["[PAD]"])
    with pytest.raises(CheckpointError, match=r"word_embeddings\.weight \[4000, 64\] \(expected \[28996, 64\]\)"):
        build_text_encoder(read_checkpoint(small_checkpoint.path), big_vocab)


@pytest.mark.parametrize(
    ("change", "message"),
    [({"tqn_model_layers": 0}, "tqn_model_layers=0 is not a positive integer"),
     ({"tqn_model_layers": "seven"}, "tqn_model_layers='seven' is not a positive integer"),
     ({"tqn_model_layers": True}, "tqn_model_layers=True is not a positive integer"),
     ({"H": 8}, "H=8: this service supports 4-head")],
)
def test_unsupported_config(small_raw, tmp_path, change, message) -> None:
    path = variant(small_raw, tmp_path / "cfg.pt", config=dict(small_raw["config"], **change))
    with pytest.raises(CheckpointError, match=message):
        build_tqn(read_checkpoint(path))


def test_text_model_dir_without_config_json(small, tmp_path) -> None:
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    with pytest.raises(CheckpointError, match="has no config.json"):
        build_text_encoder(small[0], tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read"):
        build_text_encoder(small[0], tmp_path)


# --- 3. semantics against the spec, computed independently --------------------------------


class RefDecoderLayer(nn.Module):
    """The published layer, on torch.nn.MultiheadAttention in its sequence-first layout."""

    def __init__(self, d: int, heads: int, ff: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads)
        self.multihead_attn = nn.MultiheadAttention(d, heads)
        self.linear1, self.linear2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, q, memory):  # (C, B, D), (S, B, D)
        h = self.norm1(q)
        q = q + self.self_attn(h, h, h, need_weights=False)[0]
        h = self.norm2(q)
        out, w = self.multihead_attn(h, memory, memory, need_weights=True, average_attn_weights=True)
        q = q + out
        q = q + self.linear2(F.relu(self.linear1(self.norm3(q))))
        return q, w


class RefTQN(nn.Module):
    def __init__(self, layers: int, d: int = 768, heads: int = 4, ff: int = 1024, hidden: int = 2048) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.zeros(()))
        self.decoder_norm = nn.LayerNorm(d)
        self.decoder = nn.Module()
        self.decoder.layers = nn.ModuleList(RefDecoderLayer(d, heads, ff) for _ in range(layers))
        self.decoder.norm = nn.LayerNorm(d)  # a separate module here, loaded from the aliased keys
        self.mlp_head = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, 2))

    def forward(self, features, labels):  # (B, D, S), (C, D)
        memory = self.decoder_norm(features.permute(2, 0, 1))  # (S, B, D)
        q = self.decoder_norm(labels).unsqueeze(1).repeat(1, features.shape[0], 1)  # (C, B, D)
        for layer in self.decoder.layers:
            q, w = layer(q, memory)
        logits = self.mlp_head(self.decoder.norm(q).transpose(0, 1))  # (B, C, 2)
        return F.softmax(logits, dim=-1)[..., 1], w


@pytest.mark.parametrize("which", ["small", "full"])
def test_tqn_equals_a_reference_on_torch_multihead_attention(which, small, full, windows, label_feats) -> None:
    ckpt, ecg, tqn = (small if which == "small" else full)[:3]
    ref = RefTQN(len(tqn.decoder.layers)).eval()
    ref.load_state_dict(ckpt.model, strict=True)  # the published keys fit torch's own modules
    with torch.no_grad():
        feats = ecg(windows)
        probs, attn = tqn(feats, label_feats)
        ref_probs, ref_attn = ref(feats, label_feats)
    b, c = len(windows), len(label_feats)
    assert probs.shape == (b, c) and attn.shape == (b, c, 32)
    assert torch.allclose(probs, ref_probs, atol=1e-5, rtol=0), (probs - ref_probs).abs().max()
    assert torch.allclose(attn, ref_attn, atol=1e-5, rtol=0), (attn - ref_attn).abs().max()
    assert torch.allclose(attn.sum(-1), torch.ones(b, c), atol=1e-5)
    # informative weights: probabilities spread over labels and differ between records
    assert probs.max() - probs.min() > 0.1
    assert (probs[0] - probs[1]).abs().max() > 1e-3


def test_labels_interact_through_self_attention(small, windows, label_feats) -> None:
    _, ecg, tqn, _ = small
    with torch.no_grad():
        feats = ecg(windows)
        base, _ = tqn(feats, label_feats[[0, 1, 2]])
        other, _ = tqn(feats, label_feats[[0, 5, 6, 7]])
        alone, _ = tqn(feats, label_feats[[0]])
        perm, perm_attn = tqn(feats, label_feats[[2, 0, 1]])
        _, base_attn = tqn(feats, label_feats[[0, 1, 2]])
    # label 0's probability depends on the other labels in the set
    assert (base[:, 0] - other[:, 0]).abs().max() > 1e-3
    assert (base[:, 0] - alone[:, 0]).abs().max() > 1e-3
    # but not on their order (no positional encodings)
    assert torch.allclose(perm, base[:, [2, 0, 1]], atol=1e-6)
    assert torch.allclose(perm_attn, base_attn[:, [2, 0, 1]], atol=1e-6)


def test_ecg_encoder_output_shapes(small, real_windows) -> None:
    ecg = small[1]
    with torch.no_grad():
        assert ecg(torch.from_numpy(real_windows[:2])).shape == (2, 768, 32)
        long = torch.from_numpy(np.concatenate([real_windows[5:10]], axis=-1).reshape(1, 12, 5000))
        assert ecg(long).shape == (1, 768, 157)


def test_strided_shortcut_averages_a_lone_last_sample_alone(small) -> None:
    """ceil_mode AvgPool1d(2): on an odd length the last sample is averaged alone (divisor 1)."""
    ecg = small[1]
    block = ecg[5][0]  # stage 2, first block: stride 2, shortcut AvgPool -> conv -> BN
    x = torch.randn(2, 256, 125, generator=torch.Generator().manual_seed(1))
    pooled = torch.cat([x[..., :-1].reshape(2, 256, 62, 2).mean(-1), x[..., -1:]], dim=-1)  # by hand
    with torch.no_grad():
        assert torch.allclose(block.idpath[0](x), pooled, atol=1e-6)
        expected = F.relu(block.convs(x) + block.idpath[1](pooled))
        out = block(x)
    assert out.shape == (2, 512, 63)
    assert torch.allclose(out, expected, atol=1e-5)
    # 1000 samples reach stage 3 with 125 (odd): the encoder relies on this to give 32 features
    with torch.no_grad():
        h = nn.Sequential(*list(ecg)[:5])(torch.zeros(1, 12, 1000))
        assert h.shape[-1] == 250 and ecg[5](h).shape[-1] == 125 and ecg[6](ecg[5](h)).shape[-1] == 63


def test_text_encoder_is_mlp_of_pooler_output_without_normalisation(informative_text, small_checkpoint, label_texts) -> None:
    text = informative_text
    tok = build_tokenizer(small_checkpoint.text_dir / "vocab.txt")
    enc = encode(tok, label_texts[:6])
    ids, mask = torch.from_numpy(enc.input_ids), torch.from_numpy(enc.attention_mask)
    with torch.no_grad():
        got = text(ids, mask)
        hidden = text.bert_model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
        sd = text.state_dict()
        pooled = torch.tanh(F.linear(hidden[:, 0], sd["bert_model.pooler.dense.weight"], sd["bert_model.pooler.dense.bias"]))
        x = F.gelu(F.linear(pooled, sd["mlp_embed.0.weight"], sd["mlp_embed.0.bias"]))
        x = F.gelu(F.linear(x, sd["mlp_embed.2.weight"], sd["mlp_embed.2.bias"]))
        expected = F.linear(x, sd["mlp_embed.4.weight"], sd["mlp_embed.4.bias"])
    assert got.shape == (6, 768)
    assert torch.allclose(got, expected, atol=1e-6)
    norms = got.norm(dim=-1)
    assert (norms - 1).abs().min() > 0.05, norms  # not L2-normalised
    # token_type_ids are zeros: passing explicit zeros changes nothing, ones would
    with torch.no_grad():
        ones = text.mlp_embed(text.bert_model(input_ids=ids, attention_mask=mask,
                                              token_type_ids=torch.ones_like(ids)).pooler_output)
    assert (ones - got).abs().max() > 1e-4


def test_dynamic_padding_equals_padding_to_256(informative_text, small_checkpoint, label_texts) -> None:
    text = informative_text
    tok = build_tokenizer(small_checkpoint.text_dir / "vocab.txt")
    texts = ["sinus rhythm", label_texts[0], label_texts[3] + " " + label_texts[4]]
    dyn, fixed = encode(tok, texts), encode(tok, texts, pad_to=256)
    assert dyn.input_ids.shape[1] < 256 == fixed.input_ids.shape[1]
    with torch.no_grad():
        a = text(torch.from_numpy(dyn.input_ids), torch.from_numpy(dyn.attention_mask))
        b = text(torch.from_numpy(fixed.input_ids), torch.from_numpy(fixed.attention_mask))
        alone = text(torch.from_numpy(encode(tok, texts[:1]).input_ids), torch.from_numpy(encode(tok, texts[:1]).attention_mask))
    assert torch.allclose(a, b, atol=1e-5, rtol=0), (a - b).abs().max()
    assert torch.allclose(a[:1], alone, atol=1e-5, rtol=0)
    # the check can fail: different texts differ, and attending to the pads changes the result
    assert F.cosine_similarity(a[0], a[1], dim=0) < 0.99
    with torch.no_grad():
        unmasked = text(torch.from_numpy(fixed.input_ids), torch.ones_like(torch.from_numpy(fixed.attention_mask)))
    assert (unmasked[:2] - b[:2]).abs().max() > 1e-3
