import os
from pathlib import Path

import pytest

from fgm import random

ROOT = Path(__file__).resolve().parents[1]


def mnist_dir() -> Path:
    """Real MNIST: $FGM_DATA_DIR, else ../shared/data beside the repository (as in CI)."""
    return Path(os.environ.get("FGM_DATA_DIR") or ROOT.parent / "shared" / "data").resolve()


@pytest.fixture
def key():
    return random.key(0)


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    root = mnist_dir()
    if not (root / "MNIST" / "raw").exists():
        pytest.fail(f"real MNIST not found under {root}; set FGM_DATA_DIR")
    return root
