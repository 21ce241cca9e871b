"""Atomic writes, the temporaries of killed runs, and folders held by one run at a time."""

import logging
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest

from rts_ssl.files import (
    LOCK,
    exclusive,
    remove_stale_temporaries,
    temporary_path,
    write_atomic,
)


def test_temporaries_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    live = temporary_path(tmp_path / "scene_probability.tif", ".staging")
    assert live.name == f".scene_probability.tif.tmp-{os.getpid()}.staging.tif"
    dead = live.with_name(live.name.replace(str(os.getpid()), "999999999"))
    folder = tmp_path / ".model.tmp-999999999"  # an export folder
    for path in (live, dead):
        path.write_bytes(b"half")
    folder.mkdir()
    assert remove_stale_temporaries(tmp_path) == 2
    assert live.exists() and not dead.exists() and not folder.exists()


def test_a_failed_write_leaves_neither_target_nor_temporary(tmp_path):
    target = tmp_path / "result.json"

    def fails(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(target, fails)
    assert list(tmp_path.iterdir()) == []
    write_atomic(target, lambda tmp: tmp.write_text("{}"))
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


@contextmanager
def held_by_another_process(lock_file):
    """A live process holding ``lock_file`` (:func:`exclusive`) for the block. Sent a line
    (``holder.communicate("\\n")``) it ends and lets go; else it is killed after the block."""
    code = ("import sys; from pathlib import Path; from rts_ssl.files import exclusive\n"
            "with exclusive(Path(sys.argv[1])):\n"
            "    print('held', flush=True); sys.stdin.readline()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(lock_file)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        yield holder
    finally:
        holder.kill()
        holder.wait()
        holder.stdin.close()
        holder.stdout.close()


def logged_soon(caplog, text: str, seconds: float = 60) -> bool:
    """Whether ``text`` is logged (by another thread) within ``seconds``."""
    deadline = time.monotonic() + seconds
    while text not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    return text in caplog.text


def waits_for_another_process(lock_file, caplog, call, untouched):
    """``call()`` in a thread while another process holds ``lock_file``: asserts that it waits
    (says for which process, leaves ``untouched`` absent) and finishes once that process
    ends; returns what it returned."""
    returned = []
    thread = threading.Thread(target=lambda: returned.append(call()))
    with held_by_another_process(lock_file) as holder, \
            caplog.at_level(logging.INFO, logger="rts_ssl.files"):
        thread.start()
        assert logged_soon(caplog, f"waiting for process {holder.pid}")
        assert not untouched.exists()
    thread.join(120)  # the holder was killed: its lock went with it
    assert len(returned) == 1, "the waiting call failed or never ended"
    return returned[0]


def test_a_folder_is_held_by_one_run_and_a_killed_runs_lock_blocks_nothing(tmp_path):
    """A killed run cannot remove its lock file; a run that ends does."""
    lock = tmp_path / "cell" / LOCK
    with held_by_another_process(lock) as holder, exclusive(lock) as other:
        assert other == str(holder.pid)
    with exclusive(lock) as other:  # the holder was killed: its lock went with it
        assert other is None
        assert lock.read_text() == str(os.getpid())
        with exclusive(lock) as nested:  # a second open of the lock is another holder
            assert nested == str(os.getpid())
        assert lock.exists()  # not removed by one that did not hold it
    assert not lock.exists()  # its holder removed it when done
    with exclusive(lock) as other:
        assert other is None


def test_a_waiter_takes_the_lock_file_there_now_not_the_one_its_holder_removed(tmp_path,
                                                                              caplog):
    """Else a third run, finding no file, would make a new one and hold it at the same time."""
    lock = tmp_path / ".out.lock"
    seen = []

    def wait_then_hold():
        with exclusive(lock, wait=True) as other:
            seen.append((other, lock.read_text()))

    waiter = threading.Thread(target=wait_then_hold)
    with held_by_another_process(lock) as holder, \
            caplog.at_level(logging.INFO, logger="rts_ssl.files"):
        waiter.start()
        assert logged_soon(caplog, f"waiting for process {holder.pid}")
        holder.communicate("done\n", timeout=60)  # it ends, removing its file as it lets go
    waiter.join(60)
    assert seen == [(None, str(os.getpid()))] and not lock.exists()
