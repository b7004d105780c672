"""Temporal knowledge graph (entities, timestamped facts, time hierarchy). Not built yet."""
