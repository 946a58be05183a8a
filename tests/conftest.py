"""Test-wide settings and the shared tiny models.

Settings: never touch the network, never open a window, and check every annotated shape:
each module-level function, class and method of ``sae_hacking`` imported in this process is
wrapped by jaxtyping + beartype, so a value that disagrees with its annotation (a tensor whose
shape disagrees with its letters, or with another argument's use of the same letter) fails the
test that passed it. Closures and subprocesses run unchecked.

Fixtures (session-scoped factories, each model built and loaded once per session):

- ``tiny_model_path(arch="gemma2", layers=2, **kwargs)``: folder of a tiny model
  (:func:`sae_hacking.lm.tiny.tiny_model_once`; ``kwargs`` as ``make_tiny_model``'s).
- ``tiny_lm(arch="gemma2", layers=2, dtype="float32")``: that model as a CPU
  :class:`~sae_hacking.lm.hooked.HookedLM`, shared: remove any hook you add.
- ``random_sae_path(hook, d_sae, seed=0, **kwargs)``: a checkpoint of
  :func:`tests.random_saes.random_sae` (``d_in`` 64 fits the tiny models).
- ``prompts_path(n, seed=0, min_words=3, max_words=24)``: a ``.txt`` of generated prompts.

Random SAEs themselves are cheap: build them with :func:`tests.random_saes.random_sae`.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
# numba's OpenMP threads spin-wait after each parallel kernel (the co-occurrence counts); on a
# busy 2-core machine that made later torch forwards in the process up to ~15x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import ast  # noqa: E402

from jaxtyping import _import_hook, install_import_hook  # noqa: E402


def _skip_nested_functions() -> None:
    """Check module-level functions, classes and methods only, not closures: a closure is
    wrapped anew each time its enclosing function runs (jaxtyping and beartype compile a
    checker, about 1 ms), and the per-forward hooks made that double the suite's time. Patches
    jaxtyping's (private) AST transformer; should that change, this fails at start-up."""
    transformer = _import_hook.JaxtypingTransformer
    visit = transformer.visit_FunctionDef

    def visit_function(self, node):
        if not any(isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef)) for p in self._parents):
            return visit(self, node)
        self._no_type_check_level += 1  # as if decorated with @typing.no_type_check
        try:
            return visit(self, node)
        finally:
            self._no_type_check_level -= 1

    transformer.visit_FunctionDef = visit_function


# Before anything imports sae_hacking: only modules imported after this are checked.
_skip_nested_functions()
_SHAPE_CHECKS = install_import_hook("sae_hacking", "beartype.beartype")

import pytest  # noqa: E402
import torch  # noqa: E402

from sae_hacking.lm.tiny import generate_texts, tiny_model_once  # noqa: E402

# Test tensors are tiny: one intra-op thread avoids oversubscribing the 2-core CI machine, where
# two contended threads made tiny-model forwards ~50x slower. Subprocesses set their own.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-models")

    def build(arch: str = "gemma2", layers: int = 2, **kwargs):
        return tiny_model_once(root, arch, n_layers=layers, **kwargs)

    return build


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_path):
    from sae_hacking.lm.hooked import HookedLM

    loaded = {}

    def load(arch: str = "gemma2", layers: int = 2, dtype: str = "float32"):
        key = (arch, layers, dtype)
        if key not in loaded:
            path = str(tiny_model_path(arch, layers))
            loaded[key] = HookedLM.from_pretrained(path, device="cpu", dtype=dtype)
        return loaded[key]

    return load


@pytest.fixture(scope="session")
def random_sae_path(tmp_path_factory):
    from sae_hacking.saes.io import save_sae_checkpoint
    from tests.random_saes import random_sae

    root = tmp_path_factory.mktemp("random-saes")

    def write(hook: str, d_sae: int, seed: int = 0, **kwargs):
        options = "-".join(f"{k}{v}" for k, v in sorted(kwargs.items()))
        path = root / f"{hook}-{d_sae}-{seed}-{options}.safetensors"
        if not path.is_file():
            save_sae_checkpoint(random_sae(hook, d_sae, seed, **kwargs), path)
        return path

    return write


@pytest.fixture(scope="session")
def prompts_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("prompts")

    def write(n: int, seed: int = 0, min_words: int = 3, max_words: int = 24):
        path = root / f"{n}-{seed}-{min_words}-{max_words}.txt"
        if not path.is_file():
            texts = generate_texts(n, seed=seed, min_words=min_words, max_words=max_words)
            path.write_text("\n".join(texts) + "\n", encoding="utf-8")
        return path

    return write


@pytest.fixture
def network_attempts(monkeypatch):
    """The address of every socket connection attempted during the test (the attempts still
    happen): how a test says "fails fast" without timing it. The hub probe is one attempt;
    huggingface_hub's retries would be several."""
    import socket

    attempts = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def connect(self, address):
        attempts.append(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        attempts.append(address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return attempts


@pytest.fixture
def unreachable_hub(monkeypatch):
    """Offline mode off, no proxy, and a hub endpoint that refuses connections
    (``127.0.0.1:9``); returns that address."""
    from huggingface_hub import constants

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    return ("127.0.0.1", 9)


@pytest.fixture(scope="session")
def chromium():
    """A Chromium driven by playwright for the session, the one :func:`tests.browser.find_chromium`
    finds (never ``playwright install``). None found: the browser tests skip with the install
    hint, or fail under CI (``.ci/run`` installs Debian's)."""
    from tests.browser import browser_missing, find_chromium

    try:
        from playwright import sync_api
    except ImportError:
        browser_missing("the playwright package is missing (`uv sync` installs the dev group)")
    with sync_api.sync_playwright() as playwright:
        path = find_chromium(bundled=lambda: playwright.chromium.executable_path)
        if path is None:
            browser_missing("no Chromium found ($CHROMIUM, PATH or playwright's own)")
        browser = playwright.chromium.launch(
            executable_path=path, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            browser.close()
