"""Latent evidence: what each latent fires on (top and sampled contexts, a histogram), collected
in the co-occurrence pass or by ``sae-hacking latents``, and the logit lens from the weights."""
