"""What ``.show()`` returns: HTML that a notebook renders and code can still treat as a string."""

from __future__ import annotations


class HtmlView(str):
    """A self-contained HTML fragment. Jupyter renders it (``_repr_html_``); ``str(view)`` or the view itself
    is the HTML source (write it to a file, embed it, search it); ``repr`` stays short in a terminal."""

    def _repr_html_(self) -> str:
        return str(self)

    def __repr__(self) -> str:
        return f"<HtmlView: {len(self)} characters of HTML; display it in a notebook or write str(view) to a file>"

    def save(self, path) -> str:
        """Write the fragment as a standalone ``.html`` file (atomically); returns the path."""
        from ..io import atomic_write_text

        return str(atomic_write_text(path, str(self)))
