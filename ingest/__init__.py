"""Turning files into dated documents and chunks: loaders, date parsing, chunking, the ingest job."""
