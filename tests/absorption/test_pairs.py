"""The pair finder: blocked all-pairs equals the legacy per-row loop (the reference), with ties,
filters, focus latents, a first-latent limit, a bounded number of kept pairs and histograms."""

import pytest
import torch

from sae_hacking.absorption.pairs.search import PairFilter, comparable_rows, find_pairs
from tests.oracles import find_pairs_reference

D, E, LATENTS = 40, 30, 200


def problem(seed: int, sign: bool):
    gen = torch.Generator().manual_seed(seed)
    effects = torch.randn(D, E, generator=gen)
    effects[torch.rand(D, E, generator=gen) < 0.5] = 0.0  # many ties among sign vectors
    effects[3] = 0.0  # a latent without any effect: cosine 0 with everything
    effects[7] = effects[11]  # identical rows: cosine 1
    latents = torch.randperm(LATENTS, generator=gen)[:D].sort().values
    counts = torch.randint(0, 4, (LATENTS, LATENTS), generator=gen)
    counts = torch.maximum(counts, counts.T)  # symmetric, many zeros
    activations = torch.randint(1, 60, (D,), generator=gen)
    rows, norms = comparable_rows(effects, sign)
    return latents, rows, norms, activations, lambda a, b: counts[a, b]


def assert_same(found, reference, exact=True):
    """Sign mode is bit-exact (integer dot products); raw effects agree to float rounding."""
    assert found.n_passing == reference.n_passing
    assert found.histogram_counts == reference.histogram_counts
    for name in ("first_K", "second_K", "cooccurrence_K"):
        assert torch.equal(getattr(found, name), getattr(reference, name)), name
    if exact:
        assert torch.equal(found.cosine_K, reference.cosine_K)
    else:
        assert torch.allclose(found.cosine_K, reference.cosine_K, atol=1e-6)
    assert torch.allclose(found.expected_K, reference.expected_K)


@pytest.mark.parametrize("sign", [True, False])
@pytest.mark.parametrize(
    "rules",
    [
        PairFilter(threshold=0.0, max_cooccurrence=0, block_size=7),
        PairFilter(threshold=-0.2, max_cooccurrence=1, max_pairs=25, block_size=16),
        PairFilter(threshold=-1.0, max_cooccurrence=3, block_size=64),  # every pair
        PairFilter(threshold=0.1, max_cooccurrence=2, min_expected=5.0, block_size=5),
        PairFilter(threshold=-0.3, max_cooccurrence=0, max_share=0.05, block_size=11),
    ],
)
def test_blocked_pairs_equal_the_per_row_loop(sign, rules):
    args = problem(1, sign)
    reference = find_pairs_reference(*args[:4], 100, args[4], rules)
    found = find_pairs(*args[:4], 100, args[4], rules)
    assert_same(found, reference, exact=sign)
    assert reference.n_passing > 0, "the filters must leave pairs to compare"
    if rules.threshold == -1.0 and rules.max_cooccurrence == 3:
        assert found.n_passing == D * (D - 1) // 2
    cosines = found.cosine_K.tolist()
    assert cosines == sorted(cosines, reverse=True)
    assert len(cosines) == min(rules.max_pairs, found.n_passing)
    assert (found.first_K < found.second_K).all()


def test_a_share_rule_keeps_pairs_that_fire_together_rarely_for_the_rarer_latent():
    latents, rows, norms, activations, counts = problem(3, False)
    strict = PairFilter(threshold=-1.0, max_cooccurrence=0, block_size=16)
    share = PairFilter(threshold=-1.0, max_cooccurrence=0, max_share=0.05, block_size=16)
    never = find_pairs(latents, rows, norms, activations, 100, counts, strict)
    rarely = find_pairs(latents, rows, norms, activations, 100, counts, share)
    assert rarely.n_passing > never.n_passing
    kept = dict.fromkeys(zip(rarely.first_K.tolist(), rarely.second_K.tolist(), strict=True))
    assert all(p in kept for p in zip(never.first_K.tolist(), never.second_K.tolist(), strict=True))
    position = {int(latent): k for k, latent in enumerate(latents)}
    for a, b, c in zip(rarely.first_K, rarely.second_K, rarely.cooccurrence_K, strict=True):
        rarer = min(int(activations[position[int(a)]]), int(activations[position[int(b)]]))
        assert int(c) == 0 or int(c) <= 0.05 * rarer


def test_focus_and_first_latent_limits_match_the_loop():
    args = problem(2, True)
    rules = PairFilter(threshold=-0.5, max_cooccurrence=3, block_size=9)
    focus = torch.zeros(D, dtype=torch.bool)
    focus[[5, 30]] = True
    firsts = torch.arange(D) < 12
    for f, g in ((focus, None), (None, firsts), (focus, firsts)):
        reference = find_pairs_reference(*args[:4], 500, args[4], rules, g, f)
        assert reference.n_passing > 0
        assert_same(find_pairs(*args[:4], 500, args[4], rules, g, f), reference)
    found = find_pairs(*args[:4], 500, args[4], rules, None, focus)
    latents = args[0]
    chosen = {int(latents[5]), int(latents[30])}
    assert all(
        {a, b} & chosen
        for a, b in zip(found.first_K.tolist(), found.second_K.tolist(), strict=True)
    )


def test_identical_effects_rank_first_and_zero_effects_score_zero():
    latents, rows, norms, activations, counts = problem(3, True)
    found = find_pairs(latents, rows, norms, activations, 100, counts, PairFilter(-1.0, 10**6))
    ids = zip(found.first_K.tolist(), found.second_K.tolist(), strict=True)
    pairs = dict(zip(ids, found.cosine_K.tolist(), strict=True))
    assert pairs[(int(latents[7]), int(latents[11]))] == pytest.approx(1.0)
    assert all(c == 0.0 for (a, b), c in pairs.items() if int(latents[3]) in (a, b))


def test_a_zero_cosine_does_not_pass_the_default_rule():
    """The default rule is cosine > 0: a latent that changed nothing has cosine 0 with every
    latent, which is no evidence of a shared effect; a given threshold keeps ≥."""
    from sae_hacking.absorption.configs import PairsConfig

    assert PairsConfig().cosine_rule() == (0.0, True)
    assert PairsConfig(cosine_sim_threshold=0.0).cosine_rule() == (0.0, False)
    latents, rows, norms, activations, counts = problem(3, True)
    loose = find_pairs(latents, rows, norms, activations, 100, counts, PairFilter(0.0, 10**6))
    strict = find_pairs(
        latents, rows, norms, activations, 100, counts, PairFilter(0.0, 10**6, strict=True)
    )
    zeros = int((loose.cosine_K == 0).sum())
    assert zeros >= D - 1  # every pair with the latent without any effect, at least
    assert strict.n_passing == loose.n_passing - zeros and (strict.cosine_K > 0).all()
    assert torch.equal(strict.cosine_K, loose.cosine_K[loose.cosine_K > 0])


def test_a_run_killed_while_writing_is_incomplete(tmp_path, monkeypatch):
    """pairs.json, the file users and scripts look for, is written last; until it is there the
    run's record lists a missing output."""
    from sae_hacking.absorption.configs import PairsConfig
    from sae_hacking.absorption.pairs import run as pairs_run
    from sae_hacking.absorption.pairs.identity import KIND, OUTPUTS
    from sae_hacking.config import from_flat
    from sae_hacking.reports import pairs as report
    from sae_hacking.runs.record import read_record
    from sae_hacking.runs.rundir import RunDir

    meta = {"n_compared": 2, "n_pairs_passing": 0, "n_pairs_kept": 0, "histogram": {}}
    result = {"meta": meta, "pairs": []}

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "write_report", killed)
    config = from_flat(PairsConfig, {"output_dir": str(tmp_path / "run")})
    run_dir = RunDir.plan(config, KIND, KIND, OUTPUTS).start().path  # as pairs_run.run does
    with pytest.raises(KeyboardInterrupt):
        pairs_run.write_outputs(run_dir, config, result)
    assert not (run_dir / "pairs.json").exists()
    record = read_record(run_dir, "pairs")
    assert not record.is_complete()
    monkeypatch.undo()
    pairs_run.write_outputs(run_dir, config, result)
    assert read_record(run_dir, "pairs").is_complete()
    written = {p.name for p in run_dir.iterdir()} - {"run.json", "args.yaml"}
    assert written == set(read_record(run_dir, "pairs").outputs)  # every output is listed
