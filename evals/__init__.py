"""Evaluation suite for CRUD-style benchmarks. Not built yet; see benchmarks/ for measurements."""
