import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from sae_hacking.errors import UsageError
from sae_hacking.saes import registry
from sae_hacking.saes.hierarchical import HierarchicalTopKSAE
from sae_hacking.saes.io import METADATA_KEY, load_sae_checkpoint, save_sae_checkpoint
from sae_hacking.saes.matryoshka import MatryoshkaBatchTopKSAE
from sae_hacking.saes.trainable import TrainableSAE


def test_the_registry_imports_without_torch():
    code = (
        "import sys; from sae_hacking.saes.registry import TRAINABLE; "
        "print(TRAINABLE, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    trainable = ("topk", "hierarchical", "matryoshka", "batchtopk", "jumprelu", "relu", "tiered")
    assert out.stdout.strip() == f"{trainable} False"


@pytest.mark.parametrize("arch", registry.ARCHITECTURES, ids=lambda a: a.name)
def test_each_entry_names_its_class_and_says_whether_it_trains(arch):
    cls = registry.architecture_class(arch.name)
    assert cls.architecture == arch.name
    assert issubclass(cls, TrainableSAE) == arch.trainable


def test_one_name_per_architecture_and_saelens_names_only_for_that_format():
    assert set(registry.TRAINABLE) == set(registry.NAMES)
    assert {a: registry.saelens_name(a) for a in ("relu", "jumprelu", "topk")} == {
        "relu": "standard",
        "jumprelu": "jumprelu",
        "topk": "topk",
    }
    # Reading SAELens folders: only the three architectures SAELens saves for inference.
    assert registry.FROM_SAELENS == {"topk": "topk", "jumprelu": "jumprelu", "standard": "relu"}
    # Writing: each architecture as its inference form, as SAELens saves its own.
    assert {a: registry.export_name(a) for a in registry.EXPORTABLE} == {
        "topk": "topk",
        "matryoshka": "jumprelu",
        "batchtopk": "jumprelu",
        "jumprelu": "jumprelu",
        "relu": "standard",
    }
    with pytest.raises(UsageError, match="hierarchical SAE has no SAELens format"):
        registry.export_name("hierarchical")
    assert registry.from_saelens("standard", "cfg.json").name == "relu"
    with pytest.raises(UsageError, match="'gated' is not supported"):
        registry.from_saelens("gated", "cfg.json")
    with pytest.raises(UsageError, match="no SAELens format"):
        registry.saelens_name("hierarchical")
    # SAELens's name and old checkpoint names are not ours.
    for name in ("standard", "hierarchical_topk", "matryoshka_batchtopk"):
        with pytest.raises(UsageError, match="unknown SAE architecture"):
            registry.get(name)


@pytest.mark.parametrize(
    "sae, old_name",
    [
        (HierarchicalTopKSAE(8, 4, 2), "hierarchical_topk"),
        (MatryoshkaBatchTopKSAE(8, [2, 6], 3), "matryoshka_batchtopk"),
    ],
)
def test_checkpoints_with_the_old_architecture_names_still_load(tmp_path, sae, old_name):
    path = save_sae_checkpoint(sae, tmp_path / "new.safetensors")
    meta = json.loads(_metadata(path))
    assert meta["config"]["architecture"] == sae.architecture
    meta["config"]["architecture"] = old_name
    old = tmp_path / "old.safetensors"
    save_file(load_file(str(path)), str(old), metadata={METADATA_KEY: json.dumps(meta)})
    loaded = load_sae_checkpoint(old)
    assert type(loaded) is type(sae) and loaded.architecture == sae.architecture
    for name, tensor in sae.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def _metadata(path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()[METADATA_KEY]
