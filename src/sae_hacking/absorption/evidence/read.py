"""Reading latent evidence from a ``cooccurrences`` or ``latents`` results file, as plain data
(what the reports show; :data:`LATENT_SCHEMA`). Nothing is loaded densely: a range of latents
reads its rows of each table; the summary of every latent reads the ``[e, X]`` top values and
the ``[e]`` counts only.

Quantile bands: the sample is a uniform sample of the latent's activations (bottom-k of a hash),
so its members sorted by value and cut into ``bands`` equal groups are samples from the
latent's activation quantiles (band 0: the weakest activations; with fewer sampled examples
than ``bands x per band``, fewer bands). Band edges shown are the sample's, not exact quantiles.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sae_hacking.absorption.cooccurrence.identity import KIND as COOCCURRENCES
from sae_hacking.absorption.cooccurrence.identity import RESULTS_NAME as CO_NAME
from sae_hacking.absorption.evidence.identity import KIND as LATENTS
from sae_hacking.absorption.evidence.identity import RESULTS_NAME as LATENTS_NAME
from sae_hacking.errors import UsageError

LATENT_SCHEMA = """\
{"index": i, "count": tokens where i is active, "density": count / tokens,
 "max": largest activation (null if never active),
 "top": [example, ...] largest first,
 "bands": [{"low": v, "high": v, "examples": [example, ...]}, ...] weakest band first,
 "histogram": {"edges": [e0, ..., en], "counts": [c0, ..., c(n-1)]} (bins from the first to
   the last non-empty one),
 "logit_lens": {"up": [[token, value], ...], "down": [[token, value], ...]} or null}
example: {"value": v, "prompt": dataset row, "position": index in the model input,
 "tokens": [text of each real token of the window], "acts": [activation on each],
 "center": index of the example's token in tokens}"""

Decode = Callable[[Sequence[int]], list[str]]


def token_decoder(tokenizer) -> Decode:
    """Text of each token of a context, ``"".join`` being the decoded text: ids decoded one by
    one (memoised), checked against the context decoded whole; where they differ (a character
    split over byte tokens, a tokenizer that strips a lone token's leading space) the context
    goes through :func:`~sae_hacking.data.pieces.token_pieces`."""
    from sae_hacking.data.pieces import token_pieces

    cache: dict[int, str] = {}

    def decode(ids: Sequence[int]) -> list[str]:
        pieces = []
        for i in ids:
            if i not in cache:
                cache[i] = tokenizer.decode([i])
            pieces.append(cache[i])
        if len(ids) > 1 and "".join(pieces) != tokenizer.decode(list(ids)):
            return token_pieces(tokenizer, list(ids))
        return pieces

    return decode


def evidence_file(path: str | Path) -> Path:
    """The results file of a run directory, sidecar or results path that holds evidence."""
    from sae_hacking.runs.record import results_paths

    path = Path(path)
    if path.is_dir():
        for name in (LATENTS_NAME, CO_NAME):
            candidate = results_paths(path / name)[0]
            if candidate.is_file():
                return candidate
        raise UsageError(
            f"{path} holds no cooccurrences or latents results: the run is unfinished (resume "
            "it to the end first) or it is another kind of run."
        )
    if path.suffix == ".json":
        return path.with_name(path.name[: -len(".json")] + ".safetensors.zst")
    return path


class Evidence:
    """The evidence of one results file (``path``: run directory, ``.json`` or results file)."""

    def __init__(self, path: str | Path, allow_partial: bool = False):
        from sae_hacking.runs.results import ResultsFile
        from sae_hacking.runs.shards import check_all_shards

        self.path = evidence_file(path)
        if not self.path.is_file():
            raise UsageError(f"{path}: no results file there (is the run finished?).")
        self.file = ResultsFile(self.path)
        try:
            self.meta = self.file.meta
            kind = self.meta.get("kind")
            if kind not in (COOCCURRENCES, LATENTS):
                raise UsageError(
                    f"{self.path} holds {kind!r} results, not cooccurrences or latents; "
                    "latent evidence comes from those runs."
                )
            if not self.meta.get("complete"):
                raise UsageError(f"{self.path} is a checkpoint; resume the run to the end first.")
            check_all_shards(self.meta, self.path, allow_partial)
            if "top_values_eX" not in self.file.keys():
                raise UsageError(
                    f"{self.path} holds no latent evidence (it was run with --top-examples 0); "
                    "collect it with `sae-hacking latents` on the same SAE and text."
                )
        except UsageError:
            self.file.close()
            raise
        self.settings: dict[str, Any] = self.meta.get("settings", {})
        self.e, self.n_top = self.file.shape("top_values_eX")
        self.n_sample = self.file.shape("sample_values_eQ")[1]
        self.width = self.file.shape("top_context_ids_eXW")[2]
        self.tokens = int(self.file.read("tokens_1")[0])
        self.bands = int(self.settings.get("quantile_bands", 1))
        self.edges = self.file.read("histogram_edges_J1").tolist()
        self.has_logit_lens = "logit_lens_top_ids_eK" in self.file.keys()
        self.has_pairs = "cooccurrences_P" in self.file.keys()

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Evidence:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def model(self) -> str | None:
        return self.settings.get("model")

    def sae_identity(self) -> dict[str, Any]:
        """What names the SAE: release, id, hook, d_sae and fingerprint, as the run recorded."""
        prefix = "ablator_" if self.meta.get("kind") == COOCCURRENCES else ""
        keys = ("sae_release", "sae_id")
        out = {k: self.settings.get(prefix + k) for k in keys}
        for key in ("hook", "d_sae", "sae_fingerprint", "neuronpedia_id"):
            out[key] = self.settings.get(key)
        return out

    def check_latent(self, i: int) -> int:
        if not 0 <= i < self.e:
            raise UsageError(f"latent {i} is out of range; this SAE has latents 0..{self.e - 1}.")
        return i

    def _rows(self, key: str, start: int, stop: int):
        shape = self.file.shape(key)
        per = 1
        for n in shape[1:]:
            per *= n
        return self.file.read_range(key, start * per, stop * per).reshape(stop - start, *shape[1:])

    def counts(self):
        """``[e]`` int64: tokens where each latent is active."""
        return self.file.read("activations_e")

    def summary(self) -> list[dict[str, Any]]:
        """Every latent's index, count, density and largest activation (cheap: no contexts)."""
        counts = self.counts().tolist()
        top = self.file.read("top_values_eX")[:, 0].tolist()
        tokens = max(self.tokens, 1)
        return [
            {
                "index": i,
                "count": c,
                "density": c / tokens,
                "max": top[i] if c else None,
            }
            for i, c in enumerate(counts)
        ]

    def latents(self, start: int, stop: int, decode: Decode) -> list[dict[str, Any]]:
        """:data:`LATENT_SCHEMA` of latents ``start .. stop - 1``, contexts decoded by ``decode``
        (:func:`token_decoder`)."""
        start, stop = max(0, start), min(self.e, stop)
        if start >= stop:
            return []
        t = {
            k: self._rows(k, start, stop)
            for k in self.file.keys()
            if k.startswith(("top_", "sample_", "histogram_eJ", "logit_lens_"))
        }
        counts = self.counts()[start:stop].tolist()
        out = []
        for d, i in enumerate(range(start, stop)):
            top = self._examples(t, "top", "X", d, decode)
            sampled = sorted(self._examples(t, "sample", "Q", d, decode), key=_by_value)
            out.append(
                {
                    "index": i,
                    "count": counts[d],
                    "density": counts[d] / max(self.tokens, 1),
                    "max": top[0]["value"] if top else None,
                    "top": top,
                    "bands": self._bands(sampled),
                    "histogram": self._histogram(t["histogram_eJ"][d].tolist()),
                    "logit_lens": self._lens(t, d, decode) if self.has_logit_lens else None,
                }
            )
        return out

    def _examples(self, t, name: str, x: str, d: int, decode: Decode) -> list[dict[str, Any]]:
        prompts = t[f"{name}_prompts_e{x}"][d].tolist()
        values = t[f"{name}_values_e{x}"][d].tolist()
        positions = t[f"{name}_positions_e{x}"][d].tolist()
        ids = t[f"{name}_context_ids_e{x}W"][d].tolist()
        acts = (t[f"{name}_context_acts_e{x}W"][d].float() + 0.0).tolist()  # no -0.0
        middle = (self.width - 1) // 2
        out = []
        for slot, prompt in enumerate(prompts):
            if prompt < 0:
                continue
            keep = [k for k, token in enumerate(ids[slot]) if token >= 0]
            out.append(
                {
                    "value": values[slot],
                    "prompt": prompt,
                    "position": positions[slot],
                    "tokens": decode([ids[slot][k] for k in keep]),
                    "acts": [acts[slot][k] for k in keep],
                    "center": keep.index(middle),
                }
            )
        return out

    def _bands(self, sampled: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not sampled:
            return []
        n_bands = min(self.bands, len(sampled))
        bands = []
        for b in range(n_bands):
            members = sampled[b * len(sampled) // n_bands : (b + 1) * len(sampled) // n_bands]
            bands.append(
                {"low": members[0]["value"], "high": members[-1]["value"], "examples": members}
            )
        return bands

    def _histogram(self, counts: list[int]) -> dict[str, list]:
        filled = [j for j, c in enumerate(counts) if c]
        if not filled:
            return {"edges": [], "counts": []}
        first, last = filled[0], filled[-1]
        edges = [None if e == float("inf") else e for e in self.edges[first : last + 2]]
        return {"edges": edges, "counts": counts[first : last + 1]}

    def _lens(self, t, d: int, decode: Decode) -> dict[str, list]:
        out = {}
        for side, name in (("up", "top"), ("down", "bottom")):
            ids = t[f"logit_lens_{name}_ids_eK"][d].tolist()
            values = t[f"logit_lens_{name}_values_eK"][d].tolist()
            out[side] = [[decode([i])[0], v] for i, v in zip(ids, values, strict=True)]
        return out


def _by_value(example: dict[str, Any]) -> tuple:
    return (example["value"], example["prompt"], example["position"])
