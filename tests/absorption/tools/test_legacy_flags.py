"""The README's command lines of the original analysis scripts parse into the settings they
mean (read from the README itself, so the two cannot drift), and each script's parser names the
script."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from sae_hacking.cli import tools
from sae_hacking.cli.commands import COMMANDS
from sae_hacking.cli.configargs import given
from sae_hacking.config import from_flat, to_flat

README = Path(__file__).resolve().parents[3] / "README.md"
SCRIPTS = {
    "gemma_graph.py": ("effect-network", tools.gemma_graph_parser),
    "graph_network.py": ("effect-network", tools.graph_network_parser),
    "find_4tuples.py": ("four-tuples", tools.find_4tuples_parser),
    "plot_effect_l0.py": ("effect-l0", tools.plot_effect_l0_parser),
    "gemma_cluster.py": ("cluster", tools.gemma_cluster_parser),
    "look_for_cosine_sim_pairs.py": ("decoder-pairs", tools.look_for_cosine_sim_pairs_parser),
}
EXPECTED = {  # what each README line must set
    "gemma_graph.py": {"n_edges": 1000, "reader_sae_neuronpedia_id": "gemma-2-2b/21-gemmascope-res-65k"},
    "find_4tuples.py": {"treat_as_zero": 0.01, "ablator_sae_neuronpedia_id": "gemma-2-2b/20-gemmascope-mlp-65k"},
    "plot_effect_l0.py": {"treat_as_zero": 0.01, "bins": 50, "exclude_over": 5000.0,
                          "output_path": "/results/effect_l0.png"},
    "gemma_cluster.py": {"abridge": 1000, "sae_release": "gemma-scope-2b-pt-res-canonical",
                         "sae_id": "layer_20/width_16k/canonical", "linkage": "average"},
    "look_for_cosine_sim_pairs.py": {"top_k": 1000, "cooccurrence_path": "/results/cooccurrences.safetensors",
                                     "sae_id": "layer_20/width_65k/canonical"},
}  # fmt: skip


def readme_lines() -> dict[str, list[str]]:
    lines = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("uv run src/sae_hacking/"):
            words = shlex.split(line)
            script = Path(words[2]).name
            if script in SCRIPTS:
                lines[script] = words[3:]
    return lines


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_the_readme_command_line_means_what_it_says(script):
    argv = readme_lines()[script]
    name, factory = SCRIPTS[script]
    parser = factory()
    assert parser.prog == script
    cls = COMMANDS[name].config
    flat = to_flat(from_flat(cls, given(parser.parse_args(argv), cls)))
    for key, value in EXPECTED[script].items():
        assert flat[key] == value, (key, flat[key])


def test_graph_network_takes_gemma_graphs_flags():
    argv = readme_lines()["gemma_graph.py"]
    cls = COMMANDS["effect-network"].config
    flat = [
        to_flat(from_flat(cls, given(factory().parse_args(argv), cls)))
        for factory in (tools.gemma_graph_parser, tools.graph_network_parser)
    ]
    assert flat[0] == flat[1]


def test_the_legacy_plot_script_names_its_own_flag_in_errors(capsys):
    from sae_hacking.cli import script_main

    argv = ["--input-path", "x", "--threshold", "-1"]
    assert script_main("sae_hacking.cli.tools", argv, factory="plot_effect_l0_parser") == 2
    assert capsys.readouterr().err.strip() == "error: --threshold must not be negative, got -1.0."
