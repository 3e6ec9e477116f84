"""Label files for ad-hoc scoring (app/usecases/label_files.py): real files in the test's folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.errors import InvalidInput, MalformedFile
from app.knowledge.types import LabelDraft
from app.usecases.label_files import parse_labels, read_label_file

WELLENS = "Deeply inverted or biphasic T waves in V2-V3 with preserved R waves"


def test_json_list_and_object_forms(tmp_path: Path) -> None:
    labels = [
        {"name": "wellens pattern", "description": WELLENS},
        {"name": " Sinus Bradycardia ", "description": "Sinus rhythm below 60/min", "codes": {"SNOMED CT": "426177001"},
         "synonyms": ["SB"], "encode_text": "name"},
    ]
    as_list = tmp_path / "labels.json"
    as_list.write_text(json.dumps(labels))
    as_object = tmp_path / "labels.txt"  # the content decides, not the name
    as_object.write_text("\n  " + json.dumps({"labels": labels}))
    expected = [
        LabelDraft("wellens pattern", WELLENS),
        LabelDraft("Sinus Bradycardia", "Sinus rhythm below 60/min", ("SB",), {"SNOMED CT": "426177001"}, "name"),
    ]
    assert read_label_file(as_list) == read_label_file(as_object) == expected


def test_csv_with_code_system_columns(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(
        "\ufeffname,description,SNOMED CT,synonyms\n"
        f'wellens pattern,"{WELLENS}",,\n'
        "\n"
        "right bundle branch block,QRS >= 120 ms with rSR' in V1,713427006|59118001,RBBB|CRBBB\n",
        encoding="utf-8",
    )
    assert read_label_file(path) == [
        LabelDraft("wellens pattern", WELLENS),
        LabelDraft("right bundle branch block", "QRS >= 120 ms with rSR' in V1", ("RBBB", "CRBBB"),
                   {"SNOMED CT": "713427006|59118001"}),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "no label"),
        ("[]", "no label"),
        ('{"items": []}', "expected a list of labels"),
        ('[{"name": "x", "description": "y", "colour": "red"}]', "unknown keys ['colour']"),
        ('[{"name": "x"}]', "'description' must be a string"),
        ('[{"name": "x", "description": ""}]', "encoded by its description, which is empty"),
        ('[{"name": "x", "description": "y", "encode_text": "both"}]', "'encode_text' must be one of"),
        ('[{"name": "x", "description": "y", "codes": {"SNOMED CT": 1}}]', "'codes' must map"),
        ('[{"name": "x", "description": "y"}, {"name": "X ", "description": "z"}]', "'X' is listed more than once"),
        ("label,text\nx,y\n", "needs a header row with columns name and description (missing: name, description)"),
        ("name,description\nx,y,z\n", "row 2: more cells than header columns"),
        ("name,description,encode_text\nx,y,words\n", "row 2: encode_text must be one of"),
    ],
)
def test_problems_name_the_file_and_entry(content: str, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_labels(content, "mine.csv")
    assert info.value.message.startswith("mine.csv") and message in info.value.message


def test_broken_json_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(MalformedFile, match="not valid JSON"):
        parse_labels('[{"name": ', "mine.json")
    with pytest.raises(MalformedFile, match="cannot be read"):
        read_label_file(tmp_path / "absent.csv")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("name,description\nx,caf\xe9\n".encode("latin-1"))
    with pytest.raises(MalformedFile, match="UTF-8"):
        read_label_file(latin)
