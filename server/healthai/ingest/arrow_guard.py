"""How large an Arrow IPC stream becomes once decoded, read from its messages before decoding any.

A record batch may be compressed (LZ4 frame or ZSTD, per buffer): a few kilobytes on the wire can hold
gigabytes once read, so the decoded size must be known before ``read_all``. Arrow's IPC format says it:
each compressed buffer of a body starts with its uncompressed length (int64, little-endian; -1 when the
buffer was left uncompressed), and each message's flatbuffer metadata lists the body's buffers
(``RecordBatch.buffers``: offset and length). This module reads just those fields, with a minimal
flatbuffer reader (the schema is fixed: ``Message.fbs`` / ``Schema.fbs`` of the Arrow format).
"""

from __future__ import annotations

import struct

import pyarrow as pa

_RECORD_BATCH, _DICTIONARY_BATCH = 3, 2  # MessageHeader union types


class _Table:
    """A flatbuffer table: field ``i`` through its vtable."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos
        vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vt, self.vt_size = vtable, struct.unpack_from("<H", buf, vtable)[0]

    def _field(self, i: int) -> int | None:
        slot = 4 + 2 * i
        if slot >= self.vt_size:
            return None
        off = struct.unpack_from("<H", self.buf, self.vt + slot)[0]
        return self.pos + off if off else None

    def scalar(self, i: int, fmt: str, default: int = 0) -> int:
        at = self._field(i)
        return default if at is None else struct.unpack_from(fmt, self.buf, at)[0]

    def table(self, i: int) -> _Table | None:
        at = self._field(i)
        return None if at is None else _Table(self.buf, at + struct.unpack_from("<I", self.buf, at)[0])

    def structs(self, i: int, size: int) -> list[int]:
        """Positions of the elements of a vector of structs."""
        at = self._field(i)
        if at is None:
            return []
        start = at + struct.unpack_from("<I", self.buf, at)[0]
        n = struct.unpack_from("<I", self.buf, start)[0]
        return [start + 4 + k * size for k in range(n)]


def _batch_bytes(batch: _Table, body: pa.Buffer | None) -> int:
    """Decoded bytes of one record batch's buffers."""
    compressed = batch.table(3) is not None  # RecordBatch.compression
    total = 0
    for at in batch.structs(2, 16):  # RecordBatch.buffers: struct Buffer {offset: long, length: long}
        offset, length = struct.unpack_from("<qq", batch.buf, at)
        size = body.size if body is not None else 0
        if offset < 0 or length < 0 or offset + length > size:
            raise ValueError("a buffer lies outside its message body")
        if not compressed or length == 0:
            total += length
            continue
        if length < 8:
            raise ValueError("a compressed buffer is shorter than its length prefix")
        raw = struct.unpack_from("<q", body.slice(offset, 8).to_pybytes())[0]
        total += length - 8 if raw == -1 else raw
        if raw < -1:
            raise ValueError("a compressed buffer declares a negative length")
    return total


def decoded_bytes(stream: bytes | pa.Buffer) -> int:
    """The bytes the record and dictionary batches of an IPC ``stream`` take once decoded. Raises
    ValueError (or ``pa.ArrowInvalid``) on a malformed stream."""
    total = 0
    reader = pa.ipc.MessageReader.open_stream(pa.BufferReader(stream))
    for message in reader:
        meta = message.metadata.to_pybytes()
        if len(meta) < 8:
            raise ValueError("a message without metadata")
        root = _Table(meta, struct.unpack_from("<I", meta, 0)[0])
        kind = root.scalar(1, "<B")  # Message.header_type
        header = root.table(2)  # Message.header
        if header is None or kind not in (_RECORD_BATCH, _DICTIONARY_BATCH):
            continue
        batch = header if kind == _RECORD_BATCH else header.table(1)  # DictionaryBatch.data
        if batch is None:
            continue
        total += _batch_bytes(batch, message.body)
    return total
