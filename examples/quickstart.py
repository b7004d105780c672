"""Ingest the bundled sample corpus into a temporary data directory and ask a time-scoped question.

    .venv/bin/python examples/quickstart.py
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timezone
from pathlib import Path

from chronorag.config import load_settings
from chronorag.engine import ChronoRAG
from chronorag.ingest.loaders import load

SAMPLE = Path(__file__).resolve().parents[1] / "chronorag" / "samples" / "sample_news.jsonl"

with tempfile.TemporaryDirectory() as tmp, ChronoRAG(load_settings(data_dir=tmp)) as rag:
    print(rag.insert(load(SAMPLE, "jsonl")).summary_line())
    question = "Who was the chief executive of Northwind Energy?"
    for label, until in (("any time", None), ("until end of 2021", datetime(2021, 12, 31, tzinfo=timezone.utc))):
        print(f"\n{question} ({label})")
        for hit in rag.retrieve(question, top_k=3, until=until):
            print(f"  {hit.published_at:%Y-%m-%d} {hit.doc_id}: {hit.text[:90]}...")
