"""A progress bar that draws as a widget in notebooks and as text in terminals and logs."""
from __future__ import annotations

import contextlib
import functools
import os
from typing import Iterator

from tqdm.auto import tqdm


def bars_hidden() -> bool:
    """``COURSE_PROGRESS=0`` hides every progress bar (for CI and stored outputs)."""
    return os.environ.get("COURSE_PROGRESS", "1") == "0"


def progress_bar(iterable=None, *, disable: bool = False, **kwargs) -> tqdm:
    """``tqdm.auto`` with one switch: ``COURSE_PROGRESS=0`` hides every bar."""
    return tqdm(iterable, disable=disable or bars_hidden(), dynamic_ncols=True, **kwargs)


def hide_library_bars_if_asked() -> None:
    """Under ``COURSE_PROGRESS=0``, also hide the bars ``transformers`` draws ("Loading weights")."""
    if bars_hidden():
        from transformers.utils import logging as transformers_logging
        transformers_logging.disable_progress_bar()


@contextlib.contextmanager
def gguf_bar_hidden_if_asked() -> Iterator[None]:
    """Under ``COURSE_PROGRESS=0``, hide the bar of transformers' GGUF loader too ("Converting and de-quantizing
    GGUF tensors"): it calls ``tqdm`` itself and ignores :func:`hide_library_bars_if_asked`."""
    if not bars_hidden():
        yield
        return
    from transformers import modeling_gguf_pytorch_utils as gguf_loader
    shown = gguf_loader.tqdm
    gguf_loader.tqdm = functools.partial(shown, disable=True)
    try:
        yield
    finally:
        gguf_loader.tqdm = shown
