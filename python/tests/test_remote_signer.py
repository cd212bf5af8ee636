"""RemoteSigner end to end: the bindings' signer holds a hosted node's keys, dials a real
`flotilla host` over TLS (btcd regtest, real channel, real payments) and asks the app's
PaymentApprover before each outgoing payment. Declines and failing approvers refuse the payment
and leave the host consistent."""

import hashlib
import threading

import pytest

from flotilla import (
    FlotillaError,
    Network,
    PaymentApprover,
    PaymentToApprove,
    PolicyLimits,
    RemoteSigner,
    SignerConfig,
    node_id_from_seed,
)
from hosted import Host, HostError, Regtest

PAYER_SEED = hashlib.sha256(b"flotilla python payer").digest()
PAYEE_SEED = hashlib.sha256(b"flotilla python payee").digest()
FUND_SAT = 1_000_000
CHANNEL_SAT = 500_000
PAY_MSAT = 7_000_000


class Approver(PaymentApprover):
    """Answers with `decision` ("yes", "no" or "raise") and records what it was shown."""

    def __init__(self):
        self.decision = "yes"
        self.seen: list[PaymentToApprove] = []
        self.threads: set[str] = set()

    def approve(self, payment: PaymentToApprove) -> bool:
        self.seen.append(payment)
        self.threads.add(threading.current_thread().name)
        if self.decision == "raise":
            raise RuntimeError("the approval screen crashed")
        return self.decision == "yes"


@pytest.fixture(scope="module")
def hosted(tmp_path_factory):
    """A host with a payer and a payee node, both signed for by RemoteSigners in this process,
    and a usable channel from payer to payee."""
    dir = tmp_path_factory.mktemp("hosted")
    chain = Regtest(dir / "regtest")
    host = None
    signers = []
    try:
        chain.mine(101)
        host = Host(dir, chain.chain_json, {
            "payer": node_id_from_seed(PAYER_SEED),
            "payee": node_id_from_seed(PAYEE_SEED),
        })
        approver = Approver()
        for name, seed, hook in [("payer", PAYER_SEED, approver), ("payee", PAYEE_SEED, None)]:
            config = SignerConfig(seed, host.hub_url, PolicyLimits(max_payment_msat=50_000_000))
            signers.append(RemoteSigner.start(config, Network.REGTEST, host.ca_pem,
                                              str(dir / f"{name}-state"), hook))
        host.ready()
        host.open_channel(chain, "payer", "payee", FUND_SAT, CHANNEL_SAT)
        yield host, approver, signers[0], dir
    finally:
        for signer in signers:
            signer.stop()
        if host is not None:
            host.close()
        chain.down()


def pay(host: Host, msat: int = PAY_MSAT):
    invoice = host.call("invoice", node="payee", msat=msat)
    return host.call("pay", node="payer", invoice=invoice)


def settled(host: Host) -> dict:
    """The payer's channel once no HTLC is in flight (a payment succeeds before its HTLC is
    removed from both commitments)."""
    return host.wait_for("settled channel", "channels", lambda c: c[0]["pending_htlcs"] == 0,
                         node="payer")[0]


def test_approved_payment_is_signed_and_settles(hosted):
    host, approver, signer, _ = hosted
    approver.decision = "yes"
    before = settled(host)["outbound_msat"]
    paid = pay(host)
    shown = approver.seen[-1]
    # What the approver was shown is the payment that settled: its hash is the preimage's.
    assert shown.payment_hash == hashlib.sha256(bytes.fromhex(paid["preimage"])).hexdigest()
    assert shown.amount_msat == PAY_MSAT
    assert shown.destination == host.nodes["payee"]["node_id"]
    assert before - settled(host)["outbound_msat"] == PAY_MSAT + paid["fee_msat"]
    # The approver runs on the signer's thread, not the caller's.
    assert "MainThread" not in approver.threads
    status = signer.status()
    assert status.running and status.attaches >= 1 and status.answered > 0


@pytest.mark.parametrize("decision", ["no", "raise"])
def test_declined_payment_is_refused_and_nothing_moves(hosted, decision):
    host, approver, signer, _ = hosted
    approver.decision = decision
    before = settled(host)["outbound_msat"]
    asked = len(approver.seen)
    with pytest.raises(HostError, match="approval_declined"):
        pay(host)
    assert len(approver.seen) == asked + 1
    channel = host.call("channels", node="payer")[0]
    assert channel["outbound_msat"] == before
    assert channel["pending_htlcs"] == 0, "a refused payment must not add an HTLC"
    failed = [p for p in host.call("payments", node="payer") if p["status"] != "succeeded"]
    assert failed == [], "a refused payment must not leave a payment behind"
    # The signer carries on, and the next approved payment goes through.
    assert signer.status().running
    approver.decision = "yes"
    pay(host)


def test_policy_limit_refuses_before_the_approver_is_asked(hosted):
    host, approver, _, _ = hosted
    approver.decision = "yes"
    asked = len(approver.seen)
    with pytest.raises(HostError, match="max_payment"):
        pay(host, msat=60_000_000)
    assert len(approver.seen) == asked


def test_second_signer_on_the_same_state_is_refused(hosted):
    host, _, _, dir = hosted
    config = SignerConfig(PAYER_SEED, host.hub_url, PolicyLimits())
    with pytest.raises(FlotillaError.StateUnavailable):
        RemoteSigner.start(config, Network.REGTEST, host.ca_pem, str(dir / "payer-state"), None)


def test_bad_ca_is_refused(tmp_path):
    config = SignerConfig(PAYER_SEED, "https://127.0.0.1:1", PolicyLimits())
    with pytest.raises(FlotillaError.InvalidCa):
        RemoteSigner.start(config, Network.REGTEST, "not a certificate", str(tmp_path), None)


def test_stop_is_idempotent(tmp_path, hosted):
    host, _, _, _ = hosted
    config = SignerConfig(hashlib.sha256(b"unregistered").digest(), host.hub_url, PolicyLimits())
    signer = RemoteSigner.start(config, Network.REGTEST, host.ca_pem, str(tmp_path), None)
    signer.stop()
    signer.stop()
    assert not signer.status().running
