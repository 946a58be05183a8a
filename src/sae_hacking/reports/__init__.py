"""Reports: figures and self-contained HTML pages written into a run directory.

An interface layer: it reads a run's results (plain dicts, as written to JSON) and imports
nothing from the analyses. Heavy imports (matplotlib) happen inside the functions.
"""
