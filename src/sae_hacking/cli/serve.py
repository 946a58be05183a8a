"""``sae-hacking serve`` (and the seed's ``prompt_server.py``): the prompt-highlighting server.

FastAPI, uvicorn and torch are imported only when the server starts, so ``--help`` and every
check of the flags answer without them.
"""

from __future__ import annotations

import argparse
import warnings

from sae_hacking.cli.configargs import Flags, OneLineParser, add_config_args, given
from sae_hacking.serve.config import ServeConfig

HELP = (
    "Serve prompt highlighting over HTTP: the model loads once; SAEs load on demand (SAELens "
    "release + id, or paths under --sae-dir) into a cache of --max-saes. POST "
    "/api/activations gives a prompt's tokens and their latent activations, GET / a web page "
    "to explore them, /docs the API."
)
METAVARS = {"sae_dir": "DIR", "sae": "RELEASE/ID", "host": "HOST"}
TITLES = {"": "server", "model": "model"}


def add_serve_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    flags = Flags()
    add_config_args(parser, ServeConfig, flags, titles=TITLES, metavars=METAVARS)
    parser.set_defaults(func=serve_command, flags=flags)
    return parser


def serve_command(args: argparse.Namespace) -> int:
    from sae_hacking.config import from_flat
    from sae_hacking.errors import SettingWarning

    config = from_flat(ServeConfig, given(args, ServeConfig))
    if not config.loopback:
        warnings.warn(
            f"`host` is {config.host}: other machines can reach this server, which has no "
            "authentication.",
            SettingWarning,
            stacklevel=1,
        )
    config.model.check_reachable()
    serve(config)
    return 0


def serve(config: ServeConfig) -> None:
    """Load the model and the preloaded SAEs, then answer requests until interrupted."""
    import uvicorn

    from sae_hacking.serve.app import create_app

    if not config.quiet:
        print(f"loading {config.model.name} ...", flush=True)
    app = create_app(config)
    host = f"[{config.host}]" if ":" in config.host else config.host
    print(f"serving on http://{host}:{config.port}/ (API docs at /docs)", flush=True)
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        log_level="warning" if config.quiet else "info",
        access_log=not config.quiet,
    )


def standalone_parser() -> argparse.ArgumentParser:
    return add_serve_args(OneLineParser(prog="prompt_server.py", description=HELP))


def register(subparsers) -> None:
    add_serve_args(
        subparsers.add_parser(
            "serve", help="prompt-highlighting server (HTTP API + web page)", description=HELP
        )
    )
