"""Writing so that nothing half-written is ever read: a temporary name beside the target,
renamed onto it when complete. Temporaries carry the writer's process id, so those of
killed runs are told from a concurrent run's and removed. A folder that two runs could
write at once (a curve's cell reached by two sweeps, a dataset that a pretraining and a
fine-tuning prepare together) is held by one at a time."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


def temporary_path(path: Path, tag: str = "") -> Path:
    """``.<name>.tmp-<pid><tag><suffix>`` beside ``path`` (the suffix kept: GDAL drivers
    and readers go by it)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}{tag}{path.suffix}")


def write_atomic(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see half a file."""
    tmp = temporary_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        if str(err.filename) != str(tmp):
            raise
        raise type(err)(err.errno, err.strerror, str(path)) from None  # name the target
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temporaries(folder: Path) -> int:
    """Remove the temporary files and folders (see :func:`temporary_path`) in ``folder``
    left by processes that no longer run (killed runs), and say so; returns how many.
    Those of live processes (a concurrent run) are kept."""
    removed = 0
    for path in folder.glob(".*.tmp-*") if folder.is_dir() else []:
        pid = re.match(r"\d+", path.name.rsplit(".tmp-", 1)[1])
        if pid is None or _alive(int(pid.group())):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed += 1
    if removed:
        log.info("%s: removed %d temporaries of interrupted runs", folder, removed)
    return removed


LOCK = ".lock"


def lock_beside(folder: Path) -> Path:
    """The lock file of a folder that a run may remove and make anew (a prepared dataset, a
    synthetic set): ``.<name>.lock`` beside it, where removing the folder leaves it."""
    return folder.with_name(f".{folder.name}{LOCK}")


@contextmanager
def exclusive(lock_file: Path, wait: bool = False) -> Iterator[str | None]:
    """Hold what ``lock_file`` stands for (a run's folder: ``folder/.lock``) for the block, by
    an advisory ``flock`` of it that records the holder's pid. Yields None when this process
    holds it, or, without waiting, the pid of the live process that does; ``wait``: first
    waits for that process (saying so), then holds it. The holder removes the file when done
    and the kernel drops a killed run's lock, so nothing a run leaves behind blocks the next."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    while True:
        with open(lock_file, "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.seek(0)
                holder = lock.read().strip() or "?"  # "?": the holder has not written its pid
                if not wait:
                    yield holder
                    return
                log.info("%s: waiting for process %s, which holds it", lock_file, holder)
                fcntl.flock(lock, fcntl.LOCK_EX)
            if not _is_current(lock, lock_file):
                continue  # the holder we waited for removed this file: lock the one there now
            lock.truncate(0)
            lock.write(str(os.getpid()))
            lock.flush()
            try:
                yield None
            finally:
                lock_file.unlink(missing_ok=True)  # while still held: a waiter takes the next
            return


def _is_current(lock, lock_file: Path) -> bool:
    """Whether the open ``lock`` is still the file at ``lock_file`` (not one removed since)."""
    try:
        return os.path.samestat(os.fstat(lock.fileno()), os.stat(lock_file))
    except FileNotFoundError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
