"""Language models: loading, hook points named as in SAELens / Gemma Scope, and running the
model between hook points. Built on forward hooks on the plain Hugging Face modules, so the
activations are exactly the ones the pretrained SAEs were trained on."""
