"""Request and response bodies (pydantic at the HTTP edge; dataclasses inside)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.knowledge.types import Label, LabelDraft, LabelSet, LabelSetDraft


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = {}


class ErrorBody(BaseModel):
    error: ErrorDetail


# --- labels --------------------------------------------------------------------------------


class LabelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., max_length=200, examples=["wellens syndrome"])
    description: str = Field(
        ..., max_length=4000,
        examples=["Biphasic or deeply inverted symmetric T waves in V2-V3 with little or no ST elevation ..."],
        description="the knowledge a clinician reads (and, with encode_text=description, what the model sees)",
    )
    synonyms: list[str] = []
    codes: dict[str, str] = Field({}, examples=[{"SNOMED CT": "164889003"}])
    encode_text: Literal["name", "description"] = Field(
        "description",
        description="text sent to the text encoder: the name (as pretraining did for diagnoses it saw) "
        "or the description (recommended for new diagnoses)",
    )
    label_sets: list[str] = Field([], description="existing label sets to append this label to")

    def draft(self) -> LabelDraft:
        return LabelDraft(self.name, self.description, tuple(self.synonyms), dict(self.codes), self.encode_text,
                          tuple(self.label_sets))


class LabelOut(BaseModel):
    id: int
    name: str
    description: str
    synonyms: list[str]
    codes: dict[str, str]
    encode_text: str
    builtin: bool
    updated_at: datetime
    label_sets: list[str] = []
    embedded: bool = Field(False, description="its text vector is in the cache for the served text encoder")

    @classmethod
    def of(cls, label: Label, *, label_sets: list[str] | None = None, embedded: bool = False) -> "LabelOut":
        return cls(id=label.id, name=label.name, description=label.description, synonyms=list(label.synonyms),
                   codes=dict(label.codes), encode_text=label.encode_text, builtin=label.builtin,
                   updated_at=label.updated_at, label_sets=label_sets or [], embedded=embedded)


class LabelSetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., max_length=200)
    description: str = ""
    labels: list[str] = Field(..., min_length=1, description="label names, in order")

    def draft(self) -> LabelSetDraft:
        return LabelSetDraft(self.name, self.description, tuple(self.labels))


class LabelSetOut(BaseModel):
    name: str
    description: str
    version: str
    builtin: bool
    labels: list[str]
    updated_at: datetime | None = None

    @classmethod
    def of(cls, s: LabelSet) -> "LabelSetOut":
        return cls(name=s.name, description=s.description, version=s.version, builtin=s.builtin,
                   labels=list(s.label_names), updated_at=s.updated_at)


# --- diagnose ------------------------------------------------------------------------------


class EcgArrays(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, max_length=128, description="caller's reference, echoed back (do not put patient identifiers here)")
    sampling_rate: float = Field(..., gt=0, examples=[500])
    units: str = Field("mV", examples=["mV", "uV"])
    leads: dict[str, list[float | None]] = Field(..., description="one array per named lead; null = missing sample")


class DiagnoseJson(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ecgs: list[EcgArrays] = Field(..., min_length=1)


class Evidence(BaseModel):
    start_s: float
    end_s: float
    weight: float = Field(..., description="share of the label's attention in this span")


class Diagnosis(BaseModel):
    rank: int
    label: str
    label_id: int | None
    probability: float
    aggregation: str = Field(..., description="how window probabilities were combined: max, mean or single_window")
    codes: dict[str, str]
    knowledge: str
    evidence: list[Evidence]
    window_probabilities: list[float] | None = None


class SignalWarningOut(BaseModel):
    code: str
    message: str
    leads: list[str] = []


class SourceOut(BaseModel):
    filename: str | None
    format: str
    fs: float
    duration_s: float
    leads_read: list[str]
    derived_leads: list[str]
    windows: int
    window_starts_s: list[float]
    padded: bool


class EcgResult(BaseModel):
    ecg_index: int
    id: str | None = None
    source: SourceOut
    diagnoses: list[Diagnosis]
    warnings: list[SignalWarningOut]


class ModelOut(BaseModel):
    name: str
    version: str
    provider: str
    precision: str
    untrained: bool
    checkpoint_sha256: str | None = None


class LabelSetRef(BaseModel):
    name: str
    version: str


class DiagnoseResponse(BaseModel):
    request_id: str
    model: ModelOut
    label_set: LabelSetRef
    intended_use: str
    results: list[EcgResult]
    warnings: list[SignalWarningOut]
    timings_ms: dict[str, float]
