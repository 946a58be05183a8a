"""Latent evidence: the example tables equal a brute-force reference whatever the order and
split of the examples; the co-occurrence pass's evidence equals one computed prompt by prompt
from the model and SAE; ``latents`` collects the same without pair counts; the logit lens equals
a direct computation; bad settings exit 2."""

from __future__ import annotations

import json
import random

import pytest
import torch

from sae_hacking.absorption.evidence.collect import (
    EvidenceCollector,
    histogram_edges,
)
from sae_hacking.absorption.evidence.logit_lens import logit_lens
from sae_hacking.absorption.evidence.tables import (
    EMPTY_PRIORITY,
    Candidates,
    ExampleTable,
    sample_priority,
)
from sae_hacking.cli import main
from sae_hacking.data.text import tokenize_prompts
from sae_hacking.lm.hooked import HookedLM
from sae_hacking.runs.results import ResultsFile
from tests.absorption.evidence_checks import assert_same_evidence

E, N, WIDTH = 7, 4, 3


def examples(seed: int, count: int = 300) -> list[tuple[int, float, int, int]]:
    """(latent, value, prompt, position), values from a small set: many exact ties."""
    rng = random.Random(seed)
    seen, out = set(), []
    while len(out) < count:
        example = (rng.randrange(E), rng.randrange(9), rng.randrange(40), rng.randrange(12))
        if (example[0], example[2], example[3]) not in seen:
            seen.add((example[0], example[2], example[3]))
            out.append((example[0], 0.25 * (1 + example[1]), example[2], example[3]))
    return out


def context_of(latent: int, prompt: int, position: int) -> list[int]:
    return [latent * 10_000 + prompt * 100 + position + k for k in range(WIDTH)]


def candidates(batch: list[tuple[int, float, int, int]], sampled: bool) -> Candidates:
    latent, value, prompt, position = (torch.tensor(c) for c in zip(*batch, strict=True))
    ids = torch.tensor([context_of(*e[:1], *e[2:]) for e in batch])

    def contexts(idx):
        return ids[idx], ids[idx].float() / 7

    priority = sample_priority(3, prompt, position, latent) if sampled else None
    return Candidates(latent, value.float(), prompt, position, contexts, priority)


def reference(exs, sampled: bool) -> dict[int, list[tuple[int, int]]]:
    prio = {}
    if sampled:
        lat, _, pr, po = (torch.tensor(c) for c in zip(*exs, strict=True))
        for ex, p in zip(exs, sample_priority(3, pr, po, lat).tolist(), strict=True):
            prio[ex] = p
    best = {}
    for latent in range(E):
        mine = [ex for ex in exs if ex[0] == latent]
        mine.sort(key=lambda ex: (prio[ex] if sampled else -ex[1], ex[2], ex[3]))
        best[latent] = [(ex[2], ex[3]) for ex in mine[:N]]
    return best


def table_contents(table: ExampleTable) -> dict[int, list[tuple[int, int]]]:
    """The examples of each latent in the table's canonical order (its state)."""
    state = {k.split("_", 1)[1]: v for k, v in table.state().items()}
    out = {}
    for latent in range(E):
        slots = []
        for slot in range(N):
            prompt = int(state["prompts_eX"][latent, slot])
            if prompt >= 0:
                position = int(state["positions_eX"][latent, slot])
                slots.append((prompt, position))
                assert state["context_ids_eXW"][latent, slot].tolist() == context_of(
                    latent, prompt, position
                )  # the context travelled with its example
        out[latent] = slots
    return out


@pytest.mark.parametrize("sampled", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tables_keep_the_reference_examples_in_any_order_and_split(sampled, seed):
    exs = examples(seed)
    want = reference(exs, sampled)
    rng = random.Random(seed + 10)
    shuffled = exs[:]
    rng.shuffle(shuffled)
    whole = ExampleTable("t", "X", E, N, WIDTH, sampled, torch.device("cpu"))
    halves = [ExampleTable("t", "X", E, N, WIDTH, sampled, torch.device("cpu")) for _ in "ab"]
    start = 0
    while start < len(shuffled):
        size = rng.randrange(1, 40)
        batch = shuffled[start : start + size]
        whole.offer(candidates(batch, sampled))
        halves[start % 2].offer(candidates(batch, sampled))
        start += size
    assert table_contents(whole) == want
    halves[0].offer(halves[1].stored_candidates(halves[1].state()))  # the merge of two shards
    assert table_contents(halves[0]) == want
    for name, tensor in whole.state().items():
        assert torch.equal(tensor, halves[0].state()[name]), name
    if sampled:
        assert int(whole.state()["t_priority_eX"].max()) <= EMPTY_PRIORITY


def test_an_empty_slot_stays_empty_and_values_are_ordered():
    table = ExampleTable("top", "X", E, N, WIDTH, False, torch.device("cpu"))
    table.offer(candidates([(2, 1.0, 0, 1), (2, 3.0, 5, 2)], False))
    state = table.state()
    assert state["top_values_eX"][2].tolist() == [3.0, 1.0, -torch.inf, -torch.inf]
    assert state["top_prompts_eX"][2].tolist() == [5, 0, -1, -1]
    assert (state["top_prompts_eX"][[0, 1, 3, 4, 5, 6]] == -1).all()
    assert state["top_context_ids_eXW"][2, 2].tolist() == [-1] * WIDTH


def test_priorities_are_spread_and_depend_on_every_part():
    n = torch.arange(2000)
    base = sample_priority(0, n, n % 7, n % 5)
    assert len(set(base.tolist())) == 2000 and int(base.min()) >= 0
    assert float(base.double().mean() / EMPTY_PRIORITY) == pytest.approx(0.5, abs=0.05)
    for changed in (
        sample_priority(1, n, n % 7, n % 5),
        sample_priority(0, n + 1, n % 7, n % 5),
        sample_priority(0, n, n % 7 + 1, n % 5),
        sample_priority(0, n, n % 7, n % 5 + 1),
    ):
        assert (changed != base).float().mean() > 0.99


def test_histogram_bins_follow_their_edges():
    edges = histogram_edges()
    values = torch.tensor([1e-6, 1e-4, 0.5, 1.0, 3.3, 9.99, 2e4])
    collector = EvidenceCollector(1, 1, 0, 0, 0)
    acts = values[:, None]
    real = torch.ones(1, len(values), dtype=torch.bool)
    collector.add(
        acts,
        torch.arange(len(values)),
        torch.zeros(len(values), dtype=torch.long),
        torch.zeros(1, len(values), dtype=torch.long),
        real,
        torch.tensor([0]),
    )
    bins = torch.searchsorted(edges, values.double(), right=True) - 1
    want = torch.bincount(bins, minlength=len(edges) - 1)
    assert torch.equal(collector.histogram_eJ[0], want)


def test_logit_lens_equals_a_direct_computation():
    gen = torch.Generator().manual_seed(0)
    W_dec, W_U = torch.randn(300, 8, generator=gen), torch.randn(50, 8, generator=gen)  # noqa: N806
    W_U[7] = W_U[3]  # a tie: the smaller token id comes first
    lens = logit_lens(W_dec, W_U, k=5)
    logits = W_dec @ W_U.T
    for i in range(300):
        order = sorted(range(50), key=lambda v: (-float(logits[i, v]), v))
        assert lens["logit_lens_top_ids_eK"][i].tolist() == order[:5]
        low = sorted(range(50), key=lambda v: (float(logits[i, v]), v))
        assert lens["logit_lens_bottom_ids_eK"][i].tolist() == low[:5]
        assert torch.allclose(lens["logit_lens_top_values_eK"][i], logits[i, order[:5]])


# -- the pass on a tiny model --------------------------------------------------------------------

HOOK = "blocks.0.hook_mlp_out"
D_SAE = 24
MAX_TOKENS = 12
WINDOW = 3


@pytest.fixture(scope="module")
def tiny(tiny_model_path, random_sae_path, tmp_path_factory):
    from sae_hacking.lm.tiny import generate_texts

    texts = generate_texts(30, seed=4, min_words=2, max_words=14)
    texts[3] = texts[9] = ""  # empty rows are skipped but keep their row numbers
    data = tmp_path_factory.mktemp("evidence") / "data.jsonl"  # rows of .txt are non-empty lines
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return {
        "model": tiny_model_path("gemma2"),
        "sae": random_sae_path(HOOK, D_SAE, seed=3),
        "data": data,
        "texts": texts,
    }


def pass_flags(tiny, out, *extra):
    return [
        "--model", str(tiny["model"]), "--device", "cpu", "--dataset-id", str(tiny["data"]),
        "--max-tokens", str(MAX_TOKENS), "--n-prompts", "30", "--output-dir", str(out),
        "--quiet", "--top-examples", "5", "--quantile-bands", "3", "--examples-per-band", "2",
        "--context-tokens", str(WINDOW), *extra,
    ]  # fmt: skip


def read_all(path):
    with ResultsFile(path) as f:
        return {k: f.read(k) for k in f.keys()}


def brute_force(tiny) -> dict[str, torch.Tensor]:
    """The evidence by its definition: each prompt alone through the model and SAE (as a run
    with one prompt per batch computes it), every example listed, sorted, sliced."""
    from sae_hacking.saes.releases import load_sae

    lm = HookedLM.from_pretrained(str(tiny["model"]), device="cpu", dtype="float32")
    sae = load_sae(str(tiny["sae"]), None, device="cpu")
    rows = []  # (latent, value, prompt, position, ids, acts)
    for row, text in enumerate(tiny["texts"]):
        if not text.strip():
            continue
        one = tokenize_prompts(lm.tokenizer, [text], MAX_TOKENS)
        x = lm.read(one.input_ids_BS, one.attention_mask_BS, [HOOK])[HOOK]
        real = one.real_token_mask_BS[0]
        acts = sae.encode(x[one.real_token_mask_BS])  # [T, e]: the real tokens
        token_at = {int(s): t for t, s in enumerate(real.nonzero().flatten().tolist())}
        for s, t in token_at.items():
            for latent in (acts[t] > 0).nonzero().flatten().tolist():
                window = range(s - WINDOW, s + WINDOW + 1)
                ids = [int(one.input_ids_BS[0, p]) if p in token_at else -1 for p in window]
                ctx = [float(acts[token_at[p], latent]) if p in token_at else 0.0 for p in window]
                rows.append((latent, float(acts[t, latent]), row, s, ids, ctx))
    lat, pr, po = (torch.tensor([r[i] for r in rows]) for i in (0, 2, 3))
    prio = dict(zip(map(id, rows), sample_priority(0, pr, po, lat).tolist(), strict=True))
    out = {}
    for name, n, key in (
        ("top", 5, lambda r: (-r[1], r[2], r[3])),
        ("sample", 6, lambda r: (prio[id(r)], r[2], r[3])),
    ):
        letter = "X" if name == "top" else "Q"
        values = torch.full((D_SAE, n), -torch.inf if name == "top" else 0.0)
        prompts = torch.full((D_SAE, n), -1, dtype=torch.int64)
        ids = torch.full((D_SAE, n, 2 * WINDOW + 1), -1, dtype=torch.int32)
        acts = torch.zeros((D_SAE, n, 2 * WINDOW + 1), dtype=torch.float16)
        for latent in range(D_SAE):
            mine = sorted((r for r in rows if r[0] == latent), key=key)[:n]
            for slot, r in enumerate(mine):
                values[latent, slot], prompts[latent, slot] = r[1], r[2]
                ids[latent, slot] = torch.tensor(r[4])
                acts[latent, slot] = torch.tensor(r[5])
        out[f"{name}_values_e{letter}"] = values
        out[f"{name}_prompts_e{letter}"] = prompts
        out[f"{name}_context_ids_e{letter}W"] = ids
        out[f"{name}_context_acts_e{letter}W"] = acts
    edges = histogram_edges()
    hist = torch.zeros((D_SAE, len(edges) - 1), dtype=torch.int64)
    for r in rows:
        hist[r[0], int(torch.searchsorted(edges, torch.tensor(r[1]).double(), right=True)) - 1] += 1
    out["histogram_eJ"] = hist
    W_U = lm.model.get_output_embeddings().weight  # noqa: N806
    logits = sae.W_dec @ W_U.T
    out["top_logits"] = logits.topk(10, dim=1)
    return out


@pytest.mark.slow
def test_the_pass_collects_the_brute_force_evidence(tiny, tmp_path):
    want = brute_force(tiny)
    argv = ["--ablator-sae-release", str(tiny["sae"]), "--batch-size", "1"]
    assert main(["cooccurrences", *pass_flags(tiny, tmp_path / "co", *argv)]) == 0
    got = read_all(tmp_path / "co" / "cooccurrences.safetensors.zst")
    for key, value in want.items():
        if key != "top_logits":
            assert torch.equal(got[key], value), key
    assert torch.equal(got["histogram_eJ"].sum(1), got["activations_e"])
    assert torch.allclose(got["logit_lens_top_values_eK"], want["top_logits"].values, atol=1e-5)
    assert torch.equal(got["logit_lens_top_ids_eK"], want["top_logits"].indices)

    # `latents`: the same evidence and counts of one SAE, no pair counts
    flags = pass_flags(
        tiny, tmp_path / "lat", "--sae-release", str(tiny["sae"]), "--batch-size", "1"
    )
    assert main(["latents", *flags]) == 0
    alone = read_all(tmp_path / "lat" / "latents.safetensors.zst")
    assert not any(k.startswith("cooccurrences_") for k in alone)
    assert_same_evidence(alone, got, exact=True)
    assert torch.equal(alone["activations_e"], got["activations_e"])

    # batches of 4 prompts: the same examples up to float noise in near ties
    argv4 = ["--ablator-sae-release", str(tiny["sae"]), "--batch-size", "4"]
    assert main(["cooccurrences", *pass_flags(tiny, tmp_path / "b4", *argv4)]) == 0
    assert_same_evidence(read_all(tmp_path / "b4" / "cooccurrences.safetensors.zst"), got, False)


@pytest.mark.slow
def test_shards_of_one_prompt_batches_merge_to_the_same_evidence_bit_for_bit(tiny, tmp_path):
    argv = ["--sae-release", str(tiny["sae"]), "--batch-size", "1"]
    for shard in ("0/3", "1/3", "2/3"):
        assert (
            main(["latents", *pass_flags(tiny, tmp_path / shard[0], *argv, "--shard", shard)]) == 0
        )
    assert main(["latents", *pass_flags(tiny, tmp_path / "all", *argv)]) == 0
    parts = [str(tmp_path / i) for i in "201"]  # any order
    assert main(["merge", str(tmp_path / "merged"), *parts]) == 0
    merged = read_all(tmp_path / "merged.safetensors.zst")
    whole = read_all(tmp_path / "all" / "latents.safetensors.zst")
    assert merged.keys() == whole.keys()
    assert all(torch.equal(merged[k], whole[k]) for k in whole)


def test_bad_evidence_settings_exit_2(tiny, tmp_path, capsys):
    argv = pass_flags(tiny, tmp_path / "x", "--sae-release", str(tiny["sae"]))
    assert main(["latents", *argv, "--top-examples", "0"]) == 2
    assert "--top-examples must be at least 1" in capsys.readouterr().err
    assert main(["latents", *argv, "--context-tokens", "-1"]) == 2
    assert "--context-tokens" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("seed", [0, 1])
def test_the_compiled_and_the_torch_paths_keep_the_same_examples(seed):
    """Random batches with many exactly tied activations, through both kernels: equal states
    after every batch (the compiled path replaces slot by slot, the torch one sorts)."""
    from sae_hacking.absorption.cooccurrence.kernels import active_lists

    gen = torch.Generator().manual_seed(seed)
    e, n_b, n_s = 9, 3, 7
    paths = [EvidenceCollector(e, 3, 4, 2, 5, kernel=k) for k in ("numba", "torch")]
    for step in range(12):
        acts = torch.randint(0, 4, (n_b * n_s, e), generator=gen).float() * 0.5
        acts[torch.rand(acts.shape, generator=gen) < 0.4] = 0.0
        real = torch.rand(n_b, n_s, generator=gen) < 0.85
        acts_Te = acts[: int(real.sum())]
        latents_N, offsets_T1 = active_lists(acts_Te > 0)
        token_N = torch.repeat_interleave(torch.arange(len(offsets_T1) - 1), offsets_T1.diff())
        ids_BS = torch.randint(0, 99, (n_b, n_s), generator=gen)
        rows_B = torch.arange(step * n_b, (step + 1) * n_b)
        for collector in paths:
            collector.add(acts_Te, token_N, latents_N, ids_BS, real, rows_B)
        a, b = (c.state() for c in paths)
        for key in a:
            assert torch.equal(a[key], b[key]), (step, key)


def test_a_checkpoint_without_evidence_is_refused_in_one_sentence():
    from types import SimpleNamespace

    from sae_hacking.absorption.cooccurrence.accumulator import CooccurrenceAccumulator
    from sae_hacking.errors import UsageError

    lm = SimpleNamespace(device=torch.device("cpu"))
    sae = SimpleNamespace(d_sae=E)
    with_evidence = CooccurrenceAccumulator(lm, sae, "h", None, EvidenceCollector(E, 2, 2, 1, 0))
    counts_only = CooccurrenceAccumulator(lm, sae, "h").state()  # as an older version wrote
    with pytest.raises(UsageError, match="holds no latent evidence"):
        with_evidence.load_state(counts_only)
