"""pagerace's benchmarks: ``python -m bench [--quick] [--json FILE] [--only NAME]``.

Each module measures one group of figures from issue 7 and returns a list of
:class:`bench._machine.Figure`; ``bench/__main__.py`` runs them, prints the table,
compares with the targets and writes the JSON. ``docs/PERFORMANCE.md`` holds a full run.
"""
