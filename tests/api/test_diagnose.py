"""POST /diagnose through the real app: uploads and JSON bodies from real records, the
response contract, label sets, FHIR, and every error path (4xx with the error body, never a
500, no upload folder left behind).

The model is the untrained small bundle: its probabilities mean nothing clinically, but
they are a deterministic function of the input, so "same input -> same probabilities" and
"different input -> different probabilities" are exact checks of the path a record takes.
"""

from __future__ import annotations

import io
import stat
import zipfile

import numpy as np
import pytest

from app.ecg.leads import derive_limb_leads

from .helpers import (
    ECG_DIR,
    assert_error,
    assert_same_probabilities,
    ecg_json,
    probabilities,
    read_record,
    record_files,
    spread,
    upload,
    upload_bytes,
    zip_of,
)

TIMING_STAGES = {"parse", "preprocess", "queue", "inference", "total"}
PRECORDIAL = ["V1", "V2", "V3", "V4", "V5", "V6"]


def _post_files(client, files, **params):
    return client.post("/diagnose", files=files, params=params)


def _post_json(client, ecgs, **params):
    return client.post("/diagnose", json={"ecgs": ecgs}, params=params)


def _ok(resp) -> dict:
    assert resp.status_code == 200, resp.text[:500]
    return resp.json()


@pytest.fixture(scope="module")
def e07500(client) -> dict:
    """The WFDB upload of E07500 with every label (the reference for format comparisons)."""
    return _ok(_post_files(client, upload(*record_files("E07500")), top_k=0))


@pytest.fixture(scope="module")
def a0001(client) -> dict:
    return _ok(_post_files(client, upload(*record_files("A0001")), top_k=0))


def _check_evidence(result: dict) -> None:
    duration = result["source"]["duration_s"]
    spans = [span for d in result["diagnoses"] for span in d["evidence"]]
    assert spans
    for span in spans:
        assert 0.0 <= span["start_s"] < span["end_s"] <= duration + 1e-6, (span, duration)
        assert 0.0 < span["weight"] <= 1.0


# --- uploads ----------------------------------------------------------------------------------


def test_wfdb_upload_response_contract(client, e07500, upload_tmp):
    body = e07500
    assert body["model"]["untrained"] is True
    assert body["model"]["provider"] == "CPUExecutionProvider"
    assert body["model"]["name"] and body["model"]["version"]
    default = client.get("/label-sets/default").json()
    assert body["label_set"] == {"name": "default", "version": default["version"]}
    assert "not a diagnosis" in body["intended_use"]
    assert "untrained_model" in {w["code"] for w in body["warnings"]}
    timings = body["timings_ms"]
    assert timings.keys() >= TIMING_STAGES
    assert all(v >= 0 for v in timings.values())
    assert timings["total"] >= timings["inference"] > 0

    [result] = body["results"]
    assert result["ecg_index"] == 0
    src = result["source"]
    assert (src["filename"], src["format"], src["fs"], src["duration_s"]) == ("E07500.hea", "wfdb", 500.0, 10.0)
    assert src["windows"] == 1 and src["window_starts_s"] == [0.0] and src["padded"] is False
    assert src["derived_leads"] == [] and len(src["leads_read"]) == 12
    diagnoses = result["diagnoses"]
    assert len(diagnoses) == len(default["labels"])  # top_k=0: every label of the set
    assert {d["label"] for d in diagnoses} == set(default["labels"])
    assert [d["rank"] for d in diagnoses] == list(range(1, len(diagnoses) + 1))
    probs = [d["probability"] for d in diagnoses]
    assert probs == sorted(probs, reverse=True) and all(0.0 <= p <= 1.0 for p in probs)
    assert spread(result) > 0  # not a constant output
    assert all(d["aggregation"] == "single_window" and d["knowledge"] for d in diagnoses)
    assert all(d.get("window_probabilities") is None for d in diagnoses)
    _check_evidence(result)

    # The same upload again: the same numbers (deterministic), and the temp dir is clean.
    again = _ok(_post_files(client, upload(*record_files("E07500")), top_k=0))["results"][0]
    assert probabilities(again) == probabilities(result)


def test_zip_of_a_record_gives_the_same_result(client, e07500, upload_tmp):
    archive = zip_of({f"rec/{p.name}": p.read_bytes() for p in record_files("E07500")})
    [result] = _ok(_post_files(client, upload_bytes("upload.zip", archive), top_k=0))["results"]
    assert result["source"]["filename"] == "E07500.hea"
    assert_same_probabilities(result, e07500["results"][0], tol=1e-6)


def test_long_record_windows_and_aggregation(client, upload_tmp):
    files = upload(*record_files("S0001"))
    body = _ok(_post_files(client, files, top_k=0, include_windows="true"))
    [result] = body["results"]
    src = result["source"]
    assert (src["fs"], src["duration_s"], src["windows"]) == (1000.0, 38.4, 4)
    assert src["window_starts_s"] == [0.0, 10.0, 20.0, 28.4]
    assert "tail_window" in {w["code"] for w in result["warnings"]}
    for d in result["diagnoses"]:
        windows = d["window_probabilities"]
        assert len(windows) == 4
        assert d["aggregation"] == "max"
        assert d["probability"] == max(windows)
    # windows really differ (otherwise max/mean would not be tested)
    assert any(max(d["window_probabilities"]) - min(d["window_probabilities"]) > 1e-3 for d in result["diagnoses"])
    _check_evidence(result)

    mean_body = _ok(_post_files(client, files, top_k=0, include_windows="true", aggregation="mean"))
    by_label = {d["label"]: d["window_probabilities"] for d in result["diagnoses"]}
    for d in mean_body["results"][0]["diagnoses"]:
        assert d["aggregation"] == "mean"
        assert d["window_probabilities"] == by_label[d["label"]]
        assert d["probability"] == pytest.approx(float(np.mean(d["window_probabilities"])), abs=2e-6)


def test_ptb_15_lead_record_ignores_frank_leads(client, upload_tmp):
    files = upload(*record_files("s0010_re"))
    assert [f[1][0] for f in files] == ["s0010_re.dat", "s0010_re.hea", "s0010_re.xyz"]
    [result] = _ok(_post_files(client, files))["results"]
    assert result["source"]["leads_read"] == ["I", "II", "III", "aVR", "aVL", "aVF", *PRECORDIAL]
    assert result["source"]["windows"] == 4
    ignored = [w for w in result["warnings"] if w["code"] == "ignored_leads"]
    assert len(ignored) == 1 and ignored[0]["leads"] == ["vx", "vy", "vz"]


def test_several_ecgs_in_one_call(client, e07500, a0001, upload_tmp):
    files = upload(*record_files("E07500"), *record_files("A0001"))
    body = _ok(_post_files(client, files, top_k=0))
    results = body["results"]
    assert [r["ecg_index"] for r in results] == [0, 1]
    by_file = {r["source"]["filename"]: r for r in results}
    assert set(by_file) == {"E07500.hea", "A0001.hea"}
    # scored together in one batch, each equals its own single-record call
    assert_same_probabilities(by_file["E07500.hea"], e07500["results"][0], tol=1e-5)
    assert_same_probabilities(by_file["A0001.hea"], a0001["results"][0], tol=1e-5)
    assert probabilities(by_file["E07500.hea"]) != probabilities(by_file["A0001.hea"])

    # JSON keeps the caller's order and echoes each id
    ecgs = [ecg_json(read_record("A0001"), ref="second-record"), ecg_json(read_record("E07500"), ref="first-record")]
    results = _ok(_post_json(client, ecgs, top_k=0))["results"]
    assert [(r["ecg_index"], r["id"]) for r in results] == [(0, "second-record"), (1, "first-record")]
    assert_same_probabilities(results[0], a0001["results"][0])
    assert_same_probabilities(results[1], e07500["results"][0])


def test_csv_and_npy_conversions_match_wfdb(client, e07500, upload_tmp):
    rec = read_record("E07500")
    header = ",".join(rec.lead_names)
    rows = "\n".join(",".join(repr(float(v)) for v in col) for col in rec.signals.T)
    csv = f"{header}\n{rows}\n".encode()
    [csv_result] = _ok(_post_files(client, upload_bytes("converted.csv", csv), top_k=0, sampling_rate=500))["results"]
    assert csv_result["source"]["format"] == "csv"
    assert_same_probabilities(csv_result, e07500["results"][0])

    buf = io.BytesIO()
    np.save(buf, rec.signals * 1000.0)  # (12, 5000) in microvolts, standard lead order
    params = {"top_k": 0, "sampling_rate": 500, "units": "uV", "lead_names": ",".join(rec.lead_names)}
    [npy_result] = _ok(_post_files(client, upload_bytes("converted.npy", buf.getvalue()), **params))["results"]
    assert npy_result["source"]["format"] == "npy"
    assert_same_probabilities(npy_result, e07500["results"][0])

    # without the rate the CSV cannot be read: a clear 400, not a guess
    assert_error(_post_files(client, upload_bytes("converted.csv", csv)), 400, "invalid_input")


def test_json_arrays_match_wfdb_and_units_scale(client, e07500, a0001):
    rec = read_record("E07500")
    [mv] = _ok(_post_json(client, [ecg_json(rec)], top_k=0))["results"]
    assert mv["source"]["format"] == "json" and mv["source"]["filename"] is None
    assert_same_probabilities(mv, e07500["results"][0])
    [uv] = _ok(_post_json(client, [ecg_json(rec, scale=1000.0, units="uV")], top_k=0))["results"]
    assert_same_probabilities(uv, e07500["results"][0])
    # sanity: another record gives clearly different numbers, so the tolerance means something
    pa, pb = probabilities(mv), probabilities(a0001["results"][0])
    assert max(abs(pa[k] - pb[k]) for k in pa) > 10 * 1e-3


def test_derived_limb_leads(client, e07500, a0001):
    rec = read_record("E07500")
    sent = ["I", "II", *PRECORDIAL]
    [derived] = _ok(_post_json(client, [ecg_json(rec, leads=sent)], top_k=0))["results"]
    assert derived["source"]["derived_leads"] == ["III", "aVR", "aVL", "aVF"]
    assert derived["source"]["leads_read"] == sent
    warning = [w for w in derived["warnings"] if w["code"] == "derived_leads"]
    assert len(warning) == 1 and warning[0]["leads"] == ["III", "aVR", "aVL", "aVF"]

    # The full record whose limb leads are exactly Einthoven/Goldberger of its I and II.
    rows = dict(zip(rec.lead_names, rec.signals, strict=True))
    rows.update(derive_limb_leads(rows["I"], rows["II"]))
    exact = {"sampling_rate": rec.fs, "units": "mV", "leads": {k: v.tolist() for k, v in rows.items()}}
    [full] = _ok(_post_json(client, [exact], top_k=0))["results"]
    assert full["source"]["derived_leads"] == []
    assert_same_probabilities(derived, full)

    # Against the recorded limb leads: these differ from the derivation by the 1 uV storage
    # rounding (III = II - I up to 0.0015 mV), which the random-weight model turns into
    # probability changes of a few 1e-3; still far below the difference to another record.
    recorded, other = probabilities(e07500["results"][0]), probabilities(a0001["results"][0])
    pd = probabilities(derived)
    to_recorded = max(abs(pd[k] - recorded[k]) for k in pd)
    between_records = max(abs(other[k] - recorded[k]) for k in pd)
    assert to_recorded < 0.5 * between_records, (to_recorded, between_records)


def test_short_record_needs_pad(client):
    rec = read_record("E07500")
    short = [ecg_json(rec, samples=2500)]  # 5 s
    err = assert_error(_post_json(client, short), 422, "signal_too_short")
    assert "pad=true" in err["message"]
    [result] = _ok(_post_json(client, short, pad="true", top_k=0))["results"]
    assert result["source"]["padded"] is True and result["source"]["duration_s"] == 5.0
    assert "padded" in {w["code"] for w in result["warnings"]}
    _check_evidence(result)  # spans end inside the 5 s actually recorded


# --- what is scored and returned --------------------------------------------------------------


def test_top_k_and_threshold(client):
    ecgs = [ecg_json(read_record("E07500"))]
    # references come from the same input path (JSON) as the requests they check: upload and
    # JSON differ by float rounding, which can swap labels whose probabilities nearly tie
    full = _ok(_post_json(client, ecgs, top_k=0))["results"][0]["diagnoses"]
    top3 = _ok(_post_json(client, ecgs, top_k=3))["results"][0]["diagnoses"]
    assert [(d["label"], d["rank"]) for d in top3] == [(d["label"], d["rank"]) for d in full[:3]]
    assert len(_ok(_post_json(client, ecgs))["results"][0]["diagnoses"]) == 5  # the default top_k

    cut = full[9]["probability"]
    kept = _ok(_post_json(client, ecgs, top_k=0, threshold=cut))["results"][0]["diagnoses"]
    expected = [d["label"] for d in full if d["probability"] >= cut]
    assert [d["label"] for d in kept] == expected and 10 <= len(kept) < len(full)
    assert_error(_post_json(client, ecgs, threshold=1.5), 422, "invalid_request")
    assert_error(_post_json(client, ecgs, top_k=-1), 422, "invalid_request")


def test_label_set_cinc2021(client):
    cinc = client.get("/label-sets/cinc2021").json()
    body = _ok(_post_json(client, [ecg_json(read_record("E07500"))], label_set="cinc2021", top_k=0))
    assert body["label_set"] == {"name": "cinc2021", "version": cinc["version"]}
    assert sorted(d["label"] for d in body["results"][0]["diagnoses"]) == sorted(cinc["labels"])


def test_explicit_labels_order_sets_the_version(client):
    names = client.get("/label-sets/default").json()["labels"][:3]
    ecgs = [ecg_json(read_record("E07500"))]
    forward = _ok(client.post("/diagnose", json={"ecgs": ecgs}, params=[("labels", n) for n in names] + [("top_k", 0)]))
    backward = _ok(client.post("/diagnose", json={"ecgs": ecgs},
                               params=[("labels", n) for n in reversed(names)] + [("top_k", 0)]))
    assert forward["label_set"]["name"] == backward["label_set"]["name"] == "adhoc"
    assert forward["label_set"]["version"] != backward["label_set"]["version"]
    for body in (forward, backward):
        assert sorted(d["label"] for d in body["results"][0]["diagnoses"]) == sorted(names)
    both = client.post("/diagnose", json={"ecgs": ecgs}, params={"labels": names[0], "label_set": "default"})
    assert_error(both, 400, "invalid_input")


def test_result_label_set_version_is_reproducible(client, e07500):
    """Fetching the version a result names lists its labels; scoring them in that order
    gives the same version and the same probabilities."""
    ref = e07500["label_set"]
    snapshot = client.get(f"/label-sets/{ref['name']}", params={"version": ref["version"]})
    assert snapshot.status_code == 200
    listed = snapshot.json()["labels"]
    assert snapshot.json()["version"] == ref["version"]
    assert sorted(listed) == sorted(d["label"] for d in e07500["results"][0]["diagnoses"])
    params = [("labels", n) for n in listed] + [("top_k", 0)]
    again = _ok(client.post("/diagnose", json={"ecgs": [ecg_json(read_record("E07500"))]}, params=params))
    assert again["label_set"]["version"] == ref["version"]
    assert_same_probabilities(again["results"][0], e07500["results"][0])


def test_unknown_label_set_or_label_is_404(client):
    ecgs = [ecg_json(read_record("E07500"), samples=5000)]
    err = assert_error(_post_json(client, ecgs, label_set="no-such-set"), 404, "not_found")
    assert err["details"] == {"label_set": "no-such-set"}
    assert_error(_post_json(client, ecgs, labels="no such diagnosis"), 404, "not_found")


def test_fhir_bundle(client):
    resp = client.post("/diagnose", files=upload(*record_files("E07500")),
                       headers={"Accept": "application/fhir+json"})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/fhir+json")
    bundle = resp.json()
    assert bundle["resourceType"] == "Bundle"
    resources = [e["resource"] for e in bundle["entry"]]
    reports = [r for r in resources if r["resourceType"] == "DiagnosticReport"]
    assert len(reports) == 1
    codings = reports[0]["code"]["coding"]
    assert {"system": "http://loinc.org", "code": "11524-6"}.items() <= codings[0].items()
    assert any(r["resourceType"] == "Observation" for r in resources)


# --- errors -------------------------------------------------------------------------------------


def _hea() -> bytes:
    return (ECG_DIR / "E07500.hea").read_bytes()


def _mat() -> bytes:
    return (ECG_DIR / "E07500.mat").read_bytes()


def _symlink_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        link = zipfile.ZipInfo("E07500.mat")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
        zf.writestr("E07500.hea", _hea())
    return buf.getvalue()


def _zip_bomb() -> bytes:
    # 16 MiB of zeros deflate to ~16 KiB: a ratio of about 1000 (the limit is 200)
    return zip_of({"E07500.hea": _hea(), "E07500.mat": bytes(16 << 20)})


MULTIPART_NO_FILE = (
    b'--b0undary\r\nContent-Disposition: form-data; name="note"\r\n\r\nno file here\r\n--b0undary--\r\n'
)

ERROR_CASES = {
    # name: (request kwargs factory, status, code)
    "text_plain_body": (lambda: {"content": b"I,II\n1,2\n", "headers": {"content-type": "text/plain"}},
                        415, "unsupported_format"),
    "invalid_json": (lambda: {"content": b'{"ecgs": [', "headers": {"content-type": "application/json"}},
                     400, "invalid_input"),
    "body_not_utf8": (lambda: {"content": b"\xff\xfe", "headers": {"content-type": "application/json"}},
                      400, "invalid_input"),
    "json_missing_rate": (lambda: {"json": {"ecgs": [{"leads": {"I": [0.1, 0.2]}}]}}, 400, "invalid_input"),
    "json_extra_field": (lambda: {"json": {"ecgs": [{"sampling_rate": 500, "leads": {"I": [0.1]}, "name": "x"}]}},
                         400, "invalid_input"),
    "json_no_ecgs": (lambda: {"json": {"ecgs": []}}, 400, "invalid_input"),
    "json_not_an_object": (lambda: {"json": [1, 2]}, 400, "invalid_input"),
    "unequal_lead_lengths": (lambda: {"json": {"ecgs": [{"sampling_rate": 500, "leads": {"I": [0.1] * 10,
                                                                                          "II": [0.1] * 9}}]}},
                             400, "invalid_input"),
    "nan_only_lead": (lambda: {"content": b'{"ecgs": [{"sampling_rate": 500, "leads": {"I": [NaN, NaN], '
                                          b'"II": [null, null]}}]}',
                               "headers": {"content-type": "application/json"}}, 400, "invalid_input"),
    "unknown_units": (lambda: {"json": {"ecgs": [{"sampling_rate": 500, "units": "furlong",
                                                  "leads": {"I": [0.1, 0.2]}}]}}, 422, "unsupported_signal"),
    "rate_out_of_range": (lambda: {"json": {"ecgs": [{"sampling_rate": 5, "leads": {"I": [0.1, 0.2]}}]}},
                          422, "unsupported_signal"),
    "missing_precordial_leads": (
        lambda: {"json": {"ecgs": [ecg_json(read_record("E07500"), leads=["I", "II", "III", "aVR", "aVL", "aVF"])]}},
        422, "missing_leads"),
    "amplitude_beyond_float32": (
        lambda: {"json": {"ecgs": [{**ecg_json(read_record("E07500")),
                                    "leads": {**ecg_json(read_record("E07500"))["leads"], "V1": [1e39] * 5000}}]}},
        422, "unsupported_signal"),
    "zip_traversal": (lambda: {"files": upload_bytes("r.zip", zip_of({"../E07500.hea": _hea(), "E07500.mat": _mat()}))},
                      400, "unsafe_upload"),
    "zip_symlink_member": (lambda: {"files": upload_bytes("r.zip", _symlink_zip())}, 400, "unsafe_upload"),
    "zip_bomb": (lambda: {"files": upload_bytes("r.zip", _zip_bomb())}, 413, "upload_too_large"),
    "corrupt_zip": (lambda: {"files": upload_bytes("r.zip", b"PK\x03\x04" + bytes(200))}, 422, "malformed_file"),
    "header_names_parent_file": (
        lambda: {"files": upload_bytes("E07500.hea", _hea().replace(b"E07500.mat", b"../E07500.mat"))
                 + upload_bytes("E07500.mat", _mat())},
        400, "unsafe_upload"),
    "upload_name_traversal": (
        lambda: {"files": upload_bytes("../../E07500.hea", _hea()) + upload_bytes("E07500.mat", _mat())},
        400, "unsafe_upload"),
    "unknown_file_type": (lambda: {"files": upload_bytes("notes.bin", b"\x00\x01\x02 not an ECG " * 50)},
                          415, "unsupported_format"),
    "truncated_mat": (
        lambda: {"files": upload_bytes("E07500.hea", _hea()) + upload_bytes("E07500.mat", _mat()[:60_000])},
        422, "malformed_file"),
    "header_without_signal_file": (lambda: {"files": upload_bytes("E07500.hea", _hea())}, 422, "malformed_file"),
    "too_many_ecgs": (lambda: {"json": {"ecgs": [ecg_json(read_record("E07500"), samples=50)] * 33}},
                      400, "invalid_input"),
    "content_length_over_limit": (lambda: {"content": b"{}", "headers": {"content-type": "application/json",
                                                                         "content-length": str(101 * 1024 * 1024)}},
                                  413, "upload_too_large"),
    "form_without_file": (lambda: {"content": MULTIPART_NO_FILE,
                                   "headers": {"content-type": "multipart/form-data; boundary=b0undary"}},
                          400, "invalid_input"),
    "bad_query_parameter": (lambda: {"json": {"ecgs": [{"sampling_rate": 500, "leads": {"I": [0.1]}}]},
                                     "params": {"aggregation": "median"}}, 422, "invalid_request"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_error_paths(client, upload_tmp, case):
    make, status, code = ERROR_CASES[case]
    resp = client.post("/diagnose", **make())
    assert_error(resp, status, code)
    # after the error: the service still answers, and (upload_tmp) no upload folder is left


def test_errors_never_leave_upload_folders_and_service_keeps_working(client, upload_tmp, e07500):
    for case in ("zip_bomb", "truncated_mat", "zip_symlink_member", "unknown_file_type"):
        make, status, code = ERROR_CASES[case]
        assert_error(client.post("/diagnose", **make()), status, code)
        assert list(upload_tmp.iterdir()) == []
    [result] = _ok(_post_files(client, upload(*record_files("E07500")), top_k=0))["results"]
    assert probabilities(result) == probabilities(e07500["results"][0])



# --- the typed response, FHIR from it, and the declared request body -----------------------------


def test_response_is_the_declared_schema_and_names_the_request(client, upload_tmp):
    from fhir.resources.R4B import get_fhir_model_class
    from fhir.resources.R4B.bundle import Bundle

    from app.api.schemas import DiagnoseResponse

    files = upload(*record_files("E07500"))
    resp = client.post("/diagnose", files=files, params={"top_k": 3}, headers={"X-Request-ID": "ward-7-req-0001"})
    body = _ok(resp)
    assert body["request_id"] == resp.headers["x-request-id"] == "ward-7-req-0001"
    # exactly the DiagnoseResponse shape: parsing and dumping it again changes nothing
    assert DiagnoseResponse.model_validate(body).model_dump(mode="json") == body

    fhir = client.post("/diagnose", files=files, params={"top_k": 3},
                       headers={"Accept": "application/fhir+json", "X-Request-ID": "ward-7-req-0001"})
    assert fhir.status_code == 200, fhir.text[:500]
    bundle = fhir.json()
    Bundle.model_validate(bundle)
    for entry in bundle["entry"]:
        get_fhir_model_class(entry["resource"]["resourceType"]).model_validate(entry["resource"])
    assert bundle["identifier"]["value"] == "ward-7-req-0001"
    observed = {e["resource"]["code"]["text"]: e["resource"]["valueQuantity"]["value"]
                for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"}
    assert observed == {d["label"]: d["probability"] for d in body["results"][0]["diagnoses"]}


def test_read_hints_as_form_fields(client, e07500, upload_tmp):
    rec = read_record("E07500")
    buf = io.BytesIO()
    np.save(buf, rec.signals * 1000.0)  # microvolts, standard lead order
    hints = {"sampling_rate": "500", "units": "uV", "lead_names": ",".join(rec.lead_names)}
    files = upload_bytes("converted.npy", buf.getvalue())
    [result] = _ok(client.post("/diagnose", files=files, data=hints, params={"top_k": 0}))["results"]
    assert result["source"]["format"] == "npy" and result["source"]["fs"] == 500.0
    assert_same_probabilities(result, e07500["results"][0])
    # empty form fields (what a browser form sends for blanks) are not given; the query still counts
    mixed = {"sampling_rate": "", "units": "uV", "lead_names": hints["lead_names"]}
    query = {"top_k": 0, "sampling_rate": 500}
    [again] = _ok(client.post("/diagnose", files=files, data=mixed, params=query))["results"]
    assert probabilities(again) == probabilities(result)

    err = assert_error(client.post("/diagnose", files=files, data=hints, params={"sampling_rate": 250}),
                       400, "invalid_input")
    assert err["details"] == {"field": "sampling_rate"}
    err = assert_error(client.post("/diagnose", files=files, data={**hints, "sampling_rate": "fast"}),
                       400, "invalid_input")
    assert err["details"] == {"field": "sampling_rate"}
    err = assert_error(client.post("/diagnose", files=files, data={**hints, "label_set": "default"}),
                       400, "invalid_input")
    assert err["details"] == {"fields": ["label_set"]}


def test_openapi_declares_both_request_bodies_and_both_answers(client):
    document = client.get("/openapi.json").json()
    operation = document["paths"]["/diagnose"]["post"]
    assert operation["operationId"] == "diagnose"
    content = operation["requestBody"]["content"]
    schemas = document["components"]["schemas"]
    assert content["multipart/form-data"]["schema"] == {"$ref": "#/components/schemas/DiagnoseUpload"}
    upload_schema = schemas["DiagnoseUpload"]
    assert upload_schema["properties"]["files"] == {
        **upload_schema["properties"]["files"], "type": "array", "items": {"type": "string", "format": "binary"}}
    assert {"sampling_rate", "units", "lead_names"} <= upload_schema["properties"].keys()
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/DiagnoseJson"}
    json_schema = schemas["DiagnoseJson"]
    assert json_schema["required"] == ["ecgs"]
    assert json_schema["properties"]["ecgs"]["items"] == {"$ref": "#/components/schemas/EcgArrays"}
    assert schemas["EcgArrays"]["required"]
    example = content["application/json"]["examples"]["arrays"]["value"]
    # the documented example is a request the service parses (too short to score: a clear 422)
    assert_error(client.post("/diagnose", json=example), 422, "signal_too_short")
    answers = operation["responses"]["200"]["content"]
    assert answers["application/json"]["schema"] == {"$ref": "#/components/schemas/DiagnoseResponse"}
    assert answers["application/fhir+json"]["schema"] == {"$ref": "#/components/schemas/FhirBundle"}
    assert schemas["FhirBundle"]["properties"]["resourceType"]["const"] == "Bundle"
    assert {"400", "404", "413", "415", "422", "503"} <= operation["responses"].keys()
