"""Progress bars on stderr for long calls (tqdm, an optional extra: ``pip install 'cumel[progress]'``).

``progress=`` takes ``False`` (default: silent), ``True`` (a bar from the start), ``"auto"`` (a bar
only once the call has run for :data:`AUTO_DELAY` seconds, so short calls stay silent), or a
callable ``f(n)`` that is told each time ``n`` more units are done (from worker threads: it must
be thread-safe, as ``tqdm.update`` is).
"""
from __future__ import annotations

import contextlib
import warnings

__all__ = ["check_progress", "bar"]

AUTO_DELAY = 2.0      # seconds before an "auto" bar appears


def check_progress(progress, name="progress"):
    """``progress`` as given, if it is one of the accepted values; else a ValueError."""
    if progress is None or isinstance(progress, bool) or progress == "auto" or callable(progress):
        return False if progress is None else progress
    raise ValueError(f"{name} must be True, False, 'auto' or a callable, got {progress!r}")


@contextlib.contextmanager
def bar(progress, total, unit, desc):
    """A context giving the callback ``update(n)`` for ``progress`` (None when there is none).

    Parameters
    ----------
    progress : bool, "auto" or callable
        Checked by :func:`check_progress`.
    total : int
        Units of the whole call (frames, iterations).
    unit, desc : str
        tqdm's unit and description.
    """
    if callable(progress) and not isinstance(progress, bool):
        yield progress
        return
    if not progress:
        yield None
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:
        if progress is True:
            warnings.warn("progress=True needs tqdm (pip install 'cumel[progress]'); no bar shown",
                          RuntimeWarning, stacklevel=4)
        yield None
        return
    delay = AUTO_DELAY if progress == "auto" else 0.0
    with tqdm(total=total, unit=unit, unit_scale=True, desc=desc, delay=delay, leave=False,
              dynamic_ncols=True) as b:
        yield b.update
