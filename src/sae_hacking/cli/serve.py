"""``sae-hacking serve`` (and the legacy ``prompt_server.py``): the prompt-highlighting server.

FastAPI, uvicorn and torch are imported only when the server starts, so ``--help`` and every
check of the flags answer without them.
"""

from __future__ import annotations

import argparse
import warnings

from sae_hacking.cli.commands import COMMANDS
from sae_hacking.cli.configargs import add_command_args, command_parser, given, script_parser
from sae_hacking.serve.config import WILDCARD_HOSTS, ServeConfig

COMMAND = COMMANDS["serve"]


def add_serve_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    return add_command_args(parser, COMMAND, serve_command)


def serve_command(args: argparse.Namespace) -> int:
    from sae_hacking.config import from_flat
    from sae_hacking.errors import SettingWarning

    config = from_flat(ServeConfig, given(args, ServeConfig))
    if not config.loopback:
        # Without names, other machines are refused by the Host check unless they use --host.
        names = ""
        if not config.allowed_hosts:
            wildcard = config.host in WILDCARD_HOSTS
            names = "; other machines must call it " + (
                "by a name given with `allowed_hosts`"
                if wildcard
                else f"{config.host} (or a name given with `allowed_hosts`)"
            )
        warnings.warn(
            f"`host` is {config.host}: other machines can reach this server, which has no "
            f"authentication{names}.",
            SettingWarning,
            stacklevel=1,
        )
    config.check_inputs()
    serve(config)
    return 0


def serve(config: ServeConfig) -> None:
    """Bind the port (a taken one is refused before the long model load), load the model and
    the preloaded SAEs, then answer requests until interrupted."""
    from sae_hacking.serve.http import bind_socket, run

    sock = bind_socket(config.host, config.port)
    try:
        from sae_hacking.serve.app import create_app

        if not config.quiet:
            print(f"loading {config.model.name} ...", flush=True)
        app = create_app(config)
        host = f"[{config.host}]" if ":" in config.host else config.host
        print(f"serving on http://{host}:{config.port}/ (API docs at /docs)", flush=True)
        run(app, sock, quiet=config.quiet)
    finally:
        sock.close()


def standalone_parser() -> argparse.ArgumentParser:
    return add_serve_args(script_parser(COMMAND, "prompt_server.py"))


def register(subparsers) -> None:
    add_serve_args(command_parser(subparsers, COMMAND))
