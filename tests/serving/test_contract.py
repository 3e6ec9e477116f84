"""The model contract read from a real bundle's manifest and checked against its real graphs
(app/contract.py, app/serving/bundle.py, app/serving/runtime.py).

Each test builds a bundle directory of its own: links to the session's small bundle's graphs
and tokenizer, and a manifest edited as the test says.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.contract import PRETRAINING, ModelContract, read_contract, resampling_text
from app.errors import BundleError
from app.serving import bundle as B
from app.serving.runtime import ModelRuntime, RuntimeOptions, load_runtime


def bundle_with(small_bundle: Path, root: Path, edit: Any) -> Path:
    """A bundle whose files are the small bundle's (linked) and whose manifest ``edit`` changed."""
    root.mkdir()
    for item in small_bundle.iterdir():
        if item.name not in (B.MANIFEST, "optimized"):
            (root / item.name).symlink_to(item)
    manifest = json.loads((small_bundle / B.MANIFEST).read_text())
    edit(manifest)
    (root / B.MANIFEST).write_text(json.dumps(manifest))
    return root


def set_preprocessing(**values: Any) -> Any:
    def edit(manifest: dict[str, Any]) -> None:
        manifest["preprocessing"].update(values)
    return edit


def runtime_of(bundle: Path, tmp_path: Path) -> ModelRuntime:
    options = RuntimeOptions(provider="cpu", intra_op_threads=1, optimized_model_dir=tmp_path / "opt")
    return load_runtime(bundle, options)


def test_the_small_bundle_states_the_pretraining_contract(small_bundle, tmp_path) -> None:
    bundle = B.open_bundle(small_bundle)
    assert bundle.contract == PRETRAINING and bundle.stated_contract.assumed == frozenset()
    runtime = runtime_of(small_bundle, tmp_path)
    assert runtime.contract == PRETRAINING
    assert runtime.contract.window_shape == (12, 1000) and runtime.contract.segment_s == pytest.approx(10 / 32)


@pytest.mark.parametrize(("values", "named"), [
    ({"units": "uV"}, "units: expected 'mV', found 'uV'"),
    ({"filtering": "bandpass 0.5-40 Hz"}, "filtering: expected 'none', found 'bandpass 0.5-40 Hz'"),
    ({"normalisation": "z-score per lead"}, "normalisation: expected 'none', found 'z-score per lead'"),
    ({"nan": "interpolated"}, "nan: expected 'set to 0', found 'interpolated'"),
    ({"resampling": "polyphase to 100 Hz"},
     f"resampling: expected {resampling_text(100)!r}, found 'polyphase to 100 Hz'"),
    ({"lead_order": ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]}, "lead_order: expected ['I', 'II', 'III', "),
    ({"lead_order": [*PRETRAINING.lead_order[:-1], "V7"]}, "found ['I', 'II', 'III', 'aVR', 'aVL', 'aVF', 'V1', 'V2', "
                                                           "'V3', 'V4', 'V5', 'V7']"),
    ({"sampling_rate_hz": 0}, "sampling_rate_hz: expected 'a positive whole number', found 0"),
    ({"window_seconds": 5.0}, "window_seconds: expected 10.0, found 5.0"),
])
def test_a_contract_this_code_cannot_honour_is_refused_naming_the_difference(small_bundle, tmp_path, values,
                                                                             named) -> None:
    bundle = bundle_with(small_bundle, tmp_path / "other", set_preprocessing(**values))
    with pytest.raises(BundleError, match="does not match this service") as err:
        B.open_bundle(bundle)
    assert named in err.value.message
    assert [d["field"] for d in err.value.details["contract"]] == list(values)


def test_every_difference_is_named_at_once(small_bundle, tmp_path) -> None:
    bundle = bundle_with(small_bundle, tmp_path / "other", set_preprocessing(units="V", filtering="notch 50 Hz"))
    with pytest.raises(BundleError) as err:
        load_runtime(bundle, RuntimeOptions(provider="cpu"))
    assert err.value.details["contract"] == [
        {"field": "units", "expected": "mV", "found": "V"},
        {"field": "filtering", "expected": "none", "found": "notch 50 Hz"},
    ]


@pytest.mark.parametrize(("values", "named"), [
    ({"feature_width": 512}, "feature_width: expected 768, found 512"),
    ({"segments": 16, "feature_seconds": 10 / 16}, "segments: expected 32, found 16"),
    ({"window_samples": 500, "window_seconds": 5.0, "feature_seconds": 5 / 32},
     "window_samples: expected 1000, found 500"),
])
def test_a_contract_the_graphs_contradict_is_refused_at_load(small_bundle, tmp_path, values, named) -> None:
    bundle = bundle_with(small_bundle, tmp_path / "other", set_preprocessing(**values))
    B.open_bundle(bundle)  # the manifest alone is consistent; its graphs are not
    with pytest.raises(BundleError, match="does not match its graphs") as err:
        runtime_of(bundle, tmp_path)
    assert named in err.value.message


def test_another_sampling_rate_is_honoured(small_bundle, tmp_path) -> None:
    """The graphs fix the window's samples, not its rate: a 250 Hz contract (4 s windows) loads."""
    values = {"sampling_rate_hz": 250, "resampling": resampling_text(250), "window_seconds": 4.0,
              "feature_seconds": 4 / 32}
    bundle = bundle_with(small_bundle, tmp_path / "other", set_preprocessing(**values))
    contract = runtime_of(bundle, tmp_path).contract
    assert (contract.sampling_rate_hz, contract.window_samples, contract.window_s) == (250, 1000, 4.0)
    assert contract.segment_s == pytest.approx(0.125)


def test_older_manifests_get_width_and_segments_from_config_and_graphs(small_bundle, tmp_path) -> None:
    def older(manifest: dict[str, Any]) -> None:  # written before feature_width / segments were
        for key in ("feature_width", "segments"):
            manifest["preprocessing"].pop(key, None)

    bundle = B.open_bundle(bundle_with(small_bundle, tmp_path / "older", older))
    assert bundle.contract == PRETRAINING  # width: config.d_model; segments: window_seconds / feature_seconds
    assert bundle.stated_contract.assumed == frozenset()

    def oldest(manifest: dict[str, Any]) -> None:  # nor the config's d_model, nor feature_seconds
        older(manifest)
        manifest["preprocessing"].pop("feature_seconds")
        manifest["config"].pop("d_model")

    path = bundle_with(small_bundle, tmp_path / "oldest", oldest)
    assert B.open_bundle(path).stated_contract.assumed == {"feature_width", "segments"}
    assert runtime_of(path, tmp_path).contract == PRETRAINING  # taken from the graphs' shapes


def test_a_manifest_without_preprocessing_is_refused(small_bundle, tmp_path) -> None:
    bundle = bundle_with(small_bundle, tmp_path / "none", lambda m: m.pop("preprocessing"))
    with pytest.raises(BundleError, match="has no preprocessing section"):
        B.open_bundle(bundle)


def test_the_manifest_section_reads_back_as_the_same_contract() -> None:
    other = ModelContract(sampling_rate_hz=500, window_samples=2500, lead_order=tuple(reversed(PRETRAINING.lead_order)),
                          feature_width=512, segments=40)
    for contract in (PRETRAINING, other):
        stated = read_contract({"preprocessing": contract.manifest_preprocessing()})
        assert stated.contract == contract and stated.assumed == frozenset()
