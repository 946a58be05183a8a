"""Stage 2, ``sae-hacking ablate``: selective ablation effects over a text stream. ``run.py``
(the command), ``identity.py`` (kind, results name, choices; torch-free), ``stream.py``
(accumulator, frequencies, merge), ``core.py`` (the ablation itself), ``effects.py`` (exact
effect sums), ``cost.py`` (the forward-pass cost model)."""
