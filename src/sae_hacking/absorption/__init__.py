"""Feature-absorption search on language models: latent co-occurrences (and, later, selective ablation and pair finding)."""
