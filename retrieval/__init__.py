"""Candidate generation and fusion: BM25 segments, dense FAISS vectors, reciprocal rank fusion."""
