"""Folding a trainer's input normalisation into an SAE, and exporting trained SAEs: SAELens
folders that SAELens and our loader read back with the same encodings, and our checkpoints."""

import copy
import json

import pytest
import torch

from sae_hacking.errors import UsageError
from sae_hacking.saes.base import SAEInfo
from sae_hacking.saes.batchtopk import BatchTopKSAE
from sae_hacking.saes.fold import fold_input_affine
from sae_hacking.saes.formats import inference_form, save_saelens_folder
from sae_hacking.saes.hierarchical import HierarchicalTopKSAE
from sae_hacking.saes.io import load_sae_checkpoint, save_sae_checkpoint
from sae_hacking.saes.jumprelu import JumpReLUSAE
from sae_hacking.saes.matryoshka import MatryoshkaBatchTopKSAE
from sae_hacking.saes.releases import load_sae
from sae_hacking.saes.relu import ReLUSAE
from sae_hacking.saes.topk import TopKSAE

M, E = 12, 24
HOOK = "blocks.1.hook_resid_post"


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


BUILDERS = {
    "relu": lambda b: ReLUSAE(M, E, apply_b_dec_to_input=b, gen=gen(1)),
    "jumprelu": lambda b: JumpReLUSAE(M, E, apply_b_dec_to_input=b, gen=gen(1)),
    "topk": lambda b: TopKSAE(M, E, k=4, gen=gen(1)),
    "batchtopk": lambda b: BatchTopKSAE(M, E, k=4, gen=gen(1)),
    "matryoshka": lambda b: MatryoshkaBatchTopKSAE(M, [8, 16], k=4, gen=gen(1)),
    "hierarchical": lambda b: HierarchicalTopKSAE(M, 8, k=3, gen=gen(1)),
}
# (architecture, apply_b_dec_to_input): both settings where the architecture has the option.
CASES = [
    (name, b)
    for name in BUILDERS
    for b in ((False, True) if name in ("relu", "jumprelu") else (True,))
]


def build(name, apply_b_dec_to_input=True, info=None):
    sae = BUILDERS[name](apply_b_dec_to_input)
    if info is not None:
        sae.info = info
    return sae


def randomised(sae, threshold=0.2):
    """Every parameter N(0, 0.3^2) (JumpReLU thresholds non-negative); BatchTopK/Matryoshka
    get an inference threshold, so their codes do not depend on the batch."""
    g = gen(2)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        if hasattr(sae, "threshold_E"):
            sae.threshold_E.abs_()
        if hasattr(sae, "threshold"):
            sae.threshold.fill_(threshold)
        if hasattr(sae, "child_ratio_H"):
            sae.child_ratio_H.copy_(0.5 + torch.rand(sae.child_ratio_H.shape, generator=g))
    return sae


def trained(sae, steps=5):
    """A few Adam steps on random data, so BatchTopK/Matryoshka thresholds are set."""
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    for step in range(steps):
        out = sae.train_forward(torch.randn(64, M, generator=gen(10 + step)))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        sae.after_step(out)
    return sae


@pytest.mark.parametrize("name, apply_b_dec_to_input", CASES)
@pytest.mark.parametrize("shift_kind", ["vector", "scalar"])
def test_folding_an_input_affine_map_into_the_weights(name, apply_b_dec_to_input, shift_kind):
    sae = randomised(build(name, apply_b_dec_to_input).double())
    folded = copy.deepcopy(sae)
    params = {n: p for n, p in folded.named_parameters()}
    buffers = {n: b.clone() for n, b in folded.named_buffers()}
    shift = (
        torch.randn(M, generator=gen(3), dtype=torch.float64) if shift_kind == "vector" else -0.8
    )
    scale = 3.7
    assert fold_input_affine(folded, shift, scale) is folded
    x = 2 * torch.randn(50, M, generator=gen(4), dtype=torch.float64) + 1
    with torch.no_grad():
        want = sae.encode((x - shift) * scale)
        torch.testing.assert_close(folded.encode(x), want)
        assert (want != 0).any() and (want == 0).any()
        torch.testing.assert_close(folded.decode(want), sae.decode(want) / scale + shift)
    # In place: the optimiser's parameters are still the module's; buffers untouched.
    assert all(p is params[n] for n, p in folded.named_parameters())
    for n, b in folded.named_buffers():
        assert torch.equal(b, buffers[n]), n
    if hasattr(sae, "threshold_E"):
        assert torch.equal(folded.threshold_E, sae.threshold_E)


def test_fold_refuses_a_non_positive_scale():
    with pytest.raises(UsageError, match="positive scale"):
        fold_input_affine(build("topk"), 0.0, 0.0)


@pytest.mark.parametrize("name", ["batchtopk", "matryoshka"])
def test_the_inference_form_of_a_batchtopk_sae_is_jumprelu_with_its_threshold(name):
    sae = trained(build(name))
    form = inference_form(sae)
    assert isinstance(form, JumpReLUSAE) and form.apply_b_dec_to_input
    assert torch.equal(form.threshold_E, torch.full((sae.d_sae,), float(sae.threshold)))
    x = 3 * torch.randn(40, M, generator=gen(5))
    with torch.no_grad():
        torch.testing.assert_close(form.encode(x), sae.encode(x))
    with pytest.raises(UsageError, match="never trained"):
        inference_form(build(name))
    assert inference_form(build("relu")) is not None


def test_a_hierarchical_sae_has_no_saelens_folder(tmp_path):
    with pytest.raises(UsageError, match="hierarchical SAE has no SAELens format") as err:
        save_saelens_folder(build("hierarchical"), tmp_path / "sae")
    assert str(err.value).count(". ") == 0 and not (tmp_path / "sae").exists()


EXPORTED = ["topk", "relu", "jumprelu", "batchtopk", "matryoshka"]


def exported(name, folder, fold=False):
    sae = trained(build(name, info=SAEInfo(hook_name=HOOK)))
    if fold:
        fold_input_affine(sae, torch.randn(M, generator=gen(6)), 0.4)
    sae.requires_grad_(False)
    return sae, save_saelens_folder(sae, folder, model_name="tiny-model")


@pytest.mark.parametrize("fold", [False, True], ids=["plain", "folded"])
@pytest.mark.parametrize("name", EXPORTED)
def test_our_loader_reads_an_exported_sae_with_the_same_encodings(tmp_path, name, fold):
    sae, folder = exported(name, tmp_path / "sae", fold)
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["metadata"]["hook_name"] == HOOK
    assert cfg["metadata"]["model_name"] == "tiny-model"
    assert cfg["metadata"]["neuronpedia_id"] is None
    assert cfg["architecture"] == {"topk": "topk", "relu": "standard"}.get(name, "jumprelu")
    loaded = load_sae(str(folder))
    assert loaded.hook_name == HOOK
    x = 3 * torch.randn(32, M, generator=gen(7))
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x), sae.encode(x), atol=1e-5, rtol=1e-5)
        acts = sae.encode(x)
        torch.testing.assert_close(loaded.decode(acts), sae.decode(acts), atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # imports sae-lens (seconds)
@pytest.mark.parametrize("name", EXPORTED)
def test_saelens_reads_an_exported_sae_with_the_same_encodings(tmp_path, name):
    sae_lens = pytest.importorskip("sae_lens")
    sae, folder = exported(name, tmp_path / "sae", fold=True)
    theirs = sae_lens.SAE.load_from_disk(str(folder))
    assert theirs.cfg.metadata.hook_name == HOOK
    assert theirs.cfg.metadata.model_name == "tiny-model"
    x = 3 * torch.randn(32, M, generator=gen(7))
    with torch.no_grad():
        acts = sae.encode(x)
        assert (acts != 0).any()
        torch.testing.assert_close(theirs.encode(x), acts, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(theirs.decode(acts), sae.decode(acts), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["relu", "jumprelu", "batchtopk"])
def test_checkpoints_of_the_new_trainable_architectures_round_trip(tmp_path, name):
    sae = trained(build(name, info=SAEInfo(hook_name=HOOK)))
    path = save_sae_checkpoint(sae, tmp_path / "sae.safetensors")
    loaded = load_sae_checkpoint(path)
    assert type(loaded) is type(sae) and loaded.config() == sae.config()
    for key, tensor in sae.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key
    x = torch.randn(16, M, generator=gen(8))
    with torch.no_grad():
        assert torch.equal(loaded.encode(x), sae.encode(x))
    assert load_sae(str(path)).hook_name == HOOK
