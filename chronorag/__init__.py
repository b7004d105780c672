"""chronorag: retrieval-augmented generation over document collections that change over time.

The two verbs most users need are :meth:`ChronoRAG.insert` and :meth:`ChronoRAG.retrieve`
(see :mod:`chronorag.engine`); everything else is reachable from there.
"""

from chronorag.offline import enforce_offline

enforce_offline()

__version__ = "0.1.0"

__all__ = ["__version__"]
