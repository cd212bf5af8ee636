//! A property of the whole signer: whatever a host asks, in any order, what the customer can
//! claim on chain never drops by more than the spending the signer approved plus bounded fees.
//!
//! The rules each guard one request; an attack is a sequence of requests, each of which looks
//! fine alone. So proptest draws sequences from a model of a host that is partly honest and
//! partly malicious (payments approved or not, channels opened both ways, commitments both
//! ways with random splits, HTLCs and fees, forged peer signatures, revocations, secret
//! releases, closes, sweeps, PSBTs with any sighash, key path and amount proof), sends them to
//! a real `SeedSigner`, and keeps its own ledger of what the signer's answers give away. The
//! ledger never asks the signer what it remembers: it is the customer's worst case computed
//! from the signatures that left the signer.
//!
//! The model, and why each choice:
//! - A channel is worth what the peer and a colluding host can force on chain: the minimum,
//!   over every transaction the signer signed that can still be broadcast, of our balance in
//!   it. That is every commitment signed for the peer that the peer has not revoked (revoked
//!   ones are punished, assuming a watcher), every holder commitment the signer signed for
//!   broadcast (worth 0 once its secret is released: the peer takes all), every mutual close
//!   (worth our output if it pays our own script), and the customer's own way out: the newest
//!   holder commitment the signer validated, if the peer really signed it. Without that way
//!   out a funded channel is worth 0 (the peer can hold it hostage).
//! - The loss of a channel is measured from what its approved open gives us (its value less
//!   the push when we fund it, nothing when the peer does), per channel and never offset by
//!   another channel's gains. Value received later is not protected by this property: a gain
//!   the host then hands back to the peer goes unnoticed (the property is about the customer's
//!   own money, as the issue states it).
//! - An outgoing HTLC of an approved payment counts as still ours while it is pending and as
//!   approved spending once a later commitment drops it (fulfilled or failed: the model cannot
//!   tell, so a failed one is slack, never a false alarm). Its amount is not held to the
//!   approval: the payment and velocity limits are outside this property. An outgoing HTLC of
//!   a payment never approved is lost at once; HTLCs offered to us are never ours.
//! - The wallet: every coin is the customer's. The model checks each signature the signer
//!   returns against the coin's true amount and script (not the PSBT's claims): a valid
//!   SIGHASH_NONE signature loses the coin, a SIGHASH_SINGLE one all but its paired output,
//!   and a transaction is spendable once every input holds a valid ALL signature, from any
//!   request (two requests lying about different inputs combine). A spendable transaction
//!   loses all its inputs but what it pays the wallet or the funding of an approved channel
//!   (that output, at the outpoint the channel's commitments spend, moves value into the
//!   channel, where the channel's own rule takes over). Sweeps likewise.
//! - Bounded fees: the fee cap once per channel (its commitments: only one confirms), once per
//!   signed close, per spendable wallet transaction and per sweep, plus the policy's 1 sat of
//!   rounding per accepted commitment.
//! - A channel we fund counts as funded from its approval on (its commitments would spend
//!   the funding whether or not the wallet signed it yet): a loss there is a loss once funded.
//!
//! - Commitment fees: the host picks each commitment's feerate, above the cap at times, and
//!   at times hands a lowered fee to the peer instead of the funder (the ratchet of attack 3);
//!   it may release the secret of a holder commitment it already had signed for broadcast.
//!
//! `PROPTEST_CASES` sets the number of sequences (256 by default).

use std::collections::{BTreeMap, BTreeSet};

use bitcoin::bip32::ChildNumber;
use bitcoin::psbt::PsbtSighashType;
use bitcoin::sighash::SighashCache;
use bitcoin::EcdsaSighashType;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::fee_cap::MIN_FEERATE_PER_KW;

use super::*;

/// The fee cap of the policy under test (per transaction).
const CAP: u64 = 20_000;
/// The two anchors of a commitment, paid by the funder.
const ANCHORS_SAT: u64 = 660;
const CASES: u32 = 256;
const MAX_CHANNELS: usize = 3;
/// Payment hashes are drawn from a small set, so approvals, HTLCs of both directions and
/// retries meet.
const HASHES: u8 = 4;
/// Wallet addresses the model uses on each chain (the signer recognises more).
const WALLET_INDEXES: u32 = 4;

fn property_limits() -> PolicyLimits {
    PolicyLimits {
        max_payment_msat: Some(500_000_000),
        max_outgoing_msat_per_hour: Some(5_000_000_000),
        max_fee_sat: Some(CAP),
    }
}

// ---------------------------------------------------------------------------------------------
// The host's requests, drawn as data and read against the model when played.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Htlc {
    outgoing: bool,
    hash: u8,
    sat: u64,
}

/// How a new commitment moves from the side's last one.
#[derive(Clone, Debug)]
struct Spec {
    /// Bit i: HTLC i of the last commitment is settled (removed).
    settle: u8,
    /// Bit i: a settled HTLC was fulfilled (its value goes to the receiver), else failed.
    fulfill: u8,
    add: Vec<Htlc>,
    /// The feerate the host builds the commitment at (sat per 1,000 weight).
    feerate: u32,
    /// Value the peer honestly gives us (an incoming payment settled outside the HTLCs).
    gain: u64,
    /// Value taken from us with no HTLC or fee to account for it.
    steal: u64,
    /// A lowered fee goes to the peer instead of to the funder (us).
    ratchet: bool,
}

#[derive(Clone, Copy, Debug)]
enum Pick {
    /// The next number.
    Next,
    /// The last commitment again, unchanged.
    Retry,
    /// The last number with other contents.
    Conflict,
    /// An older number than the last (numbers count down).
    Older,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Forge {
    None,
    /// The peer's signature of the commitment is not the peer's.
    Commitment,
    /// The peer's signature of the first HTLC's transaction is not the peer's.
    Htlc,
}

#[derive(Clone, Copy, Debug)]
enum RevokeWith {
    None,
    Correct,
    Wrong,
}

#[derive(Clone, Copy, Debug)]
enum Via {
    Validate,
    /// Carried by the release of the current commitment's secret, as LDK's host sends it.
    Release,
    /// Carried by a request to sign it for broadcast.
    Sign,
}

#[derive(Clone, Copy, Debug)]
enum Proof {
    Proven,
    /// `witness_utxo` only.
    WitnessOnly,
    /// `witness_utxo` claims `sat` less than the coin holds.
    Lie {
        sat: u64,
        keep_previous: bool,
    },
    /// `non_witness_utxo` is another transaction.
    WrongPrevious,
}

#[derive(Clone, Copy, Debug)]
struct InSpec {
    /// The coin pays a key under the seed off the wallet's chains (Pay only).
    outside: bool,
    sighash: Option<EcdsaSighashType>,
    proof: Proof,
}

#[derive(Clone, Copy, Debug)]
enum OutSpec {
    /// A receive address of the wallet.
    Own(u32),
    /// A change address far beyond the lookahead, proven by its key origin.
    Change,
    Foreign,
}

#[derive(Clone, Debug)]
enum Action {
    Approve {
        hash: u8,
        sat: u64,
    },
    Open {
        outbound: bool,
        push_sat: u64,
    },
    Counterparty {
        ch: usize,
        spec: Spec,
        pick: Pick,
        revoke: RevokeWith,
    },
    Revoke {
        ch: usize,
        correct: bool,
    },
    /// Commitments for the peer whose fee swings: up to `high`, then down to the floor with
    /// the difference handed to the peer (the ratchet), `rounds` times, each revoking the last.
    FeeSwing {
        ch: usize,
        high: u32,
        rounds: u8,
    },
    Holder {
        ch: usize,
        spec: Spec,
        pick: Pick,
        forge: Forge,
        via: Via,
    },
    /// Sign for broadcast the newest validated holder commitment, or (`older`) one numbered
    /// before it with `spec`'s contents.
    SignHolder {
        ch: usize,
        older: Option<(Spec, Forge)>,
    },
    /// Release the secret of the commitment before the newest validated (or, `early`, of the
    /// newest itself).
    Release {
        ch: usize,
        early: bool,
    },
    Close {
        ch: usize,
        fee: u64,
        steal: u64,
        foreign: bool,
    },
    Sweep {
        sat: u64,
        feerate: u32,
        foreign: bool,
    },
    Pay {
        inputs: Vec<InSpec>,
        outputs: Vec<(OutSpec, u64)>,
        fee: u64,
    },
    /// The last Pay's transaction again, its inputs described anew (`None`: each input as
    /// the one before it was, so a lie moves to another input).
    Replay {
        inputs: Option<Vec<InSpec>>,
    },
    Fund {
        ch: usize,
        input: InSpec,
    },
}

/// What the funder of a commitment with `htlcs` HTLC outputs pays at `feerate` (BOLT 3, with
/// anchors).
fn commitment_fee(feerate: u32, htlcs: usize) -> u64 {
    u64::from(feerate) * (1124 + 172 * htlcs as u64) / 1000 + ANCHORS_SAT
}

fn mostly_zero(max: u64) -> impl Strategy<Value = u64> {
    prop_oneof![3 => Just(0u64), 1 => 1..=max]
}

fn spec() -> impl Strategy<Value = Spec> {
    let htlc =
        (any::<bool>(), 0..HASHES, 1_000u64..=120_000).prop_map(|(outgoing, hash, sat)| Htlc {
            outgoing,
            hash,
            sat,
        });
    (
        any::<u8>(),
        any::<u8>(),
        prop::collection::vec(htlc, 0..=2),
        // Low, near the cap and above it, so fees swing widely.
        prop_oneof![
            2 => MIN_FEERATE_PER_KW..=2_000,
            2 => 12_000u32..=17_000,
            1 => 17_000u32..=30_000
        ],
        mostly_zero(200_000),
        mostly_zero(300_000),
        prop::bool::weighted(0.4),
    )
        .prop_map(
            |(settle, fulfill, add, feerate, gain, steal, ratchet)| Spec {
                settle,
                fulfill,
                add,
                feerate,
                gain,
                steal,
                ratchet,
            },
        )
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        12 => Just(Pick::Next),
        1 => Just(Pick::Retry),
        1 => Just(Pick::Conflict),
        1 => Just(Pick::Older),
    ]
}

fn forge() -> impl Strategy<Value = Forge> {
    prop_oneof![
        8 => Just(Forge::None),
        1 => Just(Forge::Commitment),
        1 => Just(Forge::Htlc),
    ]
}

/// An input as an honest wallet describes it, one lying about its amount only, or one with
/// each field drawn at random.
fn in_spec() -> impl Strategy<Value = InSpec> {
    let honest = InSpec {
        outside: false,
        sighash: None,
        proof: Proof::Proven,
    };
    let liar = (1_000..=2 * CAP, any::<bool>()).prop_map(move |(sat, keep_previous)| InSpec {
        proof: Proof::Lie { sat, keep_previous },
        ..honest
    });
    let sighash = prop_oneof![
        2 => Just(None),
        1 => Just(Some(EcdsaSighashType::All)),
        1 => Just(Some(EcdsaSighashType::None)),
        1 => Just(Some(EcdsaSighashType::Single)),
        1 => Just(Some(EcdsaSighashType::AllPlusAnyoneCanPay)),
        1 => Just(Some(EcdsaSighashType::NonePlusAnyoneCanPay)),
    ];
    let proof = prop_oneof![
        3 => Just(Proof::Proven),
        1 => Just(Proof::WitnessOnly),
        2 => (1_000..=2 * CAP, any::<bool>())
            .prop_map(|(sat, keep_previous)| Proof::Lie { sat, keep_previous }),
        1 => Just(Proof::WrongPrevious),
    ];
    let random =
        (prop::bool::weighted(0.3), sighash, proof).prop_map(|(outside, sighash, proof)| InSpec {
            outside,
            sighash,
            proof,
        });
    prop_oneof![5 => Just(honest), 2 => liar, 2 => random]
}

fn action() -> impl Strategy<Value = Action> {
    let ch = 0..MAX_CHANNELS;
    let revoke = prop_oneof![
        3 => Just(RevokeWith::None),
        3 => Just(RevokeWith::Correct),
        1 => Just(RevokeWith::Wrong),
    ];
    let via = prop_oneof![
        3 => Just(Via::Validate),
        2 => Just(Via::Release),
        1 => Just(Via::Sign),
    ];
    let out_spec = prop_oneof![
        6 => (0..WALLET_INDEXES).prop_map(OutSpec::Own),
        2 => Just(OutSpec::Change),
        1 => Just(OutSpec::Foreign),
    ];
    prop_oneof![
        2 => (0..HASHES, 1_000u64..=150_000).prop_map(|(hash, sat)| Action::Approve { hash, sat }),
        2 => (prop::bool::weighted(0.7), prop_oneof![Just(0u64), 1..=300_000u64])
            .prop_map(|(outbound, push_sat)| Action::Open { outbound, push_sat }),
        8 => (ch.clone(), spec(), pick(), revoke).prop_map(|(ch, spec, pick, revoke)| {
            Action::Counterparty { ch, spec, pick, revoke }
        }),
        2 => (ch.clone(), any::<bool>()).prop_map(|(ch, correct)| Action::Revoke { ch, correct }),
        1 => (ch.clone(), 8_000u32..=17_000, 1u8..=3)
            .prop_map(|(ch, high, rounds)| Action::FeeSwing { ch, high, rounds }),
        6 => (ch.clone(), spec(), pick(), forge(), via).prop_map(|(ch, spec, pick, forge, via)| {
            Action::Holder { ch, spec, pick, forge, via }
        }),
        2 => (ch.clone(), prop::option::weighted(0.5, (spec(), forge())))
            .prop_map(|(ch, older)| Action::SignHolder { ch, older }),
        2 => (ch.clone(), prop::bool::weighted(0.2))
            .prop_map(|(ch, early)| Action::Release { ch, early }),
        2 => (ch.clone(), 500..=2 * CAP, mostly_zero(300_000), prop::bool::weighted(0.2))
            .prop_map(|(ch, fee, steal, foreign)| Action::Close { ch, fee, steal, foreign }),
        1 => (10_000u64..=300_000, 253u32..=100_000, prop::bool::weighted(0.2))
            .prop_map(|(sat, feerate, foreign)| Action::Sweep { sat, feerate, foreign }),
        4 => (
            prop::collection::vec(in_spec(), 1..=2),
            prop::collection::vec((out_spec, 10_000u64..=300_000), 1..=2),
            0..=2 * CAP,
        )
            .prop_map(|(inputs, outputs, fee)| Action::Pay { inputs, outputs, fee }),
        2 => prop::option::weighted(0.3, prop::collection::vec(in_spec(), 2..=2))
            .prop_map(|inputs| Action::Replay { inputs }),
        2 => (ch, in_spec()).prop_map(|(ch, input)| Action::Fund { ch, input }),
    ]
}

fn actions() -> impl Strategy<Value = Vec<Action>> {
    prop::collection::vec(action(), 1..64)
}

// ---------------------------------------------------------------------------------------------
// The model's ledger.

/// A commitment as the model sees it: our balance, its fee and its HTLCs.
#[derive(Clone, Debug, Default)]
struct Commit {
    to_us: u64,
    /// What the funder pays: `feerate` times the commitment's weight, and the anchors.
    fee: u64,
    feerate: u32,
    htlcs: Vec<Htlc>,
    /// The peer's HTLC signatures are real (our HTLCs can be timed out).
    htlc_sigs: bool,
}

impl Commit {
    /// Our worst case if this commitment confirms: our balance, and our pending HTLCs of
    /// approved payments (still ours until a later commitment drops them).
    fn claim(&self, approved: &BTreeSet<u8>) -> u64 {
        let pending: u64 = self
            .htlcs
            .iter()
            .filter(|h| h.outgoing && self.htlc_sigs && approved.contains(&h.hash))
            .map(|h| h.sat)
            .sum();
        self.to_us + pending
    }

    /// The next commitment of the same side: `spec` applied as far as the balances allow.
    fn next(&self, spec: &Spec, outbound: bool) -> Commit {
        let (mut to_us, mut to_peer) = (self.to_us, self.to_peer());
        let mut htlcs = Vec::new();
        for (i, h) in self.htlcs.iter().enumerate() {
            let bit = 1u8 << (i % 8);
            if spec.settle & bit == 0 {
                htlcs.push(*h);
            } else if h.outgoing != (spec.fulfill & bit != 0) {
                // Ours failed, or theirs fulfilled: the value is (back) ours.
                to_us += h.sat;
            } else {
                to_peer += h.sat;
            }
        }
        let kept = htlcs.len();
        for h in &spec.add {
            let payer = if h.outgoing { &mut to_us } else { &mut to_peer };
            if *payer >= h.sat {
                *payer -= h.sat;
                htlcs.push(*h);
            }
        }
        // The funder pays the fee at the feerate asked for, else at the last one, else the new
        // HTLCs wait; a lowered fee is the funder's again (unless ratcheted).
        let funds = if outbound { to_us } else { to_peer };
        let affordable = |rate: u32, n: usize| funds + self.fee >= commitment_fee(rate, n);
        let feerate = if affordable(spec.feerate, htlcs.len()) {
            spec.feerate
        } else if affordable(self.feerate, htlcs.len()) {
            self.feerate
        } else {
            for h in htlcs.drain(kept..) {
                let payer = if h.outgoing { &mut to_us } else { &mut to_peer };
                *payer += h.sat;
            }
            self.feerate
        };
        let fee = commitment_fee(feerate, htlcs.len());
        let (refund, charge) = (self.fee.saturating_sub(fee), fee.saturating_sub(self.fee));
        let funds = if outbound { &mut to_us } else { &mut to_peer };
        let charge = charge.min(*funds);
        *funds -= charge;
        if outbound && !spec.ratchet {
            to_us += refund;
        } else {
            to_peer += refund;
        }
        let gain = spec.gain.min(to_peer);
        let steal = spec.steal.min(to_us + gain);
        Commit {
            to_us: to_us + gain - steal,
            fee,
            feerate,
            htlcs,
            htlc_sigs: true,
        }
    }

    fn to_peer(&self) -> u64 {
        CHANNEL_SAT - self.to_us - self.fee - self.htlcs.iter().map(|h| h.sat).sum::<u64>()
    }

    /// Value of our HTLCs of approved payments in `self` that `next` no longer holds.
    fn dropped_approved(&self, next: &Commit, approved: &BTreeSet<u8>) -> u64 {
        let mut left = next.htlcs.clone();
        let mut dropped = 0;
        for h in &self.htlcs {
            match left.iter().position(|n| n == h) {
                Some(i) => {
                    left.swap_remove(i);
                }
                None if h.outgoing && approved.contains(&h.hash) => dropped += h.sat,
                None => {}
            }
        }
        dropped
    }
}

fn ldk_htlc(h: &Htlc, offered: bool) -> HTLCOutputInCommitment {
    htlc(offered, h.sat * 1000, h.hash)
}

/// A coin of the customer's: a previous transaction paying `key`.
#[derive(Clone, Debug)]
struct Coin {
    previous: Transaction,
    value: u64,
    key: PublicKey,
    path: DerivationPath,
}

impl Coin {
    fn outpoint(&self) -> BtcOutPoint {
        BtcOutPoint {
            txid: self.previous.compute_txid(),
            vout: 0,
        }
    }

    fn script(&self) -> ScriptBuf {
        p2wpkh(&self.key)
    }
}

fn p2wpkh(key: &PublicKey) -> ScriptBuf {
    ScriptBuf::new_p2wpkh(&CompressedPublicKey(*key).wpubkey_hash())
}

fn foreign_script() -> ScriptBuf {
    ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([1; 20]))
}

/// A wallet transaction the signer signed, with the inputs that hold a valid ALL signature.
struct WalletTx {
    tx: Transaction,
    coins: Vec<Coin>,
    signed: Vec<bool>,
}

/// The last payment asked for, to ask for its transaction again.
#[derive(Clone)]
struct LastPay {
    coins: Vec<Coin>,
    outputs: Vec<TxOut>,
    specs: Vec<OutSpec>,
    inputs: Vec<InSpec>,
}

/// What the model knows of one channel.
struct ModelChannel {
    ch: Channel,
    outbound: bool,
    /// What the approved open gives us.
    baseline: u64,
    /// The funding transaction the parameters name (channels we fund).
    funding: Option<(Psbt, Coin)>,
    funded: bool,
    /// Every commitment signed for the peer, by number.
    counterparty: Vec<(u64, Commit)>,
    revoked: BTreeSet<u64>,
    last_counterparty: Option<(u64, Commit, CommitmentTransaction)>,
    /// Every holder commitment accepted (validated), with whether the peer's commitment
    /// signature was forged.
    validated: Vec<(u64, Commit, bool)>,
    last_holder: Option<(u64, Commit, HolderCommitmentTransaction)>,
    /// Holder commitments signed for broadcast (forged ones are not broadcastable).
    broadcastable: Vec<(u64, Commit)>,
    released: Option<u64>,
    /// Our output of each signed close (0 when it pays a foreign script).
    closes: Vec<u64>,
}

impl ModelChannel {
    fn initial(&self) -> Commit {
        Commit {
            to_us: self.baseline,
            fee: 0,
            feerate: MIN_FEERATE_PER_KW,
            htlcs: vec![],
            htlc_sigs: true,
        }
    }

    fn revoked_holder(&self, number: u64) -> bool {
        self.released.is_some_and(|r| number >= r)
    }

    /// The customer's worst case on this channel (see the module doc).
    fn claim(&self, approved: &BTreeSet<u8>) -> u64 {
        let mut options: Vec<u64> = Vec::new();
        for (number, c) in &self.counterparty {
            if !self.revoked.contains(number) {
                options.push(c.claim(approved));
            }
        }
        for (number, c) in &self.broadcastable {
            options.push(if self.revoked_holder(*number) {
                0
            } else {
                c.claim(approved)
            });
        }
        options.extend(&self.closes);
        let own_way_out = self
            .validated
            .iter()
            .min_by_key(|(number, _, _)| *number)
            .filter(|(number, _, forged)| !forged && !self.revoked_holder(*number))
            .map(|(_, c, _)| c.claim(approved));
        match own_way_out {
            Some(claim) => options.push(claim),
            None if self.funded || !self.outbound => options.push(0),
            None => {}
        }
        options.into_iter().min().unwrap_or(self.baseline)
    }
}

/// The seed's keys as the model derives them itself.
struct SeedKeys {
    master: Xpriv,
    fingerprint: Fingerprint,
    secp: Secp256k1<All>,
}

impl SeedKeys {
    fn new() -> Self {
        let secp = Secp256k1::new();
        let master = Xpriv::new_master(Network::Regtest, &SEED).expect("master");
        SeedKeys {
            fingerprint: master.fingerprint(&secp),
            master,
            secp,
        }
    }

    fn key(&self, path: &DerivationPath) -> PublicKey {
        self.master
            .derive_priv(&self.secp, path)
            .expect("key")
            .private_key
            .public_key(&self.secp)
    }

    fn wallet_path(chain: u32, index: u32) -> DerivationPath {
        format!("m/84'/1'/0'/{chain}/{index}")
            .parse()
            .expect("path")
    }

    /// A path under the seed no wallet address uses.
    fn outside_path() -> DerivationPath {
        DerivationPath::from(vec![
            ChildNumber::from_hardened_idx(0).expect("index"),
            ChildNumber::from_normal_idx(7).expect("index"),
        ])
    }
}

/// One played sequence: the signer and the model side by side.
struct Play {
    signer: SeedSigner,
    seed: SeedKeys,
    own: BTreeSet<ScriptBuf>,
    shutdown: ScriptBuf,
    channels: Vec<ModelChannel>,
    approved: BTreeSet<u8>,
    /// Approved HTLCs dropped by later commitments.
    realized: u64,
    /// Accepted commitments (1 sat of rounding each).
    commitments: u64,
    closes: u64,
    sweeps: u64,
    sweep_loss: u64,
    wallet: BTreeMap<Txid, WalletTx>,
    /// Coins a signature lets anyone spend anywhere (NONE, SINGLE): what that loses.
    exposed: BTreeMap<BtcOutPoint, u64>,
    last_pay: Option<LastPay>,
    next_coin: u32,
    /// The accepted requests, for the failure message.
    log: Vec<String>,
}

impl Play {
    fn new() -> Play {
        let mut policy = Policy::new(property_limits());
        policy.wallet_lookahead = 16;
        let signer = signer_with(policy, Box::new(MemoryStateStore::new()));
        let seed = SeedKeys::new();
        let shutdown = signer.handover().shutdown_script;
        let mut own: BTreeSet<ScriptBuf> = [shutdown.clone()].into_iter().collect();
        for chain in [0, 1] {
            for index in 0..WALLET_INDEXES {
                own.insert(p2wpkh(&seed.key(&SeedKeys::wallet_path(chain, index))));
            }
        }
        own.insert(p2wpkh(&seed.key(&SeedKeys::wallet_path(1, 5_000))));
        own.insert(
            ldk_keys(&SEED)
                .get_destination_script([0; 32])
                .expect("destination"),
        );
        Play {
            signer,
            seed,
            own,
            shutdown,
            channels: Vec::new(),
            approved: BTreeSet::new(),
            realized: 0,
            commitments: 0,
            closes: 0,
            sweeps: 0,
            sweep_loss: 0,
            wallet: BTreeMap::new(),
            exposed: BTreeMap::new(),
            last_pay: None,
            next_coin: 0,
            log: Vec::new(),
        }
    }

    fn play(mut self, actions: &[Action]) -> Result<(), TestCaseError> {
        for action in actions {
            self.step(action);
            self.check(action)?;
        }
        Ok(())
    }

    /// The invariant: loss <= approved spending + bounded fees.
    fn check(&self, action: &Action) -> Result<(), TestCaseError> {
        let mut lines = Vec::new();
        let mut loss = 0;
        for (i, ch) in self.channels.iter().enumerate() {
            let claim = ch.claim(&self.approved);
            let lost = ch.baseline.saturating_sub(claim);
            if lost > 0 {
                lines.push(format!(
                    "channel {i}: {lost} sat lost (opened with {}, worst case {claim})",
                    ch.baseline
                ));
            }
            loss += lost;
        }
        let (wallet_loss, spendable) = self.wallet_loss();
        if wallet_loss > 0 {
            lines.push(format!(
                "wallet: {wallet_loss} sat lost over {spendable} spendable transactions"
            ));
        }
        if self.sweep_loss > 0 {
            lines.push(format!("sweeps: {} sat lost", self.sweep_loss));
        }
        loss += wallet_loss + self.sweep_loss;
        let fees = CAP * (self.channels.len() as u64 + self.closes + spendable + self.sweeps)
            + self.commitments;
        let bound = self.realized + fees;
        if loss <= bound {
            return Ok(());
        }
        Err(TestCaseError::fail(format!(
            "the customer lost {loss} sat, more than approved spending {} + bounded fees {fees}, \
             after {action:?}\n  {}\naccepted requests:\n  {}",
            self.realized,
            lines.join("\n  "),
            self.log.join("\n  ")
        )))
    }

    fn wallet_loss(&self) -> (u64, u64) {
        let mut loss: u64 = self.exposed.values().sum();
        let mut spendable = 0;
        for (txid, w) in &self.wallet {
            if !w.signed.iter().all(|s| *s) {
                continue;
            }
            spendable += 1;
            let kept: u64 =
                w.tx.output
                    .iter()
                    .enumerate()
                    .filter(|(vout, o)| {
                        self.own.contains(&o.script_pubkey) || self.funds_channel(txid, *vout, o)
                    })
                    .map(|(_, o)| o.value.to_sat())
                    .sum();
            let spent: u64 = w.coins.iter().map(|c| c.value).sum();
            loss += spent.saturating_sub(kept);
        }
        (loss, spendable)
    }

    /// Output `vout` of `txid` is the funding of a channel we open, where its commitments
    /// spend it.
    fn funds_channel(&self, txid: &Txid, vout: usize, output: &TxOut) -> bool {
        self.channels.iter().any(|c| {
            let outpoint = c.ch.params.funding_outpoint.expect("set");
            c.outbound
                && outpoint.txid == *txid
                && usize::from(outpoint.index) == vout
                && output.value.to_sat() == CHANNEL_SAT
                && output.script_pubkey == c.ch.funding_redeemscript().to_p2wsh()
        })
    }

    fn accepted(&mut self, what: String) {
        if std::env::var_os("PROPERTY_STATS").is_some() {
            let body = what
                .strip_prefix("channel ")
                .and_then(|rest| rest.split_once(": "))
                .map_or(what.as_str(), |(_, body)| body);
            let kind = body.split(' ').take(2).collect::<Vec<_>>().join(" ");
            *STATS.lock().expect("stats").entry(kind).or_default() += 1;
        }
        self.log.push(what);
    }

    /// The channel an action names: its index among those opened so far.
    fn index(&self, ch: usize) -> usize {
        ch % self.channels.len().max(1)
    }

    fn step(&mut self, action: &Action) {
        match action {
            Action::Approve { hash, sat } => {
                if noted(approve(&self.signer, *hash, sat * 1000)).is_ok() {
                    self.approved.insert(*hash);
                    self.accepted(format!("approve payment {hash} of {sat} sat"));
                }
            }
            Action::Open { outbound, push_sat } => self.open(*outbound, *push_sat),
            Action::Counterparty {
                ch,
                spec,
                pick,
                revoke,
            } => self.counterparty(self.index(*ch), spec, *pick, *revoke),
            Action::Revoke { ch, correct } => self.revoke(self.index(*ch), *correct),
            Action::FeeSwing { ch, high, rounds } => {
                let at = |feerate, ratchet| Spec {
                    settle: 0,
                    fulfill: 0,
                    add: vec![],
                    feerate,
                    gain: 0,
                    steal: 0,
                    ratchet,
                };
                let i = self.index(*ch);
                for _ in 0..*rounds {
                    for spec in [at(*high, false), at(MIN_FEERATE_PER_KW, true)] {
                        self.counterparty(i, &spec, Pick::Next, RevokeWith::Correct);
                    }
                }
            }
            Action::Holder {
                ch,
                spec,
                pick,
                forge,
                via,
            } => self.holder(self.index(*ch), spec, *pick, *forge, *via),
            Action::SignHolder { ch, older } => self.sign_holder(self.index(*ch), older.as_ref()),
            Action::Release { ch, early } => self.release(self.index(*ch), *early),
            Action::Close {
                ch,
                fee,
                steal,
                foreign,
            } => self.close(self.index(*ch), *fee, *steal, *foreign),
            Action::Sweep {
                sat,
                feerate,
                foreign,
            } => self.sweep(*sat, *feerate, *foreign),
            Action::Pay {
                inputs,
                outputs,
                fee,
            } => self.pay(inputs, outputs, *fee),
            Action::Replay { inputs } => {
                if let Some(last) = self.last_pay.clone() {
                    let mut rotated = last.inputs.clone();
                    rotated.rotate_right(1);
                    let inputs = inputs.as_ref().unwrap_or(&rotated);
                    let psbt = self.psbt(&last.coins, &last.outputs, &last.specs, inputs);
                    self.sign_psbt(psbt, &last.coins, "the last payment again");
                }
            }
            Action::Fund { ch, input } => {
                let ch = self.index(*ch);
                let Some((psbt, coin)) = self.channels.get(ch).and_then(|c| c.funding.clone())
                else {
                    return;
                };
                let mut psbt = psbt;
                describe_input(&mut psbt, 0, &coin, input, &self.seed);
                self.sign_psbt(psbt, &[coin], &format!("funding of channel {ch}"));
            }
        }
    }

    fn fresh_coin(&mut self, value: u64, path: DerivationPath) -> Coin {
        self.next_coin += 1;
        let key = self.seed.key(&path);
        let previous = Transaction {
            version: bitcoin::transaction::Version::TWO,
            lock_time: LockTime::from_consensus(self.next_coin),
            input: vec![TxIn::default()],
            output: vec![TxOut {
                value: Amount::from_sat(value),
                script_pubkey: p2wpkh(&key),
            }],
        };
        Coin {
            previous,
            value,
            key,
            path,
        }
    }

    fn open(&mut self, outbound: bool, push_sat: u64) {
        if self.channels.len() >= MAX_CHANNELS {
            return;
        }
        let tag = self.channels.len() as u8 + 1;
        let mut ch = Channel::unapproved(&self.signer, tag, outbound);
        let funding = outbound.then(|| {
            let coin = self.fresh_coin(CHANNEL_SAT + 1_000, SeedKeys::wallet_path(0, 0));
            let output = TxOut {
                value: Amount::from_sat(CHANNEL_SAT),
                script_pubkey: ch.funding_redeemscript().to_p2wsh(),
            };
            let mut psbt = unsigned_psbt(std::slice::from_ref(&coin), vec![output]);
            psbt.outputs[0].witness_script = Some(ch.funding_redeemscript());
            let txid = psbt.unsigned_tx.compute_txid();
            ch.params.funding_outpoint = Some(OutPoint { txid, index: 0 });
            (psbt, coin)
        });
        let push_sat = if outbound { push_sat } else { 0 };
        if !matches!(
            noted(self.signer.handle(ch.approval(push_sat * 1000))),
            Ok(Response::Accepted)
        ) {
            return;
        }
        self.accepted(format!(
            "open channel {} ({}, push {push_sat} sat)",
            tag - 1,
            if outbound { "ours" } else { "the peer's" }
        ));
        self.channels.push(ModelChannel {
            ch,
            outbound,
            baseline: if outbound { CHANNEL_SAT - push_sat } else { 0 },
            funding,
            funded: false,
            counterparty: Vec::new(),
            revoked: BTreeSet::new(),
            last_counterparty: None,
            validated: Vec::new(),
            last_holder: None,
            broadcastable: Vec::new(),
            released: None,
            closes: Vec::new(),
        });
    }

    /// The peer's commitment unrevoked besides its newest, if any.
    fn unrevoked(c: &ModelChannel) -> Option<u64> {
        let last = c.last_counterparty.as_ref()?.0;
        c.counterparty
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| *n > last && !c.revoked.contains(n))
            .min()
    }

    fn revocation(c: &ModelChannel, correct: bool) -> Option<(Revocation, bool)> {
        let idx = Self::unrevoked(c)?;
        let revocation = if correct {
            c.ch.revocation(idx)
        } else {
            Revocation {
                idx,
                secret: c.ch.revocation(idx - 1).secret,
            }
        };
        Some((revocation, correct))
    }

    fn counterparty(&mut self, i: usize, spec: &Spec, pick: Pick, revoke: RevokeWith) {
        let Some(c) = self.channels.get(i) else {
            return;
        };
        let last = c.last_counterparty.as_ref();
        let base = last.map_or_else(|| c.initial(), |(_, commit, _)| commit.clone());
        let (number, commit, tx) = match (pick, last) {
            (Pick::Retry, Some((n, commit, tx))) => (*n, commit.clone(), tx.clone()),
            (Pick::Retry, None) => return,
            (Pick::Next, _) | (Pick::Conflict, _) | (Pick::Older, _) => {
                let number = match (pick, last) {
                    (Pick::Next, None) => TOP,
                    (Pick::Next, Some((n, _, _))) => n - 1,
                    (Pick::Conflict, Some((n, _, _))) => *n,
                    (Pick::Older, Some((n, _, _))) if *n < TOP => n + 1,
                    _ => return,
                };
                let commit = base.next(spec, c.outbound);
                let tx = counterparty_tx(&c.ch, number, &commit);
                (number, commit, tx)
            }
        };
        let revocation = match revoke {
            RevokeWith::None => None,
            RevokeWith::Correct => Self::revocation(c, true),
            RevokeWith::Wrong => Self::revocation(c, false),
        };
        let result = noted(c.ch.sign_counterparty_revoking(
            &self.signer,
            tx.clone(),
            revocation.as_ref().map(|(r, _)| *r),
        ));
        if !matches!(result, Ok(Response::CommitmentSignatures { .. })) {
            return;
        }
        let approved = self.approved.clone();
        let c = &mut self.channels[i];
        if let Some((r, true)) = &revocation {
            c.revoked.insert(r.idx);
        }
        c.counterparty.push((number, commit.clone()));
        let newest = c
            .last_counterparty
            .as_ref()
            .is_none_or(|(n, _, _)| number < *n);
        if newest {
            self.realized += base.dropped_approved(&commit, &approved);
            c.last_counterparty = Some((number, commit.clone(), tx));
        }
        self.commitments += 1;
        self.accepted(format!(
            "channel {i}: signed the peer's commitment {} {commit:?}{}",
            TOP - number,
            match &revocation {
                Some((r, ok)) => format!(" revoking {} ({ok})", TOP - r.idx),
                None => String::new(),
            }
        ));
    }

    fn revoke(&mut self, i: usize, correct: bool) {
        let Some((revocation, ok)) = self
            .channels
            .get(i)
            .and_then(|c| Self::revocation(c, correct))
        else {
            return;
        };
        let c = &mut self.channels[i];
        let result = self.signer.handle(Request::ValidateCounterpartyRevocation {
            keys_id: c.ch.keys_id,
            revocation,
        });
        if matches!(noted(result), Ok(Response::Accepted)) {
            if ok {
                c.revoked.insert(revocation.idx);
            }
            self.accepted(format!(
                "channel {i}: revocation of {} ({ok})",
                TOP - revocation.idx
            ));
        }
    }

    /// A holder commitment numbered by `pick` from the newest validated, with `spec`.
    fn holder_commitment(
        &self,
        i: usize,
        spec: &Spec,
        pick: Pick,
        forge: Forge,
    ) -> Option<(u64, Commit, HolderCommitmentTransaction, bool)> {
        let c = self.channels.get(i)?;
        let last = c.last_holder.as_ref();
        if let (Pick::Retry, Some((n, commit, tx))) = (pick, last) {
            return Some((*n, commit.clone(), tx.clone(), false));
        }
        let number = match (pick, last) {
            (Pick::Next, None) => TOP,
            (Pick::Next, Some((n, _, _))) => n - 1,
            (Pick::Conflict, Some((n, _, _))) => *n,
            (Pick::Older, Some((n, _, _))) if *n < TOP => n + 1,
            _ => return None,
        };
        let base = last.map_or_else(|| c.initial(), |(_, commit, _)| commit.clone());
        let mut commit = base.next(spec, c.outbound);
        let (tx, forged_commitment, forged_htlc) =
            holder_tx(&self.signer, &c.ch, number, &commit, forge);
        commit.htlc_sigs = !forged_htlc;
        Some((number, commit, tx, forged_commitment))
    }

    fn holder(&mut self, i: usize, spec: &Spec, pick: Pick, forge: Forge, via: Via) {
        // A release carries the successor of the commitment it revokes.
        if matches!(via, Via::Release) && !matches!(pick, Pick::Next) {
            return;
        }
        let Some((number, commit, tx, forged)) = self.holder_commitment(i, spec, pick, forge)
        else {
            return;
        };
        let c = &self.channels[i];
        let keys_id = c.ch.keys_id;
        let (result, released) = match via {
            Via::Validate => (c.ch.validate_holder(&self.signer, tx.clone()), None),
            Via::Release => {
                // The current commitment's secret goes with its successor.
                let Some(current) = c.last_holder.as_ref().map(|(n, _, _)| *n) else {
                    return;
                };
                let result = self.signer.handle(Request::ReleaseCommitmentSecret {
                    keys_id,
                    idx: current,
                    holder: Some(HolderCommitment {
                        params: None,
                        tx: tx.clone(),
                        outbound_preimages: vec![],
                    }),
                });
                (result, Some(current))
            }
            Via::Sign => (
                self.signer.handle(Request::SignHolderCommitment {
                    keys_id,
                    params: c.ch.params.clone(),
                    tx: tx.clone(),
                }),
                None,
            ),
        };
        let result = noted(result);
        let ok = matches!(
            (&via, &result),
            (Via::Validate, Ok(Response::Accepted))
                | (Via::Release, Ok(Response::Secret(_)))
                | (Via::Sign, Ok(Response::Signature(_)))
        );
        if !ok {
            return;
        }
        let approved = self.approved.clone();
        let c = &mut self.channels[i];
        let newest = c.last_holder.as_ref().is_none_or(|(n, _, _)| number < *n);
        if newest {
            let base = c
                .last_holder
                .as_ref()
                .map_or_else(|| c.initial(), |(_, commit, _)| commit.clone());
            self.realized += base.dropped_approved(&commit, &approved);
            c.last_holder = Some((number, commit.clone(), tx));
        }
        c.validated.push((number, commit.clone(), forged));
        if let Via::Sign = via {
            if !forged {
                c.broadcastable.push((number, commit.clone()));
            }
        }
        if let Some(idx) = released {
            c.released = Some(c.released.map_or(idx, |r| r.min(idx)));
        }
        self.commitments += 1;
        self.accepted(format!(
            "channel {i}: holder commitment {} {commit:?} forged {forge:?} via {via:?}",
            TOP - number
        ));
    }

    fn sign_holder(&mut self, i: usize, older: Option<&(Spec, Forge)>) {
        let (number, commit, tx, forged) = match older {
            None => {
                let Some((n, commit, tx)) =
                    self.channels.get(i).and_then(|c| c.last_holder.clone())
                else {
                    return;
                };
                (n, commit, tx, false)
            }
            Some((spec, forge)) => {
                let Some(made) = self.holder_commitment(i, spec, Pick::Older, *forge) else {
                    return;
                };
                made
            }
        };
        let c = &self.channels[i];
        let result = self.signer.handle(Request::SignHolderCommitment {
            keys_id: c.ch.keys_id,
            params: c.ch.params.clone(),
            tx,
        });
        if !matches!(noted(result), Ok(Response::Signature(_))) {
            return;
        }
        let c = &mut self.channels[i];
        if !forged {
            c.broadcastable.push((number, commit.clone()));
        }
        self.accepted(format!(
            "channel {i}: signed holder commitment {} {commit:?} for broadcast",
            TOP - number
        ));
    }

    fn release(&mut self, i: usize, early: bool) {
        let Some(c) = self.channels.get(i) else {
            return;
        };
        let Some(newest) = c.last_holder.as_ref().map(|(n, _, _)| *n) else {
            return;
        };
        let idx = if early { newest } else { newest + 1 };
        if idx > TOP {
            return;
        }
        let result = self.signer.handle(Request::ReleaseCommitmentSecret {
            keys_id: c.ch.keys_id,
            idx,
            holder: None,
        });
        if matches!(noted(result), Ok(Response::Secret(_))) {
            let c = &mut self.channels[i];
            c.released = Some(c.released.map_or(idx, |r| r.min(idx)));
            self.accepted(format!("channel {i}: released secret {}", TOP - idx));
        }
    }

    fn close(&mut self, i: usize, fee: u64, steal: u64, foreign: bool) {
        let Some(c) = self.channels.get(i) else {
            return;
        };
        // Before the peer's first commitment, a close is held to what the open gives us.
        let last = c.last_counterparty.as_ref().map(|(_, commit, _)| commit);
        let balance = last.map_or(c.baseline, |commit| commit.to_us);
        let our_fee = if c.outbound { fee } else { 0 };
        let Some(to_us) = balance.checked_sub(our_fee + steal) else {
            return;
        };
        if to_us + fee > CHANNEL_SAT {
            return;
        }
        let script = if foreign {
            foreign_script()
        } else {
            self.shutdown.clone()
        };
        if !matches!(
            noted(c.ch.close(&self.signer, to_us, script, fee)),
            Ok(Response::Signature(_))
        ) {
            return;
        }
        let kept = if foreign { 0 } else { to_us };
        self.channels[i].closes.push(kept);
        self.closes += 1;
        self.accepted(format!(
            "channel {i}: mutual close paying us {to_us} sat (foreign {foreign}), fee {fee}"
        ));
    }

    fn sweep(&mut self, sat: u64, feerate: u32, foreign: bool) {
        self.next_coin += 1;
        let descriptor = SpendableOutputDescriptor::StaticOutput {
            outpoint: OutPoint {
                txid: Txid::from_byte_array([9; 32]),
                index: self.next_coin as u16,
            },
            output: TxOut {
                value: Amount::from_sat(sat),
                script_pubkey: ldk_keys(&SEED)
                    .get_destination_script([0; 32])
                    .expect("script"),
            },
            channel_keys_id: None,
        };
        let change = if foreign {
            foreign_script()
        } else {
            self.shutdown.clone()
        };
        let Ok(Response::Transaction(tx)) = noted(self.signer.handle(Request::SpendOutputs {
            descriptors: vec![descriptor],
            outputs: vec![],
            change_script: change,
            feerate_sat_per_1000_weight: feerate,
            locktime: None,
        })) else {
            return;
        };
        let kept: u64 = tx
            .output
            .iter()
            .filter(|o| self.own.contains(&o.script_pubkey))
            .map(|o| o.value.to_sat())
            .sum();
        self.sweep_loss += sat.saturating_sub(kept);
        self.sweeps += 1;
        self.accepted(format!(
            "sweep of {sat} sat at {feerate} sat/kw (foreign {foreign})"
        ));
    }

    fn pay(&mut self, inputs: &[InSpec], outputs: &[(OutSpec, u64)], fee: u64) {
        let total: u64 = outputs.iter().map(|(_, v)| v).sum::<u64>() + fee;
        let first = if inputs.len() == 1 { total } else { total / 2 };
        let coins: Vec<Coin> = inputs
            .iter()
            .enumerate()
            .map(|(n, spec)| {
                let value = if n == 0 { first } else { total - first };
                let path = if spec.outside {
                    SeedKeys::outside_path()
                } else {
                    SeedKeys::wallet_path(0, n as u32)
                };
                self.fresh_coin(value, path)
            })
            .collect();
        let specs: Vec<OutSpec> = outputs.iter().map(|(s, _)| *s).collect();
        let txouts: Vec<TxOut> = outputs
            .iter()
            .map(|(spec, value)| TxOut {
                value: Amount::from_sat(*value),
                script_pubkey: match spec {
                    OutSpec::Own(index) => {
                        p2wpkh(&self.seed.key(&SeedKeys::wallet_path(0, *index)))
                    }
                    OutSpec::Change => p2wpkh(&self.seed.key(&SeedKeys::wallet_path(1, 5_000))),
                    OutSpec::Foreign => foreign_script(),
                },
            })
            .collect();
        let psbt = self.psbt(&coins, &txouts, &specs, inputs);
        self.last_pay = Some(LastPay {
            coins: coins.clone(),
            outputs: txouts,
            specs,
            inputs: inputs.to_vec(),
        });
        self.sign_psbt(psbt, &coins, "a payment");
    }

    fn psbt(
        &self,
        coins: &[Coin],
        outputs: &[TxOut],
        specs: &[OutSpec],
        inputs: &[InSpec],
    ) -> Psbt {
        let mut psbt = unsigned_psbt(coins, outputs.to_vec());
        for (n, (coin, spec)) in coins.iter().zip(inputs.iter().cycle()).enumerate() {
            describe_input(&mut psbt, n, coin, spec, &self.seed);
        }
        for (n, spec) in specs.iter().enumerate() {
            if let OutSpec::Change = spec {
                let path = SeedKeys::wallet_path(1, 5_000);
                psbt.outputs[n]
                    .bip32_derivation
                    .insert(self.seed.key(&path), (self.seed.fingerprint, path));
            }
        }
        psbt
    }

    /// Asks for `psbt` signed and books what the returned signatures let anyone do.
    fn sign_psbt(&mut self, psbt: Psbt, coins: &[Coin], what: &str) {
        let described: Vec<String> = psbt
            .inputs
            .iter()
            .zip(coins)
            .map(|(input, coin)| {
                format!(
                    "[{} sat, claimed {:?}, previous tx {}, sighash {:?}, path {}]",
                    coin.value,
                    input.witness_utxo.as_ref().map(|o| o.value.to_sat()),
                    input.non_witness_utxo.is_some(),
                    input.sighash_type,
                    input
                        .bip32_derivation
                        .values()
                        .next()
                        .map_or(String::new(), |(_, p)| p.to_string())
                )
            })
            .collect();
        let Ok(Response::Psbt(signed)) = noted(self.signer.handle(Request::SignPsbt { psbt }))
        else {
            return;
        };
        let tx = signed.unsigned_tx.clone();
        let txid = tx.compute_txid();
        let mut all = vec![false; coins.len()];
        let mut signatures = 0;
        for (n, coin) in coins.iter().enumerate() {
            let Some(sig) = signed.inputs[n]
                .partial_sigs
                .get(&bitcoin::PublicKey::new(coin.key))
            else {
                continue;
            };
            let Ok(sighash) = SighashCache::new(&tx).p2wpkh_signature_hash(
                n,
                &coin.script(),
                Amount::from_sat(coin.value),
                sig.sighash_type,
            ) else {
                continue;
            };
            let message = Message::from_digest(sighash.to_byte_array());
            if self
                .seed
                .secp
                .verify_ecdsa(&message, &sig.signature, &coin.key)
                .is_err()
            {
                // Signed over a false amount: useless, unless another request completes it.
                continue;
            }
            signatures += 1;
            match sig.sighash_type {
                EcdsaSighashType::All | EcdsaSighashType::AllPlusAnyoneCanPay => all[n] = true,
                EcdsaSighashType::None | EcdsaSighashType::NonePlusAnyoneCanPay => {
                    self.exposed.insert(coin.outpoint(), coin.value);
                }
                EcdsaSighashType::Single | EcdsaSighashType::SinglePlusAnyoneCanPay => {
                    let paired = tx
                        .output
                        .get(n)
                        .filter(|o| self.own.contains(&o.script_pubkey))
                        .map_or(0, |o| o.value.to_sat());
                    self.exposed
                        .insert(coin.outpoint(), coin.value.saturating_sub(paired));
                }
            }
        }
        let entry = self.wallet.entry(txid).or_insert_with(|| WalletTx {
            tx: tx.clone(),
            coins: coins.to_vec(),
            signed: vec![false; coins.len()],
        });
        for (held, new) in entry.signed.iter_mut().zip(all) {
            *held |= new;
        }
        if entry.signed.iter().all(|s| *s) {
            for c in &mut self.channels {
                let funds = c
                    .funding
                    .as_ref()
                    .is_some_and(|(p, _)| p.unsigned_tx.compute_txid() == txid)
                    && tx.output.first().is_some_and(|o| {
                        o.value.to_sat() == CHANNEL_SAT
                            && o.script_pubkey == c.ch.funding_redeemscript().to_p2wsh()
                    });
                c.funded |= funds;
            }
        }
        self.accepted(format!(
            "signed {what} ({signatures} valid signatures) spending {} to {:?}",
            described.join(" "),
            tx.output
                .iter()
                .map(|o| (o.value.to_sat(), self.own.contains(&o.script_pubkey)))
                .collect::<Vec<_>>()
        ));
    }
}

/// An unsigned PSBT spending `coins` to `outputs`, nothing described yet.
fn unsigned_psbt(coins: &[Coin], outputs: Vec<TxOut>) -> Psbt {
    let tx = Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: LockTime::ZERO,
        input: coins
            .iter()
            .map(|c| TxIn {
                previous_output: c.outpoint(),
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            })
            .collect(),
        output: outputs,
    };
    Psbt::from_unsigned_tx(tx).expect("psbt")
}

/// Describes input `n` (spending `coin`) as `spec` says: key origin, sighash, amount proof.
fn describe_input(psbt: &mut Psbt, n: usize, coin: &Coin, spec: &InSpec, seed: &SeedKeys) {
    let mut truth = TxOut {
        value: Amount::from_sat(coin.value),
        script_pubkey: coin.script(),
    };
    let mut input = PsbtInput {
        sighash_type: spec.sighash.map(PsbtSighashType::from),
        ..Default::default()
    };
    input
        .bip32_derivation
        .insert(coin.key, (seed.fingerprint, coin.path.clone()));
    match spec.proof {
        Proof::Proven => {
            input.witness_utxo = Some(truth);
            input.non_witness_utxo = Some(coin.previous.clone());
        }
        Proof::WitnessOnly => input.witness_utxo = Some(truth),
        Proof::Lie { sat, keep_previous } => {
            truth.value = Amount::from_sat(coin.value.saturating_sub(sat).max(1));
            input.witness_utxo = Some(truth);
            if keep_previous {
                input.non_witness_utxo = Some(coin.previous.clone());
            }
        }
        Proof::WrongPrevious => {
            let mut other = coin.previous.clone();
            other.lock_time = LockTime::from_consensus(u32::MAX - 1);
            input.witness_utxo = Some(truth);
            input.non_witness_utxo = Some(other);
        }
    }
    psbt.inputs[n] = input;
}

/// The peer's commitment `number` holding `commit` (our HTLCs are the ones it did not offer).
fn counterparty_tx(ch: &Channel, number: u64, commit: &Commit) -> CommitmentTransaction {
    let point = ch
        .peer
        .get_per_commitment_point(number, &ch.secp)
        .expect("point");
    CommitmentTransaction::new(
        number,
        &point,
        commit.to_peer(),
        commit.to_us,
        commit.feerate,
        commit
            .htlcs
            .iter()
            .map(|h| ldk_htlc(h, !h.outgoing))
            .collect(),
        &ch.params.as_counterparty_broadcastable(),
        &ch.secp,
    )
}

/// Our commitment `number` holding `commit`, signed by the peer (or forged as `forge` says).
/// Returns whether the commitment's and the HTLCs' signatures were forged.
fn holder_tx(
    signer: &SeedSigner,
    ch: &Channel,
    number: u64,
    commit: &Commit,
    forge: Forge,
) -> (HolderCommitmentTransaction, bool, bool) {
    let point = match signer.handle(Request::PerCommitmentPoints {
        keys_id: ch.keys_id,
        first: number,
        count: 1,
    }) {
        Ok(Response::Points(points)) => points[0],
        other => panic!("points: {other:?}"),
    };
    let tx = CommitmentTransaction::new(
        number,
        &point,
        commit.to_us,
        commit.to_peer(),
        commit.feerate,
        commit
            .htlcs
            .iter()
            .map(|h| ldk_htlc(h, h.outgoing))
            .collect(),
        &ch.params.as_holder_broadcastable(),
        &ch.secp,
    );
    let (mut sig, mut htlc_sigs) = ch
        .peer
        .sign_counterparty_commitment(&ch.peer_params(), &tx, vec![], vec![], &ch.secp)
        .expect("the peer signs our commitment");
    let forged_sig = ch
        .secp
        .sign_ecdsa(&Message::from_digest([7; 32]), &ch.peer.funding_key(None));
    let forged_commitment = forge == Forge::Commitment;
    if forged_commitment {
        sig = forged_sig;
    }
    let forged_htlc = forge == Forge::Htlc && !htlc_sigs.is_empty();
    if forged_htlc {
        htlc_sigs[0] = forged_sig;
    }
    let holder = HolderCommitmentTransaction::new(
        tx,
        sig,
        htlc_sigs,
        &ch.params.holder_pubkeys.funding_pubkey,
        &ch.peer_pubkeys().funding_pubkey,
    );
    (holder, forged_commitment, forged_htlc)
}

#[test]
fn property_the_customer_loses_no_more_than_approved_spending_and_bounded_fees() {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = CASES;
    }
    config.failure_persistence = None;
    let mut runner = TestRunner::new(config);
    let result = runner.run(&actions(), |actions| Play::new().play(&actions));
    if std::env::var_os("PROPERTY_STATS").is_some() {
        eprintln!("accepted requests: {:#?}", STATS.lock().expect("stats"));
    }
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Counts a refusal by its rule (with `PROPERTY_STATS` set).
fn noted(result: Result<Response, SignerError>) -> Result<Response, SignerError> {
    if std::env::var_os("PROPERTY_STATS").is_some() {
        let kind = match &result {
            Err(SignerError::Refused(reason)) => {
                format!("refused {}", reason.split(':').next().unwrap_or_default())
            }
            Err(e) => format!(
                "error {}",
                e.to_string().chars().take(40).collect::<String>()
            ),
            Ok(_) => return result,
        };
        *STATS.lock().expect("stats").entry(kind).or_default() += 1;
    }
    result
}

/// Accepted requests by kind, over a run (printed with `PROPERTY_STATS` set).
static STATS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
