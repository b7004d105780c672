"""Request and response models of the REST API (they are its OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from chronorag.arguments import MAX_QUESTION_CHARS

MAX_TOP_K = 200
MAX_NEW_TOKENS = 4096


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- errors
class ErrorDetail(BaseModel):
    message: str
    type: str


class ErrorOut(BaseModel):
    error: ErrorDetail


# --------------------------------------------------------------------------- documents and jobs
class DocumentIn(Strict):
    """A document as chronorag JSONL spells it; value problems (a bad date, empty text) fail the
    document in its job, not the request."""

    id: StrictStr | StrictInt
    text: StrictStr
    published_at: StrictStr | None = Field(None, description="ISO-8601 or a date; naive times are read in default_tz")
    title: StrictStr | None = None
    source: StrictStr | None = Field(None, description="default 'api'")
    metadata: dict[str, Any] | None = None


class DocumentsIn(Strict):
    documents: list[DocumentIn] = Field(min_length=1)


class DocumentOut(BaseModel):
    id: str
    text: str
    published_at: str | None
    title: str | None
    source: str
    metadata: dict[str, Any]
    chunks: int


class DeletedOut(BaseModel):
    deleted: str


class JobCounts(BaseModel):
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: int = 0


class JobErrorOut(BaseModel):
    doc_id: str | None = None
    line: int | None = Field(None, description="1-based line of the file, or position in the request's list")
    error: str


class JobOut(BaseModel):
    id: str
    state: Literal["queued", "running", "done", "failed"]
    done: int
    total: int
    counts: JobCounts
    errors: list[JobErrorOut]
    created_at: str | None
    finished_at: str | None
    source: str


class JobAccepted(BaseModel):
    job_id: str
    state: Literal["queued", "running", "done", "failed"]
    job: JobOut


class JobList(BaseModel):
    jobs: list[JobOut]
    offset: int
    limit: int
    next_offset: int | None


# --------------------------------------------------------------------------- retrieval
class Filters(Strict):
    since: StrictStr | None = Field(None, description="YYYY, YYYY-MM, YYYY-MM-DD or ISO-8601 (inclusive)")
    until: StrictStr | None = Field(None, description="as since; a date includes that whole day")
    doc_ids: list[StrictStr] | None = None
    sources: list[StrictStr] | None = None


Question = Field(min_length=1, max_length=MAX_QUESTION_CHARS)


class RetrieveIn(Filters):
    question: StrictStr = Question
    top_k: int = Field(8, ge=1, le=MAX_TOP_K)


class HitOut(BaseModel):
    chunk_id: int
    doc_id: str
    published_at: str | None
    score: float
    scores: dict[str, float]
    ranks: dict[str, int] = {}
    source: str = ""
    ord: int = 0
    text: str


class RetrieveOut(BaseModel):
    question: str | None
    results: list[HitOut]
    stale: dict[str, int] = Field(description="indexes behind the store -> changes not applied yet")
    query: dict[str, Any] | None


# --------------------------------------------------------------------------- answers
class QueryIn(Filters):
    question: StrictStr = Question
    budget: int | None = Field(None, ge=1, description="context budget in the generator's tokens")
    budget_ms: float | None = Field(None, gt=0, description="context budget in prefill milliseconds (planner only)")
    planner: Literal["topk", "mcts", "greedy"] = "topk"
    top_k: int = Field(4, ge=1, le=MAX_TOP_K)
    max_new_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)
    stream: bool = False


class CitationOut(BaseModel):
    n: int
    chunk_id: int
    doc_id: str
    published_at: str | None
    snippet: str


class Cost(BaseModel):
    tokens: int = Field(description="tokens of the chunks placed in the context")
    budget: int | None


class AnswerOut(BaseModel):
    question: str
    answer: str | None
    citations: list[CitationOut]
    sources: list[HitOut] = Field(description="the chunks placed in the context, in prompt order")
    cost: Cost
    planner: str
    timings: dict[str, Any]
    cache: dict[str, Any] | None
    finish_reason: str | None
    reason: str | None
    stale: dict[str, int]
    query: dict[str, Any] | None


# --------------------------------------------------------------------------- graph and stats
class FactOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    fact_id: str
    subject: str
    relation: str
    object: str


class TimelineOut(BaseModel):
    name: str
    facts: list[FactOut]


class PeriodChild(BaseModel):
    period: str
    summary: str


class PeriodOut(BaseModel):
    period: str
    level: str
    start: str
    end: str
    summary: str
    n_facts: int
    n_chunks: int
    top_facts: list[FactOut]
    children: list[PeriodChild]


class IndexOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    applied_seq: int
    behind: int = Field(description="changes (or chunks, for a rebuild) the index has not applied yet")


class QueueOut(BaseModel):
    depth: int = Field(description="ingestion jobs queued or running")


class StatsOut(BaseModel):
    documents: int
    undated_documents: int
    chunks: int
    tokens: int
    embeddings: int
    change_seq: int
    change_log_entries: int
    published_from: str | None
    published_to: str | None
    indexes: dict[str, IndexOut]
    stale: dict[str, int]
    disk_bytes: int
    queue: QueueOut


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyOut(BaseModel):
    ready: bool
    missing: list[str] = Field(description="what is not ready yet (empty when ready)")
    writer: bool = Field(description="whether this process runs the ingestion worker")
