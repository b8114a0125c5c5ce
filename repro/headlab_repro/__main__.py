"""``python -m headlab_repro``: ``headlab reproduce`` without the headlab CLI."""

from .cli import main

main()
