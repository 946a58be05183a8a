"""Feature-absorption search on language models: latent co-occurrence counts
(:mod:`~sae_hacking.absorption.cooccurrence_run`) and selective ablation effects
(:mod:`~sae_hacking.absorption.ablation_run`), with their settings in
:mod:`~sae_hacking.absorption.configs`."""
