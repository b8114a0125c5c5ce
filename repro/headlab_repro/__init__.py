"""headlab's claims harness: published results as regenerable artifacts.

The claims registry (command, size, rule, tolerance fixed in code), the provenance recorder and result writer
(``results/NAME/result.json``), ``--check`` comparison and the renderer of tables into README.md and docs/.
It lives beside the library in the repository (``repro/``), imports ``headlab`` and is never imported by it;
the ``headlab`` wheel holds none of it. Installed (``pip install -e repro``), it adds the command
``headlab reproduce --list | NAME [--out DIR] [--check] [--smoke] | --render`` (also ``python -m headlab_repro``).
"""
