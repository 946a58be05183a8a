"""The tiered SAE's training settings, checked the same way by every trainer's config (torch-free,
so a bad flag is refused before torch loads)."""

from __future__ import annotations

from sae_hacking.errors import FieldError

# Defaults of the settings only the tiered SAE takes (the config fields of the same names).
TIERED_DEFAULTS = {"children_per_parent": 2, "child_k": None, "nested_weight": 0.1}
HELP = {
    "children_per_parent": "C: child latents per parent latent of the tiered SAE",
    "child_k": "tiered SAE: child latents per input on average (default: as many as parents)",
    "nested_weight": "tiered SAE: weight of the parents-alone reconstruction error in the loss",
}


def check_tiered_settings(config, k: int, n_parents: int) -> None:
    """Tiered-SAE settings given to another architecture are refused; for the tiered SAE, ``child_k``
    (or ``k``) must fit among its ``children_per_parent × n_parents`` children."""
    if config.architecture != "tiered":
        for key, default in TIERED_DEFAULTS.items():
            if getattr(config, key) != default:
                raise FieldError(key, "only applies to the tiered SAE (`architecture` tiered).")
        return
    children = config.children_per_parent * n_parents
    if (config.child_k or k) > children:
        raise FieldError(
            "child_k",
            f"({config.child_k or k}) must be at most the tiered SAE's children, "
            f"`children_per_parent` x `sae_hidden_dim` = {children}.",
        )
