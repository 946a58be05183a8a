"""Comparing the latent evidence of two results: bit for bit where the two runs computed every
activation the same way (same batches, or one prompt per batch), else up to float noise."""

from __future__ import annotations

import torch

from sae_hacking.absorption.evidence.collect import is_evidence

TOL = 1e-4  # activations of the same token computed in differently shaped batches


def evidence_keys(tensors: dict) -> list[str]:
    return [k for k in tensors if is_evidence(k) or k.startswith("logit_lens_")]


def assert_same_evidence(a: dict, b: dict, exact: bool = True) -> None:
    keys = evidence_keys(a)
    assert keys and keys == evidence_keys(b)
    if exact:
        for key in keys:
            assert torch.equal(a[key], b[key]), key
        return
    # The sample is chosen by the examples' identity only: the same examples, values up to noise.
    for key in keys:
        if key.startswith("sample_") and "acts" not in key and "values" not in key:
            assert torch.equal(a[key], b[key]), key
    assert torch.allclose(a["sample_values_eQ"], b["sample_values_eQ"], atol=TOL)
    # Top examples: the same values up to noise; an example may differ only in a near tie.
    va, vb = a["top_values_eX"], b["top_values_eX"]
    assert torch.equal(torch.isinf(va), torch.isinf(vb))
    assert torch.allclose(va[torch.isfinite(va)], vb[torch.isfinite(vb)], atol=TOL)
    for i in range(va.shape[0]):
        mine = {
            (p, s): v
            for p, s, v in zip(
                b["top_prompts_eX"][i].tolist(),
                b["top_positions_eX"][i].tolist(),
                vb[i].tolist(),
                strict=True,
            )
        }
        for slot in range(va.shape[1]):
            value = float(va[i, slot])
            if value == -torch.inf:
                continue
            example = (int(a["top_prompts_eX"][i, slot]), int(a["top_positions_eX"][i, slot]))
            near_tie = ((va[i] - value).abs() < TOL).sum() > 1 or abs(
                value - float(vb[i, -1])
            ) < TOL
            assert example in mine or near_tie, (i, slot, example)
    ha, hb = a["histogram_eJ"], b["histogram_eJ"]
    assert torch.equal(ha.sum(1), hb.sum(1))  # a value on a bin edge may move one bin
    assert int((ha != hb).sum()) <= max(2, ha.numel() // 100)
    for key in keys:
        if key.startswith("logit_lens_"):
            assert torch.equal(a[key], b[key]), key
