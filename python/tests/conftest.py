"""Shared fixtures: the node id vectors every language's tests run."""

from pathlib import Path

import pytest

VECTORS = Path(__file__).resolve().parents[2] / "bindings" / "tests" / "vectors" / "node_id.txt"


def load_vectors() -> list[tuple[bytes, str]]:
    rows = []
    for line in VECTORS.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            seed_hex, node_id = line.split()
            rows.append((bytes.fromhex(seed_hex), node_id))
    return rows


@pytest.fixture(scope="session")
def vectors() -> list[tuple[bytes, str]]:
    rows = load_vectors()
    assert len(rows) >= 5, f"too few vectors in {VECTORS}"
    return rows
