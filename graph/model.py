"""What the temporal graph holds: entities, timestamped facts and their bi-temporal validity.

A fact's *valid time* is when it held in the world ([valid_from, valid_to)); its *transaction time*
is when we learned it (``recorded_at``, the ingestion time of its first source). Facts of a
functional relation ('chief executive of', 'headquartered in') are closed, never deleted, by a later
fact about the same key entity with a different other side. Validity is derived from the stored
facts every time a group changes, so ingesting out of order or deleting the closing fact re-opens
the earlier one.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

# relation label -> which side is fixed: 'object' means one subject per object at a time
# (an organisation has one chief executive), 'subject' one object per subject at a time.
FUNCTIONAL_RELATIONS: dict[str, str] = {
    "chief executive of": "object",
    "headquartered in": "subject",
    "chair of": "object",
    "chief financial officer of": "object",
}

_LEGAL_SUFFIX = re.compile(
    r"(?:[\s,]+(?:inc|incorporated|corp|corporation|ltd|limited|llc|plc|co|company|s\.?a|ag|gmbh)\.?)+$",
    re.IGNORECASE,
)
_SPACE = re.compile(r"\s+")
_EDGE_PUNCT = " \t\n\"'“”‘’.,;:!?()[]{}<>《》「」（）、，。：；！？"


def entity_key(name: str) -> str:
    """Canonical key: NFKC, case-folded, whitespace collapsed, legal suffixes dropped ('Acme Corp.' = 'acme')."""
    text = unicodedata.normalize("NFKC", name).strip(_EDGE_PUNCT)
    text = _SPACE.sub(" ", text)
    stripped = _LEGAL_SUFFIX.sub("", text)
    return (stripped or text).casefold()


def evidence_rank(confidence: float, chunk_id: int) -> tuple[float, int]:
    """Which of a fact's source rows speaks for it: the most confident, then the earliest chunk."""
    return (confidence, -chunk_id)


def merged_confidence(best: float, n_sources: int) -> float:
    """A fact's confidence: its best row's, raised by how many chunks state it."""
    return min(1.0, best + 0.1 * math.log(n_sources))


def fact_key(subject_key: str, relation: str, object_key: str, t_start: float | None, granularity: str | None) -> str:
    """A stable id for one fact at one time. JSON, then hashed: names may hold any character."""
    payload = json.dumps([subject_key, relation, object_key, t_start, granularity], ensure_ascii=False)
    return hashlib.blake2b(payload.encode("utf-8"), digest_size=12).hexdigest()


@dataclass
class Entity:
    key: str
    name: str
    type: str
    aliases: set[str] = field(default_factory=set)
    first_seen: datetime | None = None
    last_seen: datetime | None = None

    def to_dict(self) -> dict:
        return {
            "key": self.key,
            "name": self.name,
            "type": self.type,
            "aliases": sorted(self.aliases),
            "first_seen": self.first_seen.isoformat() if self.first_seen else None,
            "last_seen": self.last_seen.isoformat() if self.last_seen else None,
        }


@dataclass
class Fact:
    """One (subject, relation, object, time) edge, merged over every chunk that states it."""

    key: str
    subject: str  # entity key
    relation: str
    object: str  # entity key
    t_start: datetime | None
    t_end: datetime | None  # exclusive end of the stated time span
    granularity: str | None
    description: str
    sources: set[int] = field(default_factory=set)
    confidence: float = 0.5
    recorded_at: datetime | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    invalidated_by: str | None = None
    invalidated_at: datetime | None = None

    @property
    def functional(self) -> bool:
        return self.relation in FUNCTIONAL_RELATIONS

    def valid_at(self, t: datetime) -> bool:
        if self.valid_from is None:
            return False
        return self.valid_from <= t and (self.valid_to is None or t < self.valid_to)

    def overlaps(self, start: datetime | None, end: datetime | None) -> bool:
        """Does [valid_from, valid_to) meet [start, end) (a Period's or TimeScope's; None = unbounded)?"""
        if self.valid_from is None:
            return start is None and end is None
        if end is not None and self.valid_from >= end:
            return False
        if start is not None and self.valid_to is not None and self.valid_to <= start:
            return False
        return True

    def to_dict(self, names: dict[str, str] | None = None) -> dict:
        names = names or {}
        iso = lambda t: t.isoformat() if t else None  # noqa: E731
        return {
            "fact_id": self.key,
            "subject": names.get(self.subject, self.subject),
            "relation": self.relation,
            "object": names.get(self.object, self.object),
            "time": iso(self.t_start),
            "time_end": iso(self.t_end),
            "granularity": self.granularity,
            "valid_from": iso(self.valid_from),
            "valid_to": iso(self.valid_to),
            "recorded_at": iso(self.recorded_at),
            "invalidated_by": self.invalidated_by,
            "invalidated_at": iso(self.invalidated_at),
            "description": self.description,
            "source_chunk_ids": sorted(self.sources),
            "confidence": round(self.confidence, 3),
        }


def functional_group(fact: Fact) -> tuple[str, str] | None:
    """(relation, key entity) whose facts compete, or None for non-functional relations."""
    side = FUNCTIONAL_RELATIONS.get(fact.relation)
    if side is None:
        return None
    return (fact.relation, fact.object if side == "object" else fact.subject)


def other_side(fact: Fact) -> str:
    return fact.subject if FUNCTIONAL_RELATIONS.get(fact.relation) == "object" else fact.object


def assign_validity(facts: Iterable[Fact]) -> None:
    """Set valid_from/valid_to/invalidated_* on every fact (in place).

    Events hold over their stated span. A functional fact holds from its time until the first later
    fact of its group that names a different other side; that fact's ``recorded_at`` is when the
    earlier one was invalidated (transaction time of the close).
    """
    groups: dict[tuple[str, str], list[Fact]] = {}
    for f in facts:
        f.valid_from, f.valid_to, f.invalidated_by, f.invalidated_at = f.t_start, None, None, None
        g = functional_group(f)
        if g is None:
            f.valid_to = f.t_end
        elif f.t_start is not None:
            groups.setdefault(g, []).append(f)
    for members in groups.values():
        members.sort(key=lambda f: (f.t_start, f.key))
        for i, f in enumerate(members):
            for later in members[i + 1 :]:
                if later.t_start > f.t_start and other_side(later) != other_side(f):
                    f.valid_to = later.t_start
                    f.invalidated_by = later.key
                    f.invalidated_at = later.recorded_at
                    break
