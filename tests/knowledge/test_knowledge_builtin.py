"""Built-in label sets: JSON content checks, and seeding that respects users' edits."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine

from app.errors import NotFound
from app.knowledge.builtin import builtin_files, load_builtin_sets, seed_builtin
from app.knowledge.store import KnowledgeStore
from app.knowledge.types import CODE_SEPARATOR, SCP_ECG, SNOMED_CT, LabelSetDraft, name_key

from .helpers import draft

BUILTIN_DIR = Path(__file__).resolve().parents[2] / "app" / "knowledge" / "builtin"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "ecg-samples"
SNOMED_CODE = re.compile(r"^[1-9][0-9]{5,17}$")


def _raw(name: str) -> dict:
    return json.loads((BUILTIN_DIR / name).read_text("utf-8"))


def test_files_load_and_are_the_expected_sets() -> None:
    assert builtin_files() == ["cinc2021.json", "default.json"]
    sets = {s.name: s for s in load_builtin_sets()}
    assert len(sets["cinc2021"].labels) == 26
    assert len(sets["default"].labels) == 71


@pytest.mark.parametrize("file_name", ["cinc2021.json", "default.json"])
def test_every_label_is_well_formed(file_name: str) -> None:
    raw = _raw(file_name)
    assert set(raw) == {"name", "description", "source", "labels"}
    names = [label["name"] for label in raw["labels"]]
    assert len({name_key(n) for n in names}) == len(names)
    for label in raw["labels"]:
        words = len(label["description"].split())
        assert 20 <= words <= 80, (label["name"], words)
        assert label["name"] == label["name"].lower().strip(), label["name"]
        assert label["encode_text"] == "name"
        assert all(isinstance(s, str) and s for s in label["synonyms"])
        for code in _snomed_codes(label):
            assert SNOMED_CODE.match(code), (label["name"], code)


def test_shared_labels_are_identical_across_files() -> None:
    by_name: dict[str, dict] = {}
    for file_name in builtin_files():
        for label in _raw(file_name)["labels"]:
            assert by_name.setdefault(label["name"], label) == label, label["name"]


def test_default_covers_the_71_ptbxl_statements_once() -> None:
    scp = [label["codes"].get(SCP_ECG) for label in _raw("default.json")["labels"]]
    assert None not in scp and len(set(scp)) == 71
    for expected in ("NORM", "IMI", "LVH", "SR", "AFIB", "CRBBB", "PVC", "3AVB", "TRIGU"):
        assert expected in scp


def test_cinc2021_matches_the_challenge_scored_classes() -> None:
    weights = SHARED / "cinc2021-b" / "physionet2021_weights.csv"
    if not weights.is_file():
        pytest.skip(f"challenge weights not found at {weights}")
    with weights.open(newline="") as handle:
        header = next(csv.reader(handle))[1:]
    expected = {frozenset(cls.split("|")) for cls in header}
    ours = {frozenset(_snomed_codes(label)) for label in _raw("cinc2021.json")["labels"]}
    assert len(expected) == 26
    assert ours == expected


def test_codes_of_one_system_are_never_shared_between_labels() -> None:
    seen: dict[str, str] = {}
    for set_ in load_builtin_sets():
        for label in set_.labels:
            for code in label.codes.get(SNOMED_CT, "").split(CODE_SEPARATOR):
                if code:
                    assert seen.setdefault(code, label.name) == label.name, code


def test_seeding_inserts_everything_once(store: KnowledgeStore) -> None:
    report = seed_builtin(store)
    assert len(report.labels_added) == 76
    assert report.label_sets_added == ["cinc2021", "default"]
    cinc = store.get_label_set("cinc2021")
    assert len(cinc.labels) == 26 and cinc.builtin
    assert cinc.labels[0].name == "atrial fibrillation"
    assert cinc.labels[0].code_list(SNOMED_CT) == ("164889003",)
    assert len(store.get_label_set("default").labels) == 71
    assert all(label.builtin for label in store.list_labels())
    assert cinc.version == store.get_label_set("cinc2021").version

    again = seed_builtin(store)
    assert again.labels_added == [] and again.label_sets_added == []
    assert len(store.list_labels()) == 76


def test_seeding_never_overwrites_or_resurrects(store: KnowledgeStore) -> None:
    mine = store.create_label(draft("Atrial Fibrillation", "My own wording."), actor="test")
    seed_builtin(store)
    assert store.get_label(mine.id).description == "My own wording."
    assert store.get_label_set("cinc2021").labels[0].id == mine.id

    rbbb = store.get_label_by_name("right bundle branch block")
    store.update_label(rbbb.id, draft(rbbb.name, "Edited by a cardiologist.", encode_text="name"), actor="test")
    bigeminy = store.get_label_by_name("bigeminy")
    store.delete_label(bigeminy.id, force=True, actor="test")
    store.delete_label_set("cinc2021", actor="test")
    edited = store.get_label_set("default")

    report = seed_builtin(store)
    assert report.labels_added == [] and report.label_sets_added == []
    kept = store.get_label_by_name("right bundle branch block")
    assert kept.description == "Edited by a cardiologist."
    with pytest.raises(NotFound, match="bigeminy"):
        store.get_label_by_name("bigeminy")
    assert store.get_label_set("default") == edited
    assert "cinc2021" not in [s.name for s in store.list_label_sets()]


def test_seeding_a_second_process_adds_nothing(
    store: KnowledgeStore, engine_factory: Callable[[], Engine]
) -> None:
    seed_builtin(store)
    other = KnowledgeStore(engine_factory())
    report = seed_builtin(other)
    assert report.labels_added == [] and report.label_sets_added == []
    assert len(other.list_label_sets()) == 2


def test_user_set_with_builtin_name_is_kept(store: KnowledgeStore) -> None:
    store.create_label(draft("x"), actor="test")
    store.create_label_set(LabelSetDraft("default", "mine", ("x",)), actor="test")
    report = seed_builtin(store)
    assert report.label_sets_added == ["cinc2021"]
    assert store.get_label_set("default").label_names == ("x",)


def _snomed_codes(label: dict) -> list[str]:
    raw = label["codes"].get(SNOMED_CT, "")
    return [c for c in raw.split(CODE_SEPARATOR) if c]
