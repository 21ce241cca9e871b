import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("RTS_SSL_SHARED_DATA",
                                  Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real development data beside the project (skip when a machine has none)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set RTS_SSL_SHARED_DATA)")
    return SHARED_DATA.resolve()


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> Path:
    """A tiny synthetic PlanetScope-like set (96 px scenes), generated once per session."""
    from rts_ssl.data.synthetic import ensure_synthetic

    return ensure_synthetic(tmp_path_factory.mktemp("synthetic") / "planet", "planet", 0, 96)
