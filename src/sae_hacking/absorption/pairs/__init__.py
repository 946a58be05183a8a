"""Stage 3, ``sae-hacking pairs``: absorption candidates from an ``ablate`` and a
``cooccurrences`` run. ``run.py`` (the command, outputs), ``identity.py`` (kind, outputs;
torch-free), ``inputs.py`` (results files, checks, lookups), ``search.py`` (blocked all-pairs)."""
