"""The original repository's filter and conversion scripts: each says, in one line, which
command replaced it, and exits 2 without importing torch."""

import subprocess
import sys
from pathlib import Path

import pytest

from sae_hacking.cli.replaced import REPLACED

SRC = Path(__file__).resolve().parents[3] / "src" / "sae_hacking"
ARGS = {  # the original scripts' command lines
    "filter_results.py": ["--input-path", "a", "--output-path", "b", "--num-keys-to-keep", "3"],
    "filter_results2.py": ["--input-path", "a", "--output-path", "b", "--abridge", "3"],
    "convert_json_to_safetensors.py": ["in.json", "out.safetensors"],
    "print_cooccurrences.py": ["cooccurrences.safetensors", "1", "2"],
}
COMMANDS = {
    "filter_results.py": "--latents",
    "filter_results2.py": "--latents",
    "convert_json_to_safetensors.py": ".safetensors.zst",
    "print_cooccurrences.py": "sae-hacking cooccurrences-show",
}


@pytest.mark.parametrize("script", sorted(REPLACED))
def test_a_replaced_script_names_its_replacement_and_exits_2(script):
    probe = (
        "import runpy, sys; sys.argv = [sys.argv[1], *sys.argv[2:]]\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit as stop:\n"
        "    assert 'torch' not in sys.modules, 'imported torch'\n    raise\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(SRC / script), *ARGS[script]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {script} is replaced: "), lines
    assert COMMANDS[script] in lines[0]
