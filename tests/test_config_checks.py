"""Declarative configs: bounds and Literal choices declared on the field and checked in one place
(direct construction too), the environment left to ``check_inputs()`` (a config naming files
that are not on this machine still rebuilds from its flat keys), and the command table."""

import dataclasses
import json
import typing

import pytest

from sae_hacking.absorption.configs import AblateConfig, PairsConfig
from sae_hacking.cli.commands import COMMANDS
from sae_hacking.cli.configargs import OneLineParser, add_command_args, given
from sae_hacking.config import Config, from_flat, leaf_map, leaves, to_flat
from sae_hacking.errors import FieldError
from sae_hacking.lm.source import ModelSource
from sae_hacking.serve.config import ServeConfig
from sae_hacking.toy.config import ARCHITECTURES, ToyConfig
from sae_hacking.train.config import TrainConfig


def _config_classes() -> list[type]:
    """Every Config subclass the commands use (importing the table imports them all)."""
    found, todo = [], [Config]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.append(sub)
            todo.append(sub)
    return found


def _outside(bounds: dict, tp: type):
    """A value just outside ``bounds``, of type ``tp`` (the tests' type checker wants it)."""
    step = 1 if tp is int else 0.5
    name, bound = next(iter(bounds.items()))
    value = {"gt": bound, "ge": bound - step, "lt": bound, "le": bound + step}[name]
    return tp(value)


def _bounded_fields(cls: type):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("bounds"):
            tp = next(
                a for a in (*typing.get_args(hints[f.name]), hints[f.name]) if a in (int, float)
            )
            yield f, tp


def test_every_declared_bound_refuses_on_direct_construction():
    checked = 0
    for cls in _config_classes():
        for f, tp in _bounded_fields(cls):
            bad = _outside(f.metadata["bounds"], tp)
            with pytest.raises(FieldError) as err:
                cls(**{f.name: bad})
            key = f.metadata.get("key") or f.name
            assert err.value.field == key and err.value.message.endswith(f", got {bad}."), (
                cls,
                f.name,
                err.value,
            )
            checked += 1
    assert checked >= 50  # every hand-written range check the configs had, and more


@pytest.mark.parametrize(
    "cls, values, key, message",
    [
        (ToyConfig, {"lr": -1.0}, "lr", "must be positive, got -1.0."),
        (ToyConfig, {"max_step": -1}, "max_step", "must not be negative, got -1."),
        (
            TrainConfig,
            {"lr_decay_fraction": 1.5},
            "lr_decay_fraction",
            "must be in [0, 1], got 1.5.",
        ),
        (ServeConfig, {"port": 0}, "port", "must be between 1 and 65535, got 0."),
        (
            AblateConfig,
            {"abridge_ablations_to": 0},
            "abridge_ablations_to",
            "must be at least 1, got 0.",
        ),
        (PairsConfig, {"cosine_sim_threshold": -1.5}, "cosine_sim_threshold", "must be in [-1, 1]"),
    ],
)
def test_bound_messages(cls, values, key, message):
    with pytest.raises(FieldError) as err:
        cls(**values)
    assert err.value.field == key and err.value.message.startswith(message)


def test_optional_bounded_settings_take_none():
    assert ToyConfig(k_aux=None).k_aux is None
    assert from_flat(TrainConfig, {"max_step": None, "k_aux": None}).max_step is None
    with pytest.raises(FieldError, match="must be positive, got 0"):
        from_flat(TrainConfig, {"k_aux": 0})


def _command_parser(name: str):
    return add_command_args(OneLineParser(prog=name), COMMANDS[name], lambda args: 0)


def test_choices_come_from_the_literal_annotation():
    checked = 0
    for command in COMMANDS.values():
        parser = _command_parser(command.name)
        actions = {action.dest: action for action in parser._actions}
        for leaf in leaves(command.config):
            if leaf.choices is None or leaf.key in command.skip:
                continue
            assert tuple(actions[leaf.key].choices) == leaf.choices  # argparse's choices
            with pytest.raises(FieldError) as err:
                from_flat(command.config, {leaf.key: "no-such-choice"})
            assert err.value.field == leaf.key
            assert err.value.message.endswith(f"expected one of {', '.join(leaf.choices)}.")
            checked += 1
    assert checked >= 8  # architecture (toy, train), init, lr_decay, normalize, dtype, method, ...
    assert ARCHITECTURES == leaf_map(ToyConfig)["architecture"].choices


def test_a_config_naming_files_of_another_machine_rebuilds_and_check_inputs_refuses(tmp_path):
    gone = tmp_path / "gone"
    train = from_flat(TrainConfig, {"model": str(gone / "model"), "activation_cache": str(gone)})
    # What run.json holds rebuilds as it is: no file is read on construction.
    assert from_flat(TrainConfig, json.loads(json.dumps(to_flat(train)))) == train
    with pytest.raises(FieldError) as err:
        train.check_inputs()
    assert err.value.field == "model" and "no such folder" in err.value.message

    ablate = from_flat(
        AblateConfig,
        {
            "model": str(gone / "model"),
            "reader_sae_release": str(gone / "reader.npz"),
            "dataset_id": str(gone / "prompts.txt"),
            "exclude_latent_threshold": 0.1,
            "frequencies_from": str(gone / "cooccurrences.json"),
        },
    )
    assert from_flat(AblateConfig, to_flat(ablate)) == ablate
    with pytest.raises(FieldError) as err:
        ablate.check_inputs()
    assert err.value.field == "model" and "no such folder" in err.value.message


def test_a_model_folder_is_not_parsed_on_construction(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "gpt2"}')
    (folder / "model.safetensors").write_bytes(b"\xff" * 16)  # a header that does not parse
    config = from_flat(TrainConfig, {"model": str(folder)})
    assert config.model.name == str(folder.resolve())  # normalised all the same
    with pytest.raises(FieldError) as err:
        config.check_inputs()
    assert err.value.field == "model"


@pytest.mark.parametrize(
    "flat, key, words",
    [
        ({"reader_sae_release": "./missing.npz"}, "reader_sae_release", "no such SAE"),
        ({"ablator_sae_release": "./missing.npz"}, "ablator_sae_release", "no such SAE"),
        ({"dataset_id": "/no/such/file.txt"}, "dataset_id", "no such file"),
        (
            {"frequencies_from": "missing.json", "exclude_latent_threshold": 0.1},
            "frequencies_from",
            "no such file",
        ),
    ],
)
def test_check_inputs_names_the_flat_key(monkeypatch, tmp_path, flat, key, words):
    monkeypatch.setattr(ModelSource, "check_inputs", lambda self: None)  # no hub here
    text = tmp_path / "prompts.txt"
    text.write_text("a prompt\n")
    # Constructs: the files are checked before a run.
    config = from_flat(AblateConfig, {"dataset_id": str(text), **flat})
    with pytest.raises(FieldError) as err:
        config.check_inputs()
    assert err.value.field == key and words in err.value.message


def test_pairs_and_serve_inputs_wait_for_check_inputs(tmp_path, monkeypatch):
    pairs = from_flat(
        PairsConfig, {"input_path": str(tmp_path / "a"), "cooccurrence_path": str(tmp_path)}
    )
    with pytest.raises(FieldError) as err:
        pairs.require_inputs()  # what absorption/pairs/run.py calls
    assert err.value.field == "input_path" and "no such file or folder" in err.value.message
    with pytest.raises(FieldError, match="is required"):
        PairsConfig().check_inputs()
    monkeypatch.setattr(ModelSource, "check_inputs", lambda self: None)  # no hub here
    serve = ServeConfig(sae_dir=(str(tmp_path / "none"),))
    with pytest.raises(FieldError) as err:
        serve.check_inputs()
    assert err.value.field == "sae_dir" and "no such directory" in err.value.message


# -- the command table ------------------------------------------------------------------------

# The legacy README's example command lines (train: the legacy scripts' own spellings).
LEGACY_EXAMPLES = [
    (
        "toy",
        "--lr 1e-4 --sae-hidden-dim 30 --dataset-num-features 30 --batch-size 100 --cuda "
        "--hierarchical --perturbation_size 0.4 --model-dim 50",
        {
            "lr": 1e-4,
            "sae_hidden_dim": 30,
            "dataset_num_features": 30,
            "batch_size": 100,
            "device": "cuda",
            "architecture": "hierarchical",
            "perturbation_size": 0.4,
            "model_dim": 50,
        },
    ),
    (
        "cooccurrences",
        "--max-tokens 100 --ablator-sae-release gemma-scope-2b-pt-mlp-canonical --n-prompts "
        "2000000 --save-frequency 30000 --dataset-id monology/pile-uncopyrighted --batch-size 5",
        {
            "max_tokens_in_prompt": 100,
            "ablator_sae_release": "gemma-scope-2b-pt-mlp-canonical",
            "n_prompts": 2000000,
            "save_frequency": 30000,
            "dataset_id": "monology/pile-uncopyrighted",
            "batch_size": 5,
        },
    ),
    (
        "ablate",
        "--abridge-ablations-to 100 --max-tokens 100 --ablator-sae-release "
        "gemma-scope-2b-pt-mlp-canonical --reader-sae-release gemma-scope-2b-pt-res-canonical "
        "--n-prompts 1000000 --save-frequency 10000 --dataset-id monology/pile-uncopyrighted "
        "--selected-features 3000 9000 15000 --batch-size 5",
        {
            "abridge_ablations_to": 100,
            "max_tokens_in_prompt": 100,
            "ablator_sae_release": "gemma-scope-2b-pt-mlp-canonical",
            "reader_sae_release": "gemma-scope-2b-pt-res-canonical",
            "n_prompts": 1000000,
            "save_frequency": 10000,
            "dataset_id": "monology/pile-uncopyrighted",
            "selected_features": [3000, 9000, 15000],
            "batch_size": 5,
        },
    ),
    (
        "pairs",
        "--input-path /results/ablations.safetensors.zst --ablator-sae-neuronpedia-id "
        "gemma-2-2b/20-gemmascope-mlp-65k --cosine-sim-threshold -0.2 --cooccurrence-path "
        "/results/cooccurrences.safetensors --skip-torch-sign --just-these 15000",
        {
            "input_path": "/results/ablations.safetensors.zst",
            "ablator_sae_neuronpedia_id": "gemma-2-2b/20-gemmascope-mlp-65k",
            "cosine_sim_threshold": -0.2,
            "cooccurrence_path": "/results/cooccurrences.safetensors",
            "compare": "raw",
            "just_these": [15000],
        },
    ),
    (
        "highlight",
        "--sae-release gemma-scope-2b-pt-mlp-canonical --sae-id layer_20/width_65k/canonical "
        "--prompt testing --output-dir /results/prompts --feature-idx 1000",
        {
            "sae_release": "gemma-scope-2b-pt-mlp-canonical",
            "sae_id": "layer_20/width_65k/canonical",
            "prompt": "testing",
            "output_dir": "/results/prompts",
            "feature_idx": 1000,
        },
    ),
    (
        "train",
        "--sae_hidden_dim 64 --max_step 3 --l1_coefficient 2 --only_count_tokens --abridge 7 "
        "--max-tokens 32 --hierarchical --cuda",
        {
            "sae_hidden_dim": 64,
            "max_step": 3,
            "l1_coefficient": 2.0,
            "only_count_tokens": True,
            "n_prompts": 7,
            "max_tokens_in_prompt": 32,
            "architecture": "hierarchical",
            "device": "cuda",
        },
    ),
]


@pytest.mark.parametrize(
    "name, argv, expected", LEGACY_EXAMPLES, ids=[e[0] for e in LEGACY_EXAMPLES]
)
def test_the_legacy_command_lines_parse_as_before(name, argv, expected):
    command = COMMANDS[name]
    values = given(_command_parser(name).parse_args(argv.split()), command.config)
    assert values == expected


def test_a_switch_and_a_flag_that_disagree_are_refused():
    args = _command_parser("toy").parse_args(["--cuda", "--device", "cpu"])
    with pytest.raises(FieldError) as err:
        given(args, ToyConfig)
    assert err.value.field == "device" and err.value.message == "cpu contradicts --cuda; give one."


def test_the_table_names_only_settings_its_config_has():
    for command in COMMANDS.values():
        keys = set(leaf_map(command.config))
        named = {*command.aliases, *command.skip, *command.help_overrides}
        assert named <= keys, (command.name, named - keys)
        for switch in command.switches:
            choices = leaf_map(command.config)[switch.key].choices
            assert choices is None or switch.value in choices, (command.name, switch)
