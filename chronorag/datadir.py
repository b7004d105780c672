"""The data directory: where the store and the derived indexes live, and the one-writer lock.

Writers (ingest, delete, ``sync``, a reader applying a small backlog) take the lock, so two
processes, or two threads of one process, never write the same index files at once. Readers
never wait for it: they answer from what the indexes last committed.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from chronorag.store import StoreError

log = logging.getLogger(__name__)

LOCK_NAME = ".write.lock"
WRITER_ROLE_NAME = ".writer.lock"


class WriterRole:
    """The data directory's writer role, held until :meth:`release` (or the process dies).

    A role, not a lock around each write: the process holding it runs the ingestion jobs for its
    whole lifetime; the others queue jobs and read. The file names the holder's pid."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the role up; idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> "WriterRole":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class DataDir:
    def __init__(self, path: Path, create: bool) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"data directory {self.path} is a file, not a directory")
        if create:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # e.g. a parent is a file
                raise StoreError(f"cannot create data directory {self.path}: {exc}") from None

    @contextmanager
    def write_lock(self, wait: bool = True) -> Iterator[bool]:
        """Exclusive lock on the data directory; yields False if ``wait`` is off and it is taken.

        Each call opens its own descriptor: flock locks belong to the open file, so a second
        thread of the same process is kept out just like another process. The kernel drops the
        lock when its holder dies, even by kill -9."""
        fd = os.open(self.path / LOCK_NAME, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    yield False
                    return
                log.warning("waiting for another writer to finish with %s", self.path)
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def writer_role(self) -> WriterRole | None:
        """Take the writer role without waiting: a non-blocking flock on ``.writer.lock``, or None
        while another process (or another holder in this one) has it. The kernel drops it when the
        holder dies, even by kill -9, so a restart right after a crash gets it."""
        path = self.path / WRITER_ROLE_NAME
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:  # for messages only ("pid 1234 is the writer"); the lock is what counts
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass
        return WriterRole(fd, path)

    def tree_bytes(self) -> int:
        """Bytes of the files under the directory; a writer may rename or remove files during the walk."""
        total = 0
        for dirpath, _, filenames in os.walk(self.path):
            for name in filenames:
                try:
                    total += os.stat(os.path.join(dirpath, name)).st_size
                except OSError:
                    continue  # gone since it was listed
        return total
