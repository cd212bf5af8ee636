"""RemoteSigner end to end: the bindings' signer holds a hosted node's keys, dials a real
`flotilla host` over TLS (btcd regtest, real channel, real payments) and asks the app's
PaymentApprover before each outgoing payment. Declines, failing approvers and the fee cap
refuse and leave the host consistent."""

import hashlib
import sqlite3
import threading
from types import SimpleNamespace

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
CAPPED_SEED = hashlib.sha256(b"flotilla python capped").digest()
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
    """A host with three nodes, each signed for by a RemoteSigner in this process: a payer
    (with the approver) with a usable channel to a payee, and a node whose signer caps fees."""
    dir = tmp_path_factory.mktemp("hosted")
    chain = Regtest(dir / "regtest")
    host = None
    signers = {}
    try:
        chain.mine(101)
        seeds = {"payer": PAYER_SEED, "payee": PAYEE_SEED, "capped": CAPPED_SEED}
        host = Host(dir, chain.chain_json, {a: node_id_from_seed(s) for a, s in seeds.items()})
        approver = Approver()
        limits = {
            "payer": PolicyLimits(max_payment_msat=50_000_000),
            "payee": PolicyLimits(),
            "capped": PolicyLimits(max_fee_sat=10),
        }
        for alias, seed in seeds.items():
            config = SignerConfig(seed, host.hub_url, limits[alias])
            signers[alias] = RemoteSigner.start(config, Network.REGTEST, host.ca_pem,
                                                str(dir / f"{alias}-state"),
                                                approver if alias == "payer" else None)
        host.ready()
        host.open_channel(chain, "payer", "payee", FUND_SAT, CHANNEL_SAT)
        yield SimpleNamespace(host=host, chain=chain, approver=approver,
                              signer=signers["payer"], dir=dir)
    finally:
        for signer in signers.values():
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
    host, approver, signer = hosted.host, hosted.approver, hosted.signer
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
    host, approver, signer = hosted.host, hosted.approver, hosted.signer
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
    host, approver = hosted.host, hosted.approver
    approver.decision = "yes"
    asked = len(approver.seen)
    with pytest.raises(HostError, match="max_payment"):
        pay(host, msat=60_000_000)
    assert len(approver.seen) == asked


def test_second_signer_on_the_same_state_is_refused(hosted):
    config = SignerConfig(PAYER_SEED, hosted.host.hub_url, PolicyLimits())
    with pytest.raises(FlotillaError.StateUnavailable):
        RemoteSigner.start(config, Network.REGTEST, hosted.host.ca_pem,
                           str(hosted.dir / "payer-state"), None)


def test_bad_ca_is_refused(tmp_path):
    config = SignerConfig(PAYER_SEED, "https://127.0.0.1:1", PolicyLimits())
    with pytest.raises(FlotillaError.InvalidCa):
        RemoteSigner.start(config, Network.REGTEST, "not a certificate", str(tmp_path), None)


def test_stop_is_idempotent(tmp_path, hosted):
    host = hosted.host
    config = SignerConfig(hashlib.sha256(b"unregistered").digest(), host.hub_url, PolicyLimits())
    signer = RemoteSigner.start(config, Network.REGTEST, host.ca_pem, str(tmp_path), None)
    signer.stop()
    signer.stop()
    assert not signer.status().running


def test_market_feerate_reports_are_checked(tmp_path, hosted):
    host = hosted.host
    config = SignerConfig(hashlib.sha256(b"market").digest(), host.hub_url, PolicyLimits())
    signer = RemoteSigner.start(config, Network.REGTEST, host.ca_pem, str(tmp_path), None)
    signer.report_market_feerate(45.5)
    for bad in (float("nan"), -1.0, 0.5, 1e7):
        with pytest.raises(FlotillaError.InvalidFeerate):
            signer.report_market_feerate(bad)
    signer.stop()


def test_fee_cap_refuses_the_funding_and_the_host_abandons_the_channel(hosted):
    host, chain = hosted.host, hosted.chain
    chain.fund(host.call("address", node="capped"), FUND_SAT)
    host.wait_for("funded wallet", "balance",
                  lambda b: b["wallet"]["confirmed_sat"] == FUND_SAT, node="capped")
    payee = host.nodes["payee"]
    host.call("connect", node="capped", peer=payee["node_id"], addr=payee["addr"])
    host.call("open", node="capped", peer=payee["node_id"], sat=CHANNEL_SAT)
    assert host.call("channels", node="capped"), "the open starts a channel"
    # The signer refuses the funding transaction's fee (above 10 sat): the host abandons the
    # channel, spends nothing and records why in its plain events table.
    host.wait_for("channel abandoned", "channels", lambda c: c == [], node="capped")
    balance = host.call("balance", node="capped")["wallet"]
    assert balance["confirmed_sat"] == FUND_SAT
    capped = host.nodes["capped"]["node_id"]
    db = sqlite3.connect(f"file:{hosted.dir / 'host.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT data FROM events WHERE node_id = ? AND kind = 'funding_failed'",
                          (capped,)).fetchall()
    finally:
        db.close()
    assert rows, f"no funding_failed event for {capped}"
    assert "max_fee" in rows[0][0], rows
