"""Request bodies: gzip and deflate, the caps on compressed and decompressed size, and gzip bombs."""

from __future__ import annotations

import gzip
import time
import tracemalloc
import zlib

import pytest

from agentsight_otel.bridge.decode import JSON, PROTOBUF, RequestError, decompress, media_type

PAYLOAD = b"otlp bytes " * 1000


def _bomb(size: int) -> bytes:
    """A gzip body of ``size`` zero bytes, built in pieces (it is about 1000 times smaller than ``size``)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(1 << 20)
    parts = [packer.compress(chunk) for _ in range(size >> 20)]
    parts.append(packer.flush())
    return b"".join(parts)


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        (None, PAYLOAD),
        ("identity", PAYLOAD),
        ("gzip", gzip.compress(PAYLOAD)),
        ("x-gzip", gzip.compress(PAYLOAD)),
        ("GZIP", gzip.compress(PAYLOAD)),
        ("deflate", zlib.compress(PAYLOAD)),  # zlib-wrapped, as HTTP defines it (and the Python OTLP exporter sends)
        ("deflate", zlib.compress(PAYLOAD)[2:-4]),  # raw deflate, as some clients send it
        ("gzip", gzip.compress(PAYLOAD[:5000]) + gzip.compress(PAYLOAD[5000:])),  # two gzip members
        ("gzip, identity", gzip.compress(PAYLOAD)),
    ],
)
def test_content_encodings(encoding, body):
    assert decompress(body, encoding, 1 << 20) == PAYLOAD


def test_unknown_encodings_are_415():
    for encoding in ("br", "zstd", "snappy"):
        with pytest.raises(RequestError) as caught:
            decompress(b"x", encoding, 100)
        assert caught.value.status == 415


def test_broken_and_truncated_bodies_are_400():
    for body in (b"not gzip at all", gzip.compress(PAYLOAD)[:-20], gzip.compress(PAYLOAD)[:30]):
        with pytest.raises(RequestError) as caught:
            decompress(body, "gzip", 1 << 20)
        assert caught.value.status == 400


def test_caps_on_plain_and_decompressed_size():
    assert decompress(PAYLOAD, None, len(PAYLOAD)) == PAYLOAD
    with pytest.raises(RequestError) as caught:
        decompress(PAYLOAD, None, len(PAYLOAD) - 1)
    assert caught.value.status == 413
    assert decompress(gzip.compress(PAYLOAD), "gzip", len(PAYLOAD)) == PAYLOAD
    for encoding, body in (("gzip", gzip.compress(PAYLOAD)), ("deflate", zlib.compress(PAYLOAD))):
        with pytest.raises(RequestError) as caught:
            decompress(body, encoding, len(PAYLOAD) - 1)
        assert caught.value.status == 413


def test_a_gzip_bomb_is_refused_without_being_inflated():
    bomb = _bomb(256 << 20)  # 256 MiB of zeros in about 256 KB
    assert len(bomb) < 1 << 20
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(RequestError) as caught:
            decompress(bomb, "gzip", 4 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.status == 413
    assert peak < 16 << 20, f"inflating used {peak} bytes"
    assert time.monotonic() - started < 2.0


def test_a_bomb_hidden_in_a_later_gzip_member_is_refused_too():
    body = gzip.compress(b"small") + _bomb(64 << 20)
    with pytest.raises(RequestError) as caught:
        decompress(body, "gzip", 1 << 20)
    assert caught.value.status == 413


def test_media_types():
    assert media_type("application/x-protobuf") == PROTOBUF
    assert media_type("application/protobuf") == PROTOBUF
    assert media_type("Application/JSON; charset=utf-8") == JSON
    assert media_type("text/plain") is None
    assert media_type(None) is None
