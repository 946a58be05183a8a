"""Feature-absorption search on language models, a subpackage per stage: latent co-occurrence
counts (:mod:`~sae_hacking.absorption.cooccurrence`), selective ablation effects
(:mod:`~sae_hacking.absorption.ablation`), absorption candidates
(:mod:`~sae_hacking.absorption.pairs`) and their validation on planted absorption
(:mod:`~sae_hacking.absorption.planted`); the stages' settings are in
:mod:`~sae_hacking.absorption.configs`."""
