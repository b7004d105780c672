"""Documents and ingestion jobs: ``/v1/documents``, ``/v1/jobs``.

Writes go through the durable job queue (the ingestion worker applies them); ``?wait=true`` answers
once the job is done, i.e. every index has applied it. Deletes go through the engine, so a 200
means the document is gone from every index.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from email.message import Message

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from chronorag.api.auth import require
from chronorag.api.deps import Service, get_service
from chronorag.api.errors import ApiError
from chronorag.api.models import DeletedOut, DocumentOut, DocumentsIn, ErrorOut, JobAccepted, JobList, JobOut
from chronorag.api.uploads import form_value, json_records, upload_records
from chronorag.jobs import Job

router = APIRouter(prefix="/v1", tags=["documents"])
_E = {"model": ErrorOut}
UPLOAD_SCHEMA = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary",
                 "description": ".jsonl / .jsonl.gz (chronorag JSONL, or CRUD-RAG raw lines with format=crud), "
                                ".txt or .md (one note, id folder/name)"},
        "format": {"type": "string", "enum": ["jsonl", "crud"]},
        "folder": {"type": "string", "description": "a note's id prefix, as a folder ingest names it (default uploads)"},
    },
}
POST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/DocumentsIn"}},
            "multipart/form-data": {"schema": {"$ref": "#/components/schemas/DocumentUpload"}},
        },
    }
}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def job_out(job: Job) -> JobOut:
    return JobOut.model_validate({**job.to_dict(), "source": job.source})


async def _wait(service: Service, job_id: str) -> Job:
    """The job once finished, or as it stands after ``api_wait_timeout_s``. Polls from the event
    loop (each look a short thread hop) rather than parking a pool thread for the whole wait."""
    deadline = time.monotonic() + service.settings.api_wait_timeout_s
    pause = 0.02
    while True:
        job = await run_in_threadpool(service.queue.get, job_id)
        if job is None:
            raise ApiError(404, f"job {job_id!r} is gone")
        if job.finished or time.monotonic() >= deadline:
            return job
        await asyncio.sleep(pause)
        pause = min(pause * 1.5, 0.25)


def _media_type(request: Request) -> str:
    raw = request.headers.get("content-type")
    if not raw:
        raise ApiError(415, "no Content-Type: send application/json or multipart/form-data", "unsupported_media_type")
    msg = Message()
    msg["content-type"] = raw
    return msg.get_content_type()


async def _records(request: Request, service: Service, fmt: str | None) -> tuple[list, str]:
    s = service.settings
    kind = _media_type(request)
    if kind == "application/json" or kind.endswith("+json"):
        raw = await request.body()
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"malformed JSON: {exc}", "invalid_json") from None
        body = DocumentsIn.model_validate(data)  # a ValidationError is a 422
        return await run_in_threadpool(json_records, body, s.default_tz, s.api_max_documents), "api"
    if kind == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=8)
        except Exception as exc:  # a broken multipart body, too many parts
            if getattr(exc, "status_code", None) == 413:  # the body cap
                raise
            raise ApiError(400, f"cannot read the multipart body: {exc}") from None
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ApiError(400, "the multipart body needs a 'file' field holding the file")
            chosen = fmt or form_value(form.get("format"))
            records = await run_in_threadpool(upload_records, upload.file, upload.filename, chosen,
                                              form_value(form.get("folder")), s.default_tz, s.api_max_documents)
            return records, f"upload:{upload.filename}"
        finally:
            await form.close()
    raise ApiError(415, f"unsupported Content-Type {kind!r}: send application/json or multipart/form-data",
                   "unsupported_media_type")


@router.post("/documents", status_code=202, response_model=JobAccepted, openapi_extra=POST_BODY,
             dependencies=[require("write")],
             responses={200: {"model": JobAccepted, "description": "with wait=true: the job is done"},
                        400: _E, 413: _E, 415: _E, 422: _E, 503: _E},
             summary="Add or replace documents (JSON list or a file upload) through an ingestion job")
async def post_documents(request: Request, service: Service = Depends(get_service),
                         wait: bool = Query(False, description="answer when every index has applied the job"),
                         fmt: str | None = Query(None, alias="format", pattern="^(jsonl|crud)$",
                                                 description="uploads: crud for raw CRUD-RAG lines")):
    records, source = await _records(request, service, fmt)
    job = await run_in_threadpool(service.queue.submit, records, source)
    if wait:
        job = await _wait(service, job.id)
    out = job_out(job)
    status = 200 if wait and out.state in ("done", "failed") else 202
    return JSONResponse(JobAccepted(job_id=out.id, state=out.state, job=out).model_dump(), status_code=status)


@router.get("/documents/{doc_id:path}", response_model=DocumentOut, dependencies=[require("read")],
            responses={404: _E}, summary="A stored document")
def get_document(doc_id: str = Path(description="the document's id (may contain '/')"),
                 service: Service = Depends(get_service)) -> DocumentOut:
    engine = service.engine
    doc = engine.store.get_document(doc_id)
    if doc is None:
        raise ApiError(404, f"no document with id {doc_id!r}")
    return DocumentOut(id=doc.doc_id, text=doc.text, published_at=_iso(doc.published_at), title=doc.title,
                       source=doc.source, metadata=doc.metadata, chunks=len(engine.store.doc_chunk_ids(doc_id)))


@router.delete("/documents/{doc_id:path}", response_model=DeletedOut, dependencies=[require("write")],
               responses={404: _E}, summary="Delete a document from the store and every index")
def delete_document(doc_id: str = Path(description="the document's id (may contain '/')"),
                    service: Service = Depends(get_service)) -> DeletedOut:
    if not service.engine.delete([doc_id]):
        raise ApiError(404, f"no document with id {doc_id!r}")
    return DeletedOut(deleted=doc_id)


@router.get("/jobs/{job_id}", response_model=JobOut, dependencies=[require("read")], responses={404: _E},
            tags=["jobs"], summary="An ingestion job: state, progress, per-document errors")
def get_job(job_id: str, service: Service = Depends(get_service)) -> JobOut:
    job = service.queue.get(job_id)
    if job is None:
        raise ApiError(404, f"no job with id {job_id!r}")
    return job_out(job)


@router.get("/jobs", response_model=JobList, dependencies=[require("read")], tags=["jobs"],
            summary="Ingestion jobs, newest first, a page at a time")
def list_jobs(offset: int = Query(0, ge=0, le=10**9), limit: int = Query(50, ge=1, le=500),
              service: Service = Depends(get_service)) -> JobList:
    jobs = [job_out(j) for j in service.queue.list(offset=offset, limit=limit)]
    return JobList(jobs=jobs, offset=offset, limit=limit, next_offset=offset + len(jobs) if len(jobs) == limit else None)
