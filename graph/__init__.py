"""Temporal knowledge graph: entities, timestamped facts with bi-temporal validity, a time hierarchy.

Entry points: :class:`GraphIndex` (a DerivedIndex driven by ``catch_up``; ``retrieve``,
``parse_question``, ``search``, ``entity_timeline``, ``period_summary``), :class:`RuleExtractor`
(fast default) and :class:`LLMExtractor` (any ``complete(prompt) -> str``), :func:`parse_time_scope`.
"""

from chronorag.graph.extract import Extraction, Extractor, RuleExtractor
from chronorag.graph.index import GraphIndex
from chronorag.graph.llm_extract import LLMExtractor, LLMSummariser
from chronorag.graph.retrieve import GraphResult, QuestionParse, UnknownEntity, UnknownPeriod
from chronorag.graph.timeexpr import TimeSpan, find_dates, normalise
from chronorag.graph.timeline import ExtractiveSummariser
from chronorag.graph.timescope import parse_time_scope
from chronorag.periods import Period, TimeScope

__all__ = [
    "ExtractiveSummariser", "Extraction", "Extractor", "GraphIndex", "GraphResult", "LLMExtractor",
    "LLMSummariser", "Period", "QuestionParse", "RuleExtractor", "TimeScope", "TimeSpan", "UnknownEntity",
    "UnknownPeriod", "find_dates", "normalise", "parse_time_scope",
]
