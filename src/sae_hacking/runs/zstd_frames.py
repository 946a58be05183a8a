"""Zstd frames with a seek table (the *zstd seekable format*), written and read block by block.

The writer cuts the byte stream into independent frames of :data:`FRAME_BYTES` uncompressed
bytes and appends a seek table in a skippable frame (ordinary decoders ignore it, so ``zstd -d``
decompresses the file as usual). Readers present a file's uncompressed bytes as numbered blocks:
with a seek table any block is one seek and one frame's decompression; without one (a file
recompressed by another tool) blocks come from a sequential streaming pass; plain files are
read by seeking. :mod:`sae_hacking.runs.results` builds safetensors reads on these blocks.
"""

from __future__ import annotations

import abc
import bisect
import struct
from typing import BinaryIO

FRAME_BYTES = 16 * 2**20  # uncompressed bytes per zstd frame (a multiple of every itemsize)
ZSTD_LEVEL = 3
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_SKIPPABLE_MAGIC = 0x184D2A5E
_SEEKABLE_MAGIC = 0x8F92EAB1
_SEEK_FOOTER = 9  # number of frames (4), descriptor (1), magic (4)


class FrameSink:
    """Write a byte stream to ``handle`` as zstd frames of ``FRAME_BYTES`` plus a seek table,
    or unchanged when ``compress`` is false."""

    def __init__(self, handle: BinaryIO, compress: bool):
        self.handle = handle
        self.compress = compress
        self.buffer = bytearray()
        self.frames: list[tuple[int, int]] = []  # (compressed size, uncompressed size)
        if compress:
            import zstandard

            self.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True)

    def write(self, data: memoryview | bytes) -> None:
        if not self.compress:
            self.handle.write(data)
            return
        data = memoryview(data)
        while len(data):
            if not self.buffer and len(data) >= FRAME_BYTES:  # a whole frame: no buffer copy
                self._frame(data[:FRAME_BYTES])
                data = data[FRAME_BYTES:]
                continue
            take = min(FRAME_BYTES - len(self.buffer), len(data))
            self.buffer += data[:take]
            data = data[take:]
            if len(self.buffer) == FRAME_BYTES:
                self._flush()

    def _frame(self, data: memoryview | bytearray) -> None:
        frame = self.compressor.compress(data)
        self.handle.write(frame)
        self.frames.append((len(frame), len(data)))

    def _flush(self) -> None:
        if self.buffer:
            self._frame(self.buffer)
            self.buffer.clear()

    def close(self) -> None:
        if not self.compress:
            return
        self._flush()
        table = b"".join(struct.pack("<II", c, u) for c, u in self.frames)
        table += struct.pack("<IBI", len(self.frames), 0, _SEEKABLE_MAGIC)
        self.handle.write(struct.pack("<II", _SKIPPABLE_MAGIC, len(table)) + table)


class Frames(abc.ABC):
    """The uncompressed byte stream of a file as numbered blocks ``[starts[k], starts[k+1])``."""

    starts: list[int]

    def block_of(self, offset: int) -> int:
        return bisect.bisect_right(self.starts, offset) - 1

    def start_of(self, k: int) -> int:
        return self.starts[k]

    @abc.abstractmethod
    def get(self, k: int) -> bytes:
        """The uncompressed bytes of block ``k`` (empty past the end)."""


class PlainFrames(Frames):
    def __init__(self, handle: BinaryIO, size: int):
        self.handle = handle
        self.starts = list(range(0, size, FRAME_BYTES)) + [size]

    def get(self, k: int) -> bytes:
        if k + 1 >= len(self.starts):
            return b""
        self.handle.seek(self.starts[k])
        return self.handle.read(self.starts[k + 1] - self.starts[k])


class SeekableFrames(Frames):
    def __init__(self, handle: BinaryIO, table: list[tuple[int, int]]):
        import zstandard

        self.handle = handle
        self.decompressor = zstandard.ZstdDecompressor()
        self.offsets = [0]
        self.starts = [0]
        for c_size, u_size in table:
            self.offsets.append(self.offsets[-1] + c_size)
            self.starts.append(self.starts[-1] + u_size)

    def get(self, k: int) -> bytes:
        if k + 1 >= len(self.offsets):
            return b""
        self.handle.seek(self.offsets[k])
        frame = self.handle.read(self.offsets[k + 1] - self.offsets[k])
        return self.decompressor.decompress(frame)


class StreamFrames(Frames):
    """A zstd file without a seek table: blocks of ``FRAME_BYTES`` from a sequential pass
    (restarted when an earlier block is asked for). Its length is unknown until the end."""

    def __init__(self, handle: BinaryIO):
        self.handle = handle
        self.starts = [0]
        self._restart()

    def _restart(self) -> None:
        import zstandard

        self.handle.seek(0)
        self.reader = zstandard.ZstdDecompressor().stream_reader(
            self.handle, read_across_frames=True, closefd=False
        )
        self.next_block = 0

    def block_of(self, offset: int) -> int:
        return offset // FRAME_BYTES

    def start_of(self, k: int) -> int:
        return k * FRAME_BYTES

    def get(self, k: int) -> bytes:
        if k < self.next_block:
            self._restart()
        while True:
            block = self.reader.read(FRAME_BYTES)
            while 0 < len(block) < FRAME_BYTES:  # a short read is not necessarily the end
                more = self.reader.read(FRAME_BYTES - len(block))
                if not more:
                    break
                block += more
            self.next_block += 1
            if self.next_block - 1 == k:
                return block
            if not block:
                return b""


def seek_table(handle: BinaryIO, size: int) -> list[tuple[int, int]] | None:
    if size < 8 + _SEEK_FOOTER:
        return None
    handle.seek(size - _SEEK_FOOTER)
    n_frames, descriptor, magic = struct.unpack("<IBI", handle.read(_SEEK_FOOTER))
    if magic != _SEEKABLE_MAGIC:
        return None
    entry = 12 if descriptor & 0x80 else 8
    table_size = n_frames * entry + _SEEK_FOOTER
    if table_size + 8 > size:
        return None
    handle.seek(size - table_size - 8)
    skip_magic, frame_size = struct.unpack("<II", handle.read(8))
    if skip_magic != _SKIPPABLE_MAGIC or frame_size != table_size:
        return None
    raw = handle.read(n_frames * entry)
    return [struct.unpack_from("<II", raw, i * entry) for i in range(n_frames)]
