"""Latent evidence on the server (``serve --evidence RUN ...``): the pages of
``sae-hacking latents-report`` for the runs given, rendered when asked for, and the link from a
latent of the highlighting page to its section.

Each run (a ``cooccurrences`` or ``latents`` run that holds evidence) belongs to one SAE: a
latent links to it only when the SAE the request loaded has that run's content hash, so evidence
never labels another SAE's latents. The run must be of the server's model (its contexts are
decoded with the server's tokenizer). ``/evidence/K/page-NNNNN.html`` renders one page
(``--latents-per-page`` latents, about 10 ms each to decode; the last few pages are kept);
``/evidence/K/index.html`` lists every latent (counts and maxima only: the tokens each fires on
would mean reading every latent's contexts; ``latents-report`` writes those). Top co-occurring
latents are not shown here: they take a pass over the whole triangle, which ``latents-report``
makes once.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from typing import Any

from sae_hacking.errors import UsageError

PAGE = re.compile(r"^page-(\d+)\.html$")
PAGES_KEPT = 8
PER_PAGE = 128


class ServedEvidence:
    """The evidence runs a server shows, by SAE content hash."""

    def __init__(self, paths: tuple[str, ...], model: str, tokenizer, per_page: int = PER_PAGE):
        from sae_hacking.absorption.evidence.read import Evidence, token_decoder
        from sae_hacking.absorption.evidence.report import explanations_for

        self.runs: list[dict[str, Any]] = []
        self.per_page = per_page
        self.decode = token_decoder(tokenizer)
        self._pages: OrderedDict[tuple[int, int], str] = OrderedDict()
        self._index: dict[int, str] = {}
        self._lock = threading.Lock()
        by_hash: dict[str, int] = {}
        for path in paths:
            evidence = Evidence(path)
            if evidence.model != model:
                evidence.close()
                raise UsageError(
                    f"--evidence {path} was collected on the model {evidence.model}, but this "
                    f"server runs {model}; its contexts would decode wrongly."
                )
            identity = evidence.sae_identity()
            fingerprint = identity.get("sae_fingerprint")
            if fingerprint in by_hash:
                evidence.close()
                raise UsageError(f"--evidence {path} is a second run of the same SAE; give one.")
            np_id, explanations, source = explanations_for(identity, None, evidence.e)
            by_hash[fingerprint] = len(self.runs)
            self.runs.append(
                {"evidence": evidence, "np_id": np_id, "explanations": explanations,
                 "source": source, "fingerprint": fingerprint}
            )  # fmt: skip
        self.by_hash = by_hash

    def close(self) -> None:
        for run in self.runs:
            run["evidence"].close()

    def link(self, fingerprint: str | None, index: int) -> str | None:
        """The URL (relative to the server's root) of latent ``index``'s section, or ``None``
        when no run holds the evidence of the SAE with ``fingerprint``."""
        from sae_hacking.reports.latents import page_digits, page_name

        k = self.by_hash.get(fingerprint)
        if k is None:
            return None
        e = self.runs[k]["evidence"].e
        if not 0 <= index < e:
            return None
        name = page_name(index // self.per_page, page_digits(e, self.per_page))
        return f"evidence/{k}/{name}#latent-{index}"

    def page(self, k: int, name: str) -> str:
        """The HTML of ``index.html`` or ``page-NNNNN.html`` of run ``k``; ``KeyError`` when
        there is no such page."""
        if not 0 <= k < len(self.runs):
            raise KeyError(k)
        if name == "index.html":
            with self._lock:
                if k not in self._index:
                    self._index[k] = self._render_index(k)
                return self._index[k]
        found = PAGE.match(name)
        e = self.runs[k]["evidence"].e
        if found is None or int(found.group(1)) * self.per_page >= e:
            raise KeyError(name)
        page = int(found.group(1))
        with self._lock:  # the results file is read by one request at a time
            if (k, page) not in self._pages:
                self._pages[(k, page)] = self._render_page(k, page)
                while len(self._pages) > PAGES_KEPT:
                    self._pages.popitem(last=False)
            self._pages.move_to_end((k, page))
            return self._pages[(k, page)]

    def _meta(self, k: int) -> dict[str, Any]:
        from sae_hacking.absorption.evidence.report import report_meta

        run = self.runs[k]
        evidence = run["evidence"]
        pages = list(range(-(-evidence.e // self.per_page)))
        return report_meta(evidence, self.per_page, pages, None, run["np_id"], run["source"], None)

    def _render_page(self, k: int, page: int) -> str:
        from sae_hacking.absorption.evidence.report import page_latents
        from sae_hacking.reports.latents import page_digits, page_name, render_page

        run, meta = self.runs[k], self._meta(k)
        digits = page_digits(meta["e"], self.per_page)
        last = len(meta["pages"]) - 1
        near = {
            "prev": page_name(page - 1, digits) if page > 0 else None,
            "next": page_name(page + 1, digits) if page < last else None,
        }
        latents = page_latents(
            run["evidence"], page, self.per_page, self.decode, run["explanations"], run["np_id"]
        )
        return render_page(meta, page, digits, near, latents)

    def _render_index(self, k: int) -> str:
        from sae_hacking.reports.latents import index_row, page_digits, render_index

        run, meta = self.runs[k], self._meta(k)
        rows = [
            index_row(
                {**latent, "top": [], "explanation": run["explanations"].get(latent["index"])}
            )
            for latent in run["evidence"].summary()
        ]
        return render_index(meta, page_digits(meta["e"], self.per_page), rows)
