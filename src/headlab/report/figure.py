"""What ``.plot()`` returns: a :class:`matplotlib.figure.Figure` made without pyplot.

Figures built from ``matplotlib.figure.Figure`` directly never open a window, never join pyplot's list of
open figures (nothing leaks when a loop plots a thousand results) and never switch the user's backend.
A notebook shows such a figure only when it knows how: :class:`PlotFigure` adds ``_repr_png_``, so the last
expression of a cell (``res.plot()``) is drawn inline with or without ``%matplotlib inline``. Everything
else is a plain Figure: ``fig.axes``, ``fig.savefig(path)``, ``fig.set_size_inches(...)``.
"""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.figure import Figure


class PlotFigure(Figure):
    """A Figure that displays itself in a notebook (``_repr_png_``) and saves atomically (:meth:`save`)."""

    def png(self, dpi: float | None = None) -> bytes:
        """The figure as PNG bytes (tight bounding box)."""
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=dpi or self.dpi, bbox_inches="tight")
        return buf.getvalue()

    def _repr_png_(self) -> bytes:
        return self.png()

    def save(self, path, dpi: float = 110) -> Path:
        """Write the figure to ``path`` (format from the suffix: .png, .svg, .pdf) atomically; returns the path."""
        from ..io import atomic_write_bytes

        path = Path(path)
        fmt = path.suffix.lstrip(".").lower() or "png"
        buf = io.BytesIO()
        self.savefig(buf, format=fmt, dpi=dpi)
        return atomic_write_bytes(path, buf.getvalue())


def new_figure(width: float, height: float) -> PlotFigure:
    """An empty :class:`PlotFigure` of ``width`` x ``height`` inches with constrained layout."""
    return PlotFigure(figsize=(float(width), float(height)), layout="constrained")
