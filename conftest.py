"""Shared test setup: real data through COURSE_DATA, made absolute for notebook kernels."""
import os
from pathlib import Path

import pytest

if os.environ.get("COURSE_DATA"):
    # nbval starts each notebook's kernel in the notebook's folder: a relative path would break.
    os.environ["COURSE_DATA"] = str(Path(os.environ["COURSE_DATA"]).resolve())
os.environ.setdefault("COURSE_PROGRESS", "0")


@pytest.fixture
def course_data() -> Path:
    """The real-data folder (``$COURSE_DATA``); tests that need it skip with a reason without it."""
    if not os.environ.get("COURSE_DATA"):
        pytest.skip("COURSE_DATA is not set: real-data tests need COURSE_DATA=../shared/data")
    return Path(os.environ["COURSE_DATA"])
