"""The analysis tools over ablate results and SAE decoders (and their legacy script paths):
``effect-network`` (``gemma_graph.py``, ``graph_network.py``), ``four-tuples``
(``find_4tuples.py``), ``effect-l0`` (``plot_effect_l0.py``), ``cluster`` (``gemma_cluster.py``)
and ``decoder-pairs`` (``look_for_cosine_sim_pairs.py``)."""

from __future__ import annotations

import argparse
import importlib

from sae_hacking.cli.commands import COMMANDS
from sae_hacking.cli.configargs import add_command_args, command_parser, given, script_parser

# command -> module of sae_hacking.absorption.tools whose run(config) does it
RUNNERS = {
    "effect-network": "network",
    "four-tuples": "tuples",
    "effect-l0": "effect_l0",
    "cluster": "cluster",
    "decoder-pairs": "decoder_pairs",
}


def _runner(name: str):
    def run_tool(args: argparse.Namespace) -> int:
        from sae_hacking.config import from_flat

        command = COMMANDS[name]
        config = from_flat(command.config, given(args, command.config))
        module = importlib.import_module(f"sae_hacking.absorption.tools.{RUNNERS[name]}")
        module.run(config)
        return 0

    return run_tool


def _script(name: str, script: str) -> argparse.ArgumentParser:
    command = COMMANDS[name]
    return add_command_args(script_parser(command, script), command, _runner(name))


def gemma_graph_parser() -> argparse.ArgumentParser:
    return _script("effect-network", "gemma_graph.py")


def graph_network_parser() -> argparse.ArgumentParser:
    return _script("effect-network", "graph_network.py")


def find_4tuples_parser() -> argparse.ArgumentParser:
    return _script("four-tuples", "find_4tuples.py")


def plot_effect_l0_parser() -> argparse.ArgumentParser:
    parser = _script("effect-l0", "plot_effect_l0.py")
    # The script's own spelling names the setting in its errors, as its users type it.
    parser.get_default("flags").flag_of["treat_as_zero"] = "--threshold"
    return parser


def gemma_cluster_parser() -> argparse.ArgumentParser:
    return _script("cluster", "gemma_cluster.py")


def look_for_cosine_sim_pairs_parser() -> argparse.ArgumentParser:
    return _script("decoder-pairs", "look_for_cosine_sim_pairs.py")


def register(subparsers) -> None:
    for name in RUNNERS:
        command = COMMANDS[name]
        add_command_args(command_parser(subparsers, command), command, _runner(name))
