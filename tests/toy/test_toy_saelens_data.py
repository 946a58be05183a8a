"""`toy --data saelens`: the toy trainer on SAELens's synthetic hierarchies, exactly resumable,
scored by SAELens's own evaluation beside ours."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from sae_hacking.data.synthetic_config import SyntheticDataConfig
from sae_hacking.errors import FieldError
from sae_hacking.runs.options import RunDirOptions
from sae_hacking.toy.config import ToyConfig

SYNTHETIC = SyntheticDataConfig(n_roots=6, model_dim=16, orthogonalization_steps=20)
SMALL = dict(
    data="saelens",
    synthetic=SYNTHETIC,
    sae_hidden_dim=6,
    sae_k=2,
    batch_size=32,
    eval_every=40,
    checkpoint_every=40,
    resample_every=40,
    dead_steps=10,
    val_size=400,
    lr=3e-3,
    device="cpu",
)


def test_the_toy_data_settings_are_refused_with_saelens_data():
    with pytest.raises(FieldError, match="model_dim.*synthetic_model_dim"):
        ToyConfig(data="saelens", model_dim=64)
    with pytest.raises(FieldError, match="handcode_sae.*toy"):
        ToyConfig(data="saelens", architecture="hierarchical", handcode_sae=True)
    assert ToyConfig(data="saelens").input_dim == SyntheticDataConfig().model_dim


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["topk", "hierarchical"])
def test_a_saelens_run_reports_their_evals_and_resumes_exactly(tmp_path, architecture):
    from sae_hacking.toy.experiment import run

    config = ToyConfig(architecture=architecture, max_step=120, **SMALL)
    straight_dir, final = run(replace(config, run=RunDirOptions(str(tmp_path / "a"), quiet=True)))
    for key in ("saelens_mcc", "saelens_uniqueness", "saelens_f1_score", "absorption_rate"):
        assert 0 <= final[key] <= 1, key
    assert final["explained_variance"] > 0.3
    assert (straight_dir / "decoder_vs_feature_sorted.png").is_file()
    assert json.loads((straight_dir / "metrics.json").read_text())["step"] == 120

    stopped = replace(config, max_step=80, run=RunDirOptions(str(tmp_path / "b"), quiet=True))
    run(stopped)
    again = replace(config, run=RunDirOptions(resume=str(tmp_path / "b"), quiet=True))
    resumed_dir, resumed = run(again)
    a = torch.load(straight_dir / "checkpoint.trainer.pt", weights_only=True)
    b = torch.load(resumed_dir / "checkpoint.trainer.pt", weights_only=True)
    for bank in a["since_fired"]:
        assert torch.equal(a["since_fired"][bank], b["since_fired"][bank])
    from safetensors.torch import load_file

    for name, tensor in load_file(straight_dir / "sae.safetensors").items():
        assert torch.equal(load_file(resumed_dir / "sae.safetensors")[name], tensor), name
    assert resumed["saelens_mcc"] == final["saelens_mcc"]
