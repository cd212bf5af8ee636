"""SignerConfig's validating constructor: every bad input is a FlotillaError subclass."""

import pytest

import flotilla
from flotilla import FlotillaError, PolicyLimits, SignerConfig

SEED = bytes(range(32))
URL = "https://host.example:9735"
MAX_MSAT = 21_000_000 * 100_000_000 * 1000
MAX_SAT = 21_000_000 * 100_000_000


def test_valid_config(vectors):
    seed, node_id = vectors[3]
    limits = PolicyLimits(max_payment_msat=1_000, max_outgoing_msat_per_hour=MAX_MSAT, max_fee_sat=0)
    cfg = SignerConfig(seed, URL, limits)
    assert cfg.node_id() == node_id
    assert cfg.host_url() == URL
    assert cfg.limits() == limits


def test_limits_default_to_a_phone_wallets_and_none_lifts_them():
    limits = PolicyLimits()
    assert (limits.max_payment_msat, limits.max_outgoing_msat_per_hour, limits.max_fee_sat) == (
        1_000_000_000,
        5_000_000_000,
        20_000,
    )
    assert SignerConfig(SEED, URL, limits).limits() == limits
    unlimited = PolicyLimits(max_payment_msat=None, max_outgoing_msat_per_hour=None, max_fee_sat=None)
    assert SignerConfig(SEED, URL, unlimited).limits().max_payment_msat is None


def test_bad_seed():
    with pytest.raises(FlotillaError.InvalidSeed):
        SignerConfig(bytes(31), URL, PolicyLimits())


@pytest.mark.parametrize(
    "url",
    ["", "host.example", "ftp://host.example", "https://", "https://u:p@host.example",
     "https://host.example:99999", " https://host.example", "https://host.example\n"],
)
def test_bad_url(url):
    with pytest.raises(FlotillaError.InvalidHostUrl):
        SignerConfig(SEED, url, PolicyLimits())


@pytest.mark.parametrize(
    "limits",
    [
        PolicyLimits(max_payment_msat=-1),
        PolicyLimits(max_outgoing_msat_per_hour=-(2**63)),
        PolicyLimits(max_fee_sat=-5),
        PolicyLimits(max_payment_msat=MAX_MSAT + 1),
        PolicyLimits(max_outgoing_msat_per_hour=2**63 - 1),
        PolicyLimits(max_fee_sat=MAX_SAT + 1),
    ],
)
def test_bad_limits(limits):
    with pytest.raises(FlotillaError.InvalidLimit):
        SignerConfig(SEED, URL, limits)


def test_limits_at_bound_pass():
    limits = PolicyLimits(max_payment_msat=MAX_MSAT, max_outgoing_msat_per_hour=MAX_MSAT, max_fee_sat=MAX_SAT)
    assert SignerConfig(SEED, URL, limits).limits() == limits


def test_error_classes_form_a_hierarchy():
    for cls in (FlotillaError.InvalidSeed, FlotillaError.InvalidHostUrl, FlotillaError.InvalidLimit):
        assert issubclass(cls, FlotillaError)
        assert issubclass(cls, Exception)
    assert flotilla.FlotillaError is FlotillaError
