"""The configs that used to write their range checks by hand (``validate-absorption``'s and the
highlight client's) declare them on the field; a bound's ``why`` reaches the message; the
declared checks live in a module of their own that imports nothing of the package but errors."""

import ast
import dataclasses
from pathlib import Path

import pytest

from sae_hacking.absorption.planted.run import ValidateConfig
from sae_hacking.config import Config, from_flat, setting
from sae_hacking.errors import FieldError
from sae_hacking.serve.client import HighlightConfig


@pytest.mark.parametrize(
    "cls, values, key, message",
    [
        (ValidateConfig, {"n_prompts": 0}, "n_prompts", "must be positive, got 0."),
        (ValidateConfig, {"d_sae": -1}, "d_sae", "must be positive, got -1."),
        (ValidateConfig, {"reader_d_sae": 0}, "reader_d_sae", "must be positive, got 0."),
        (ValidateConfig, {"n_planted": 0}, "n_planted", "must be positive, got 0."),
        (ValidateConfig, {"n_controls": -1}, "n_controls", "must not be negative, got -1."),
        (
            ValidateConfig,
            {"max_tokens_in_prompt": 1},
            "max_tokens_in_prompt",
            "must be at least 2 (BOS + a token), got 1.",
        ),
        (
            ValidateConfig,
            {"min_decoder_cosine": 1.0},
            "min_decoder_cosine",
            "must be in (0, 1), got 1.0.",
        ),
        (
            HighlightConfig,
            {"server_port": 65536},
            "server_port",
            "must be between 1 and 65535, got 65536.",
        ),
        (HighlightConfig, {"timeout": 0.0}, "timeout", "must be positive, got 0.0."),
        (
            HighlightConfig,
            {"timeout": float("nan")},
            "timeout",
            "must be a finite number, got nan.",
        ),
        (HighlightConfig, {"top_k": 0}, "top_k", "must be positive, got 0."),
    ],
)
def test_declared_bounds_refuse_on_construction_and_from_flat(cls, values, key, message):
    for build in (lambda: cls(**values), lambda: from_flat(cls, values)):
        with pytest.raises(FieldError) as err:
            build()
        assert (err.value.field, err.value.message) == (key, message)


def test_the_hand_written_checks_are_now_declarations():
    assert issubclass(ValidateConfig, Config) and issubclass(HighlightConfig, Config)
    for cls, keys in [
        (ValidateConfig, {"n_prompts", "d_sae", "reader_d_sae", "n_planted", "n_controls"}),
        (ValidateConfig, {"max_tokens_in_prompt", "min_decoder_cosine"}),
        (HighlightConfig, {"server_port", "timeout"}),
    ]:
        declared = {f.name for f in dataclasses.fields(cls) if f.metadata.get("bounds")}
        assert keys <= declared, (cls, keys - declared)


def test_the_presets_still_fill_unset_sizes_and_accept_the_edges():
    quick = ValidateConfig(quick=True, n_controls=0, max_tokens_in_prompt=2)
    assert (quick.n_prompts, quick.d_sae, quick.reader_d_sae) == (150, 40, 128)
    assert HighlightConfig(server_port=1, timeout=0.5).server_port == 1
    assert HighlightConfig(server_port=65535).server_port == 65535


def test_a_why_without_a_bound_is_a_mistake_in_the_declaration():
    with pytest.raises(ValueError, match="why explains a bound"):
        setting(1, help="x", why="no bound to explain")


def test_the_checks_module_imports_nothing_of_the_package_but_errors():
    import sae_hacking.config_checks as checks

    tree = ast.parse(Path(checks.__file__).read_text(encoding="utf-8"))
    imported = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sae_hacking")
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name.startswith("sae_hacking")
    }
    assert imported == {"sae_hacking.errors"}
