"""Stage 1, ``sae-hacking cooccurrences``: exact latent co-occurrence counts over a text stream.
``run.py`` (the command), ``identity.py`` (kind, results name; torch-free), ``accumulator.py``
(the counting accumulator and the results reader), ``kernels.py`` (counting kernels)."""
