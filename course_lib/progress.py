"""A progress bar that draws as a widget in notebooks and as text in terminals and logs."""
from __future__ import annotations

import os

from tqdm.auto import tqdm


def progress_bar(iterable=None, *, disable: bool = False, **kwargs) -> tqdm:
    """``tqdm.auto`` with one switch: ``COURSE_PROGRESS=0`` hides every bar (for CI and stored outputs)."""
    hidden = disable or os.environ.get("COURSE_PROGRESS", "1") == "0"
    return tqdm(iterable, disable=hidden, dynamic_ncols=True, **kwargs)
