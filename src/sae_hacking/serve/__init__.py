"""Prompt highlighting over HTTP: ``sae-hacking serve`` keeps a model loaded and answers, per
prompt, how strongly SAE latents fire on each token (:mod:`sae_hacking.serve.app`), with a web
page (``assets/``) and a client (``sae-hacking highlight``). Importing this package imports
neither torch nor FastAPI."""
