"""Atomic writes and the temporaries of killed runs."""

import os

import pytest

from rts_ssl.files import remove_stale_temporaries, temporary_path, write_atomic


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
