"""Results files: safetensors, optionally zstd-compressed, readable piece by piece.

A results file is a standard `safetensors <https://github.com/huggingface/safetensors>`_ file;
``NAME.safetensors.zst`` is that file compressed with zstd. Beside it, ``NAME.json`` (the
*sidecar*) holds the same metadata as plain JSON so a run can be inspected with ``cat``.

Layout choices that make partial reads cheap:

- The writer streams tensors to disk (no second in-memory copy, so an 8.6 GB accumulator is
  written with 8.6 GB of RAM, not 17.2), ordered by element size, largest first, so every
  tensor starts at a multiple of its element size. A tensor on a GPU is copied to the host one
  frame at a time, and a :class:`TensorStream` is written from the pieces it yields, so a
  result computed block by block (the ablation sums) never exists whole on the host.
- The compressed file is a sequence of independent zstd frames of ``FRAME_BYTES`` uncompressed
  bytes each, followed by a seek table in the *zstd seekable format* (a skippable frame that
  ordinary decoders ignore; ``zstd -d`` and ``zstandard`` decompress the file as usual).
  Reading one element decompresses one frame (16 MiB); reading ``n`` scattered elements
  decompresses each frame that holds one of them once, with one frame in memory at a time.
- Metadata is a JSON object stored in the safetensors header under ``__metadata__["sae_hacking"]``
  (see :data:`METADATA_KEY`); the sidecar repeats it plus the tensors' dtypes and shapes.

Files without a seek table (e.g. recompressed with the ``zstd`` tool) still read correctly, by a
sequential streaming pass with bounded memory. Plain ``.safetensors`` files (checkpoints) read
the same way, by seeking.

Every problem with a file the user named (missing, truncated, not safetensors, corrupt zstd,
missing key) raises :class:`~sae_hacking.errors.UsageError` naming the file.
"""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from sae_hacking.atomic import atomic_write, atomic_write_json
from sae_hacking.errors import UsageError
from sae_hacking.runs.record import results_paths
from sae_hacking.runs.zstd_frames import (
    FRAME_BYTES,
    ZSTD_MAGIC,
    Frames,
    FrameSink,
    PlainFrames,
    SeekableFrames,
    StreamFrames,
    seek_table,
)

METADATA_KEY = "sae_hacking"

_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
_TORCH_DTYPES = {name: dtype for dtype, name in _DTYPES.items()}

if sys.byteorder != "little":  # safetensors is little-endian; so is every platform torch ships on
    raise ImportError("sae_hacking.runs.results needs a little-endian machine")


# -- writing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorStream:
    """A tensor written piece by piece: ``pieces()`` yields tensors (any device, any shape) whose
    flattened concatenation is the tensor; the writer holds one piece at a time."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    pieces: Callable[[], Iterator[torch.Tensor]]

    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def element_size(self) -> int:
        return self.dtype.itemsize


def _host_bytes(tensor: torch.Tensor) -> Iterator[memoryview]:
    """The bytes of ``tensor`` (flattened), at most ``FRAME_BYTES`` at a time; a tensor on
    another device is copied to the host frame by frame, not whole."""
    flat = tensor.detach().reshape(-1)
    if flat.device.type != "cpu":
        step = FRAME_BYTES // flat.element_size()
        for start in range(0, flat.numel(), step):
            yield from _host_bytes(flat[start : start + step].cpu())
        return
    flat = flat.contiguous()
    if flat.numel():
        data = memoryview(flat.view(torch.uint8).numpy())
        for start in range(0, len(data), FRAME_BYTES):
            yield data[start : start + FRAME_BYTES]


def _stream_bytes(name: str, tensor: torch.Tensor | TensorStream) -> Iterator[memoryview]:
    if isinstance(tensor, torch.Tensor):
        yield from _host_bytes(tensor)
        return
    written = 0
    for piece in tensor.pieces():
        if piece.dtype != tensor.dtype:
            raise ValueError(f"a piece of {name} has dtype {piece.dtype}, not {tensor.dtype}")
        written += piece.numel()
        if written > tensor.numel():
            raise ValueError(f"the pieces of {name} hold more than its {tensor.numel()} elements")
        yield from _host_bytes(piece)
        del piece  # before the next one exists
    if written != tensor.numel():
        raise ValueError(f"the pieces of {name} hold {written} of its {tensor.numel()} elements")


def write_safetensors(
    path: str | Path,
    tensors: Mapping[str, torch.Tensor | TensorStream],
    meta: Mapping[str, Any],
    compress: bool | None = None,
) -> Path:
    """Write ``tensors`` and the JSON-able ``meta`` to ``path`` atomically, streaming.

    ``compress`` defaults to ``path`` ending in ``.zst``. The output is standard safetensors
    (zstd-compressed in seekable frames when compressed); ``meta`` lands in the header's
    ``__metadata__`` under :data:`METADATA_KEY`. A :class:`TensorStream` gives the same file
    as the tensor it streams.
    """
    path = Path(path)
    compress = path.name.endswith(".zst") if compress is None else compress
    order = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    header: dict[str, Any] = {"__metadata__": {METADATA_KEY: json.dumps(meta, sort_keys=True)}}
    offset = 0
    for name in order:
        tensor = tensors[name]
        if tensor.dtype not in _DTYPES:
            raise ValueError(f"tensor {name} has dtype {tensor.dtype}, not storable in safetensors")
        size = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": _DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-(8 + len(header_bytes)) % 8)  # data starts 8-byte aligned

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            sink = FrameSink(handle, compress)
            sink.write(struct.pack("<Q", len(header_bytes)) + header_bytes)
            for name in order:
                for data in _stream_bytes(name, tensors[name]):
                    sink.write(data)
                    del data  # it holds its piece: let the piece go before the next one
            sink.close()

    return atomic_write(path, write)


def write_results(
    stem: str | Path, tensors: Mapping[str, torch.Tensor | TensorStream], meta: Mapping[str, Any]
) -> tuple[Path, Path]:
    """Write ``STEM.safetensors.zst`` and the sidecar ``STEM.json`` (both atomically).

    The sidecar is ``meta`` plus ``"file"`` (the results file's name) and ``"tensors"``
    (``{name: {"dtype", "shape"}}``); it is written after the results file, so a sidecar
    never describes a file that is not there.
    """
    data_path, sidecar_path = results_paths(stem)
    write_safetensors(data_path, tensors, meta, compress=True)
    sidecar = {
        **meta,
        "file": data_path.name,
        "tensors": {
            name: {"dtype": _DTYPES[t.dtype], "shape": list(t.shape)} for name, t in tensors.items()
        },
    }
    atomic_write_json(sidecar_path, sidecar)
    return data_path, sidecar_path


# -- reading --------------------------------------------------------------------------------------


class ResultsFile:
    """Read a results file (``.safetensors`` or ``.safetensors.zst``) without loading it whole.

    ``meta`` is the :data:`METADATA_KEY` JSON; :meth:`read` gives a whole tensor,
    :meth:`read_range` a contiguous slice of its flattened elements and :meth:`read_elements`
    arbitrary flattened elements, decompressing only the frames that hold them.
    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.handle: BinaryIO = open(self.path, "rb")  # noqa: SIM115 (closed by close())
        except OSError as err:
            raise UsageError(f"{self.path} cannot be opened ({err.strerror}).") from err
        try:
            self._open()
        except UsageError:
            self.close()
            raise
        except Exception as err:  # zstd / JSON / struct errors all mean "not a results file"
            self.close()
            raise UsageError(
                f"{self.path} is not a readable results file (safetensors, optionally "
                f"zstd-compressed): {type(err).__name__}: {err}."
            ) from err

    def _open(self) -> None:
        self.handle.seek(0, 2)
        size = self.handle.tell()
        self.handle.seek(0)
        magic = self.handle.read(4)
        if magic == ZSTD_MAGIC:
            table = seek_table(self.handle, size)
            self.frames: Frames = (
                SeekableFrames(self.handle, table) if table else StreamFrames(self.handle)
            )
        else:
            self.frames = PlainFrames(self.handle, size)
        (header_len,) = struct.unpack("<Q", self._bytes(0, 8))
        if header_len > 100 * 2**20:
            raise ValueError(f"header length {header_len} is implausible")
        header = json.loads(self._bytes(8, 8 + header_len))
        self.data_start = 8 + header_len
        metadata = header.pop("__metadata__", None) or {}
        self.meta: dict[str, Any] = json.loads(metadata.get(METADATA_KEY, "{}"))
        self.header: dict[str, dict] = header
        end = self.data_start + max((v["data_offsets"][1] for v in header.values()), default=0)
        if isinstance(self.frames, PlainFrames) and end > size:
            raise ValueError(f"the file is truncated ({size} bytes, the header needs {end})")
        if isinstance(self.frames, SeekableFrames) and end > self.frames.starts[-1]:
            raise ValueError(f"the data is truncated ({self.frames.starts[-1]} of {end} bytes)")

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- description --

    def keys(self) -> list[str]:
        return list(self.header)

    def _entry(self, key: str) -> dict:
        if key not in self.header:
            raise UsageError(
                f"{self.path} has no tensor {key!r}; it has {', '.join(self.header) or 'none'}."
            )
        return self.header[key]

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._entry(key)["shape"])

    def dtype(self, key: str) -> torch.dtype:
        return _TORCH_DTYPES[self._entry(key)["dtype"]]

    def numel(self, key: str) -> int:
        return int(np.prod(self.shape(key), dtype=np.int64))

    # -- data --

    def _read_into(self, start: int, out: np.ndarray) -> None:
        """Fill the uint8 array ``out`` with the uncompressed bytes from ``start`` on."""
        stop, pos = start + out.size, 0
        k = self.frames.block_of(start)
        while start < stop:
            block = self.frames.get(k)
            if not block:
                raise ValueError(f"the data ends at byte {start}, before byte {stop}")
            block_start = self.frames.start_of(k)
            piece = memoryview(block)[start - block_start : stop - block_start]
            out[pos : pos + len(piece)] = np.frombuffer(piece, dtype=np.uint8)
            pos += len(piece)
            start += len(piece)
            k += 1

    def _bytes(self, start: int, stop: int) -> bytes:
        out = np.empty(stop - start, dtype=np.uint8)
        self._read_into(start, out)
        return out.tobytes()

    def read_range(self, key: str, start: int, stop: int) -> torch.Tensor:
        """Flattened elements ``[start, stop)`` of tensor ``key`` (1-D)."""
        n = self.numel(key)
        if not 0 <= start <= stop <= n:
            raise UsageError(
                f"elements {start}..{stop} are outside {key!r} (0..{n}) in {self.path}."
            )
        dtype = self.dtype(key)
        out = torch.empty(stop - start, dtype=dtype)
        if stop > start:
            base = self.data_start + self._entry(key)["data_offsets"][0]
            try:
                self._read_into(base + start * dtype.itemsize, out.view(torch.uint8).numpy())
            except UsageError:
                raise
            except Exception as err:
                raise UsageError(
                    f"{self.path} cannot be read inside tensor {key!r} "
                    f"({type(err).__name__}: {err}); the file is corrupt or truncated."
                ) from err
        return out

    def read(self, key: str) -> torch.Tensor:
        """The whole tensor ``key``."""
        return self.read_range(key, 0, self.numel(key)).reshape(self.shape(key))

    def read_elements(self, key: str, indices: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Flattened elements at ``indices`` of tensor ``key`` (any order, repeats allowed).

        Each frame holding a wanted element is decompressed once, in file order, so the cost is
        bounded by one pass over the file and the memory by one frame plus the output.
        """
        idx = np.asarray(torch.as_tensor(indices, dtype=torch.long).reshape(-1).numpy())
        n = self.numel(key)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise UsageError(f"element ids must lie in 0..{n - 1} for {key!r} in {self.path}.")
        dtype = self.dtype(key)
        np_dtype = torch.empty(0, dtype=dtype).numpy().dtype if dtype != torch.bfloat16 else None
        if np_dtype is None:  # numpy has no bfloat16: gather element by element
            return torch.cat([self.read_range(key, int(i), int(i) + 1) for i in idx])
        out = np.empty(idx.size, dtype=np_dtype)
        byte_pos = self.data_start + self._entry(key)["data_offsets"][0] + idx * dtype.itemsize
        order = np.argsort(byte_pos, kind="stable")
        sorted_pos = byte_pos[order]
        blocks = np.array([self.frames.block_of(int(p)) for p in sorted_pos], dtype=np.int64)
        for k in np.unique(blocks):
            block = self.frames.get(int(k))
            block_start = self.frames.start_of(int(k))
            chosen = np.nonzero(blocks == k)[0]
            local = sorted_pos[chosen] - block_start
            if len(block) < int(local.max()) + dtype.itemsize:
                raise UsageError(f"{self.path} is truncated inside tensor {key!r}.")
            values = np.frombuffer(block, dtype=np.uint8)
            gathered = np.stack([values[local + b] for b in range(dtype.itemsize)], axis=1)
            out[order[chosen]] = gathered.reshape(-1).view(np_dtype)
        return torch.from_numpy(out)

    def iter_ranges(self, key: str, chunk: int) -> Iterator[tuple[int, torch.Tensor]]:
        """``(start, elements[start:start + chunk])`` over the flattened tensor ``key``."""
        n = self.numel(key)
        for start in range(0, n, chunk):
            yield start, self.read_range(key, start, min(start + chunk, n))


class StoredTensors(Mapping[str, torch.Tensor]):
    """A results file's tensors, each read when asked for; :meth:`open` for partial reads."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with ResultsFile(self.path) as results:
            self._keys = results.keys()

    def open(self) -> ResultsFile:
        return ResultsFile(self.path)

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._keys:
            raise KeyError(key)
        with self.open() as results:
            return results.read(key)

    def __contains__(self, key: object) -> bool:
        # Mapping's own __contains__ does self[key], which reads the whole tensor.
        return key in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def read_meta(path: str | Path) -> dict[str, Any]:
    """The metadata of a results file, or the contents of a sidecar ``.json``."""
    path = Path(path)
    if path.suffix == ".json":
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise UsageError(f"{path} is not a readable JSON sidecar ({err}).") from err
    with ResultsFile(path) as results:
        return results.meta
