"""make-tiny-model refuses bad sizes and paths before any work and never leaves a half model."""

import os
import subprocess
import sys

import pytest

from sae_hacking.errors import FieldError, UsageError
from sae_hacking.lm.tiny import (
    MAX_PARAMETERS,
    check_tiny_model_args,
    estimated_parameters,
    generate_texts,
    make_tiny_model,
)

BAD_SIZES = [
    ({"arch": "bert"}, "arch", "expected one of gemma2"),
    ({"n_layers": 0}, "n_layers", "between 1 and 64, got 0"),
    ({"n_layers": 65}, "n_layers", "between 1 and 64"),
    ({"d_model": 0}, "d_model", "between 16 and 2048, got 0"),
    ({"d_model": 40}, "d_model", "multiple of 16"),
    ({"d_model": 4096}, "d_model", "between 16 and 2048"),
    ({"vocab_size": 299}, "vocab_size", "between 300 and 65536"),
    ({"vocab_size": 10**6}, "vocab_size", "between 300 and 65536"),
    ({"prompts": -5}, "prompts", "between 0 and 1000000, got -5"),
    ({"sae_width": 0}, "sae_width", "between 1 and 65536"),
]


@pytest.mark.parametrize(("kwargs", "field", "expected"), BAD_SIZES)
def test_bad_sizes_name_their_field(tmp_path, kwargs, field, expected):
    with pytest.raises(FieldError, match=expected) as info:
        check_tiny_model_args(tmp_path / "m", **kwargs)
    assert info.value.field == field
    if field != "sae_width":  # make_tiny_model runs the same checks first
        with pytest.raises(FieldError):
            make_tiny_model(tmp_path / "m", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_absurd_total_size_is_refused(tmp_path):
    assert estimated_parameters(64, 2048, 512) > MAX_PARAMETERS
    with pytest.raises(UsageError, match="about 3224M parameters, over the limit of 100M"):
        check_tiny_model_args(tmp_path / "m", n_layers=64, d_model=2048)
    assert estimated_parameters(2, 64, 512) < MAX_PARAMETERS


def test_negative_prompt_count():
    with pytest.raises(FieldError, match="must not be negative, got -5") as info:
        generate_texts(-5)
    assert info.value.field == "prompts"
    assert generate_texts(0) == []


def test_path_that_is_a_file_or_a_full_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(FieldError, match="is a file, not a folder") as info:
        check_tiny_model_args(tmp_path / "file")
    assert info.value.field == "path"
    with pytest.raises(FieldError, match="is a file"):
        check_tiny_model_args(tmp_path / "file" / "model")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(FieldError, match="exists and is not empty"):
        make_tiny_model(tmp_path / "full")
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    (tmp_path / "empty").mkdir()
    assert check_tiny_model_args(tmp_path / "empty") == tmp_path / "empty"


@pytest.mark.parametrize("path", ["/proc/sae-hacking-model", "/sys/sae-hacking-model"])
def test_system_folders_are_refused(path):
    with pytest.raises(FieldError, match="is under /(proc|sys)"):
        check_tiny_model_args(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_parent_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(FieldError, match="cannot be created"):
            check_tiny_model_args(locked / "a" / "model")
    finally:
        locked.chmod(0o755)


def test_unwritable_parent_is_refused(tmp_path, monkeypatch):
    """A read-only file system, as root sees it (root ignores a folder's permission bits)."""
    import errno
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    with pytest.raises(FieldError, match="cannot be created \\(Read-only file system\\)"):
        check_tiny_model_args(tmp_path / "model")


def test_check_writes_nothing(tmp_path):
    check_tiny_model_args(tmp_path / "a" / "b" / "model")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_failed_build_leaves_nothing(tmp_path, error):
    def fail(folder):
        assert (folder / "config.json").is_file() and (folder / "prompts.txt").is_file()
        raise error("stop")

    with pytest.raises(error):
        make_tiny_model(tmp_path / "a" / "b" / "model", "gpt2", d_model=32, prompts=3, finish=fail)
    assert list(tmp_path.iterdir()) == []  # no model, no staging folder, no created parents


def test_prompts_and_finish_land_in_the_published_folder(tmp_path):
    seen = []
    path = make_tiny_model(
        tmp_path / "m", "gpt2", d_model=32, seed=2, prompts=4, finish=lambda f: seen.append(f)
    )
    texts = generate_texts(4, seed=3)
    assert (path / "prompts.txt").read_text(encoding="utf-8") == "\n".join(texts) + "\n"
    assert seen and seen[0] != path and not seen[0].exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_check_is_torch_free(tmp_path):
    code = (
        "import sys\n"
        "from sae_hacking.errors import FieldError\n"
        "from sae_hacking.lm.tiny import check_tiny_model_args\n"
        "try:\n"
        f"    check_tiny_model_args({str(tmp_path / 'm')!r}, d_model=0)\n"
        "except FieldError as err:\n"
        "    print(err.field)\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.split() == ["d_model", "False"], done.stderr


@pytest.mark.slow
def test_build_prints_nothing_on_stderr_and_files_are_readable(tmp_path):
    code = (
        "from sae_hacking.lm.tiny import make_tiny_model\n"
        f"make_tiny_model({str(tmp_path / 'm')!r}, 'gpt2', d_model=32)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "m").iterdir()}
    assert len(set(modes.values())) == 1 and modes["model.safetensors"] & 0o044, modes
