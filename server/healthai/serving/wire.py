"""Packed repeated floats between a message's wire form and NumPy, without one Python float per value.

- ``packed_float32`` (read): the message is re-serialized (C speed; upb writes one packed chunk per
  field) and the field's bytes are viewed with ``np.frombuffer``. About 30× faster than iterating the
  repeated field at 55,000 values; used for large arrays only (small ones iterate faster than they
  serialize).
- ``extend_float32`` (write): the array's little-endian bytes as one packed chunk of the field, merged
  into the message (``MergeFromString`` appends to a repeated field, as ``extend`` does). At 360,000
  values about 50× faster than ``extend(array.tolist())``; the same float32 bits.
"""

from __future__ import annotations

import numpy as np
from google.protobuf.message import Message

WIRE_VARINT, WIRE_I64, WIRE_LEN, WIRE_I32 = 0, 1, 2, 5
PACKED_FAST_MIN = 4096  # packed values from which reading the wire bytes beats iterating the field


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def extend_float32(message: Message, field_name: str, values: np.ndarray) -> None:
    """Append ``values`` (any shape, flattened in C order, cast to float32) to the packed ``repeated
    float`` field ``field_name`` of ``message``."""
    field = message.DESCRIPTOR.fields_by_name[field_name]
    if field.type != field.TYPE_FLOAT or not field.is_repeated:
        raise TypeError(f"{field.full_name} is not a repeated float field")
    with np.errstate(over="ignore"):  # beyond float32: inf, as the field's own conversion gives
        data = np.ascontiguousarray(values, dtype="<f4").tobytes()
    if data:
        key = _encode_varint((field.number << 3) | WIRE_LEN)
        message.MergeFromString(key + _encode_varint(len(data)) + data)


def packed_float32(message: Message, field_name: str, count: int) -> np.ndarray:
    """The ``count`` values of the packed ``repeated float`` field ``field_name`` as float32 [count]."""
    number = message.DESCRIPTOR.fields_by_name[field_name].number
    buf = message.SerializeToString()
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        wire = key & 7
        if wire == WIRE_LEN:
            size, pos = _varint(buf, pos)
            if key >> 3 == number and size == 4 * count:
                return np.frombuffer(buf, "<f4", count=count, offset=pos).astype(np.float32, copy=False)
            pos += size
        elif wire == WIRE_VARINT:
            _, pos = _varint(buf, pos)
        elif wire == WIRE_I64:
            pos += 8
        elif wire == WIRE_I32:
            pos += 4
        else:
            break
    # not one packed chunk (never seen from upb): the per-value path, same result
    return np.fromiter(getattr(message, field_name), dtype=np.float32, count=count)
