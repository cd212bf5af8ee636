"""node_id_from_seed against vectors, and against an independent BIP32 implementation."""

import hashlib
import os

import pytest
from bip32 import BIP32

import flotilla


def bip32_node_id(seed: bytes) -> str:
    """The key LDK's KeysManager uses as node key: m/0' of the BIP32 master key of the seed."""
    return BIP32.from_seed(seed).get_pubkey_from_path("m/0'").hex()


def test_zero_seed_known_value():
    assert (
        flotilla.node_id_from_seed(bytes(32))
        == "027f921585f2ac0c7c70e36110adecfd8fd14b8a99bfb3d000a283fcac358fce88"
    )


def test_vectors_match_flotilla_and_bip32(vectors):
    for seed, expected in vectors:
        assert bip32_node_id(seed) == expected, "vector file disagrees with BIP32"
        assert flotilla.node_id_from_seed(seed) == expected


@pytest.mark.parametrize("i", range(20))
def test_random_seeds_match_bip32(i):
    seed = hashlib.sha256(os.urandom(16) + bytes([i])).digest()
    assert flotilla.node_id_from_seed(seed) == bip32_node_id(seed)


def test_non_bytes_is_refused():
    with pytest.raises(TypeError):
        flotilla.node_id_from_seed("00" * 32)  # type: ignore[arg-type]


@pytest.mark.parametrize("length", [0, 1, 31, 33, 64])
def test_wrong_length_is_typed_error(length):
    with pytest.raises(flotilla.FlotillaError.InvalidSeed) as info:
        flotilla.node_id_from_seed(bytes(length))
    assert isinstance(info.value, flotilla.FlotillaError)
    assert f"got {length}" in str(info.value)


def test_type_hints_present():
    hints = flotilla.node_id_from_seed.__annotations__
    assert hints.get("return") in (str, "str")
    assert "seed" in hints
