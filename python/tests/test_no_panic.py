"""The worst inputs we found must come back as Python exceptions, never crash the interpreter."""

import ctypes

import pytest

import flotilla
from flotilla import FlotillaError, PolicyLimits, SignerConfig
from flotilla._uniffi import flotilla as ffi


def test_huge_seed():
    with pytest.raises(FlotillaError.InvalidSeed):
        flotilla.node_id_from_seed(bytes(64 << 20))


def test_huge_url_with_nul():
    url = "https://" + "x" * (1 << 20) + ".example/\0"
    with pytest.raises(FlotillaError.InvalidHostUrl):
        SignerConfig(bytes(32), url, PolicyLimits())


def test_non_ascii_url():
    with pytest.raises(FlotillaError.InvalidHostUrl):
        SignerConfig(bytes(32), "https://\u2603\U0001f600:-1", PolicyLimits())


def test_int_beyond_64_bits_is_refused_before_rust():
    # Python ints have no width; the generated converter refuses what does not fit an i64.
    with pytest.raises((ValueError, OverflowError, TypeError)):
        SignerConfig(bytes(32), "https://h.example", PolicyLimits(max_fee_sat=2**64))


def _call_node_id_raw(buf):
    return ffi._uniffi_rust_call_with_error(
        ffi._UniffiFfiConverterTypeFlotillaError,
        ffi._UniffiLib.uniffi_flotilla_fn_func_node_id_from_seed,
        buf,
    )


@pytest.mark.parametrize(
    "payload",
    [
        b"\x00\xa0\x00\x00" + bytes(4),  # claims 10 MiB of seed, holds 4 bytes
        b"\xff\xff\xff\xff" + bytes(32),  # negative length
        b"\x00\x00\x00\x20" + bytes(40),  # 32-byte seed followed by trailing garbage
        b"\x00\x00",  # not even a length prefix
    ],
)
def test_corrupt_buffer_is_an_error_not_a_crash(payload):
    """Bypass the generated wrapper and hand Rust a malformed argument buffer. The scaffolding
    must refuse it through the call status, so Python raises instead of the process aborting.
    Uses private names of the generated module."""
    buf = ffi._UniffiRustBuffer.alloc(len(payload))
    ctypes.memmove(buf.data, payload, len(payload))
    buf.len = len(payload)
    with pytest.raises(ffi.InternalError, match="seed"):
        _call_node_id_raw(buf)
    assert flotilla.node_id_from_seed(bytes(32)).startswith("02")


def test_rust_panic_becomes_internal_error():
    """A null buffer that claims 8 bytes trips an assertion inside the Rust library: a real
    panic. It must reach Python as InternalError, and the library must keep working."""
    with pytest.raises(ffi.InternalError, match="null RustBuffer"):
        _call_node_id_raw(ffi._UniffiRustBuffer(8, 8, None))
    assert flotilla.node_id_from_seed(bytes(32)).startswith("02")


def test_lone_surrogate_is_refused_before_rust():
    with pytest.raises(UnicodeEncodeError):
        SignerConfig(bytes(32), "https://\ud800.example", PolicyLimits())
