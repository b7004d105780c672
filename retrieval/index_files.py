"""Crash-safe file handling for index directories (BM25 segments, FAISS): atomic writes, fsync, locks, clean-up.

Every durable change is "write elsewhere, fsync, rename over": a reader or a restarted process
sees either the old file or the new one, never a mix. Partial files carry a leading dot and a
``.tmp`` suffix (or a ``.tmp-`` prefix for directories) so that clean-up can recognise them.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


def fsync_dir(path: Path) -> None:
    """fsync a directory (or a file): makes renames and new files in it durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """fsync every file of a (flat) directory, then the directory itself."""
    for p in path.iterdir():
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fsync_dir(path)


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Replace ``path`` with what ``write`` puts in a file object, all or nothing."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        remove_path(tmp)
        raise
    fsync_dir(path.parent)


def file_stamp(path: Path) -> tuple[int, int, int]:
    """Identity of a file's current version (a rename-over gives a new inode)."""
    st = os.stat(path)
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def is_partial(name: str) -> bool:
    return name.startswith(".tmp-") or (name.startswith(".") and name.endswith(".tmp"))


def remove_unreferenced(directory: Path, prefixes: tuple[str, ...], keep: Iterable[str]) -> list[str]:
    """Delete partial files and entries starting with ``prefixes`` that are not in ``keep``."""
    keep = set(keep)
    removed = []
    for p in directory.iterdir():
        if is_partial(p.name) or (p.name.startswith(prefixes) and p.name not in keep):
            remove_path(p)
            removed.append(p.name)
    return removed


@contextmanager
def dir_lock(directory: Path, exclusive: bool, wait: bool = True) -> Iterator[bool]:
    """flock on ``directory/.lock``; yields False when ``wait`` is off and the lock is taken.

    Writers take it shared (several threads and one writing process may write new files at once);
    clean-up takes it exclusive, so it never deletes a file some writer has not yet named in the
    manifest. Each call opens its own descriptor, so threads of one process exclude each other too.
    """
    fd = os.open(directory / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB)
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)
