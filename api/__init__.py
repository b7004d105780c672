"""REST service (FastAPI). Not built yet: the CLI and chronorag.engine are the entry points."""
