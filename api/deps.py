"""The service's shared state (one engine, the job queue, the worker, keys, metrics) and the
dependencies routes take it through."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from fastapi import Request

from chronorag.api.generation import GenerationSlots
from chronorag.api.metrics import Metrics
from chronorag.config import Settings
from chronorag.engine import ChronoRAG
from chronorag.keys import KeyStore

log = logging.getLogger("chronorag.api")


class Service:
    """Everything a request needs. ``open`` and ``close`` run in the app's lifespan."""

    def __init__(self, settings: Settings, auth: bool, engine: ChronoRAG | None, worker: bool, warm_up: bool,
                 jobs: Any) -> None:
        self.settings = settings
        self.auth = auth
        self.started = time.time()
        self.engine: ChronoRAG | None = engine
        self._owns_engine = engine is None
        self._want_worker = worker
        self._want_warm_up = warm_up
        self._jobs = jobs
        self.queue: Any = None
        self.worker: Any = None
        self.is_writer = False
        self.keys: KeyStore | None = None
        self.metrics = Metrics()
        self.slots = GenerationSlots(settings.api_generation_queue)
        self.warmed = threading.Event()
        self.warm_error: str | None = None
        self._warm_thread: threading.Thread | None = None
        self._watched = False

    # ------------------------------------------------------------------ life
    def open(self) -> None:
        if self.engine is None:
            self.engine = ChronoRAG(self.settings, create=False)
        jobs = self._jobs
        if jobs is None:
            import chronorag.jobs as jobs  # noqa: PLC0415 - written alongside; imported when serving
        self.queue = jobs.JobQueue(self.engine.store)
        self.keys = KeyStore(self.engine.store)
        if self.auth and not self.keys.any_active():
            log.warning("no active API key in %s: every request needing one is refused "
                        "(create one with `chronorag keys create --scope read|write|admin`)", self.settings.data_dir)
        if self._want_worker:
            self.worker = jobs.IngestWorker(self.engine, self.queue)
            self.is_writer = bool(self.worker.start())
            if not self.is_writer:
                log.warning("another process is the writer of %s: serving reads; the jobs queued here are "
                            "run by it", self.settings.data_dir)
        if not self._watched:  # an app started again (tests) keeps its one collector
            self.metrics.watch_service(self)
            self._watched = True
        if self._want_warm_up:
            self._warm_thread = threading.Thread(target=self._warm_up, name="chronorag-warm-up", daemon=True)
            self._warm_thread.start()
        else:
            self.warmed.set()

    def _warm_up(self) -> None:
        t0 = time.perf_counter()
        try:
            self.engine.warm_up()
        except Exception as exc:  # the service still serves what needs no model; /readyz says why not ready
            self.warm_error = f"{type(exc).__name__}: {exc}"
            log.error("warm-up failed: %s", self.warm_error)
        else:
            log.info("warm-up done in %.1f s", time.perf_counter() - t0)
        finally:
            self.warmed.set()

    def close(self) -> None:
        if self.worker is not None:
            try:
                self.worker.stop()
            except Exception as exc:
                log.error("stopping the ingestion worker: %s", exc)
        if self._warm_thread is not None:
            self._warm_thread.join(timeout=30)
        if self._owns_engine and self.engine is not None:
            self.engine.close()

    # ------------------------------------------------------------------ helpers
    def readiness(self) -> list[str]:
        """What keeps the service from being ready (empty when ready)."""
        missing = []
        if not self.warmed.is_set():
            missing.append("models are loading (warm-up)")
        elif self.warm_error:
            missing.append(f"warm-up failed: {self.warm_error}")
        stale = self.engine.read_state()
        for name, n in stale.items():
            missing.append(f"index {name} is {n:,} change(s) behind the store")
        return missing


def get_service(request: Request) -> Service:
    return request.app.state.service
