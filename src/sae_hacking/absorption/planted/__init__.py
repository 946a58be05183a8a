"""``sae-hacking validate-absorption`` and ``demo``: SAEs with planted absorption
(``saes.py``) run through the three stages and evaluated (``run.py``)."""
