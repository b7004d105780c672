"""Per-chunk KV caches and their reuse at generation time. Not built yet."""
