"""The absorption testbed: a tiny LM whose features are known (:mod:`.world`), SAEs trained on it,
and the absorption search scored against that ground truth (issue 19)."""
