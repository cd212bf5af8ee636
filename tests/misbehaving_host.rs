//! A misbehaving host cannot make the signer sign what its policy forbids.
//!
//! The test plays the host: it runs core's `SignerHub` and sends, over real gRPC with TLS, the
//! requests an honest LDK node would never send to a real `flotilla signer` OS process (its state
//! on disk). Each refusal is checked for its rule name, and each is paired with the honest
//! variant of the same request, which is signed: the refusal is the rule's doing, not a malformed
//! request's. Channels are built with LDK's own types against channel keys the signer handed out,
//! and a peer whose keys LDK derives from a seed of its own.
//!
//! What the requests alone cannot show (see ARCHITECTURE "Known gaps") is not tested here.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::bip32::{ChildNumber, DerivationPath, Fingerprint, Xpub};
use bitcoin::hashes::{sha256d, Hash};
use bitcoin::hex::DisplayHex;
use bitcoin::psbt::Input as PsbtInput;
use bitcoin::secp256k1::ecdsa::Signature;
use bitcoin::secp256k1::{All, Message, PublicKey, Secp256k1, SecretKey};
use bitcoin::{
    absolute::LockTime, transaction::Version, Amount, CompressedPublicKey, OutPoint as BtcOutPoint,
    Psbt, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, WPubkeyHash, Witness,
};
use flotilla_host::signer_client::hub::SignerHub;
use flotilla_host::signer_client::link::SignerLink;
use flotilla_host::signer_client::tls::HubTls;
use flotilla_proto::{
    ClosingParts, Handover, HolderCommitment, KeysId, Request, Response, Revocation, SignerError,
};
use flotilla_tests::{flotilla_bin, write_seed};
use lightning::chain::transaction::OutPoint;
use lightning::ln::chan_utils::{
    get_countersigner_payment_script, make_funding_redeemscript, ChannelTransactionParameters,
    ClosingTransaction, CommitmentTransaction, CounterpartyChannelTransactionParameters,
    HTLCOutputInCommitment, HolderCommitmentTransaction,
};
use lightning::ln::msgs::UnsignedNodeAnnouncement;
use lightning::routing::gossip::{NodeAlias, NodeId};
use lightning::sign::ecdsa::EcdsaChannelSigner;
use lightning::sign::{
    ChannelDerivationParameters, ChannelSigner, HTLCDescriptor, InMemorySigner, KeysManager,
    NodeSigner, Recipient, SpendableOutputDescriptor, StaticPaymentOutputDescriptor,
};
use lightning::types::features::{ChannelTypeFeatures, NodeFeatures};
use lightning::types::payment::PaymentHash;
use lightning::util::ser::Writeable;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

// ---------------------------------------------------------------------------------------------
// Helpers

/// The channel peer's seed (its keys are LDK's; the signer never sees this seed).
const PEER_SEED: [u8; 32] = [22; 32];
/// LDK's first commitment number; they count down.
const TOP: u64 = (1 << 48) - 1;
const CHANNEL_SAT: u64 = 1_000_000;
/// Our balance in every commitment built here.
const TO_US_SAT: u64 = 500_000;
/// The feerate of the commitments built here (the floor every node relays).
const FEERATE: u32 = 253;
/// What a commitment without HTLCs pays at `FEERATE` (183 sat).
const COMMITMENT_FEE_SAT: u64 = commitment_fee(FEERATE, 0);
const MAX_PAYMENT_MSAT: u64 = 50_000_000;
const MAX_PER_HOUR_MSAT: u64 = 80_000_000;
const MAX_FEE_SAT: u64 = 5_000;
/// How long one request or one attach may take.
const DEADLINE: Duration = Duration::from_secs(20);

fn p2wpkh(byte: u8) -> ScriptBuf {
    ScriptBuf::new_p2wpkh(&WPubkeyHash::from_byte_array([byte; 20]))
}

/// Nobody's: neither the signer's wallet nor allowed.
fn foreign_script() -> ScriptBuf {
    p2wpkh(1)
}

/// Not the signer's wallet, but in its policy's `allowed_scripts`.
fn allowlisted_script() -> ScriptBuf {
    p2wpkh(2)
}

/// The peer's closing output.
fn peer_script() -> ScriptBuf {
    p2wpkh(3)
}

fn peer_keys() -> KeysManager {
    KeysManager::new(&PEER_SEED, 1, 2, true)
}

/// The approval the host asks before it sends a payment of `amount_msat` for hash `[hash; 32]`.
fn approve(hash: u8, amount_msat: u64) -> Request {
    Request::ApprovePayment {
        payment_hash: [hash; 32],
        amount_msat,
        destination: allowed_peer(),
    }
}

/// The peer's node id: the one peer the policy lets open channels.
fn allowed_peer() -> PublicKey {
    peer_keys().get_node_id(Recipient::Node).expect("peer id")
}

fn key_of(byte: u8) -> PublicKey {
    PublicKey::from_secret_key(
        &Secp256k1::new(),
        &SecretKey::from_slice(&[byte; 32]).expect("key"),
    )
}

/// The signer's policy: limits, the peer it may open channels with, one allowlisted script.
fn policy() -> Value {
    let peer = allowed_peer();
    json!({
        "max_payment_msat": MAX_PAYMENT_MSAT,
        "max_outgoing_msat_per_hour": MAX_PER_HOUR_MSAT,
        "max_fee_sat": MAX_FEE_SAT,
        "allowed_peers": [peer.to_string()],
        "allowed_scripts": [allowlisted_script().as_bytes().to_lower_hex_string()],
    })
}

/// Asserts the signer refused under `rule` (the reason starts with the rule's name).
#[track_caller]
fn refused(result: Result<Response, SignerError>, rule: &str) {
    match result {
        Err(SignerError::Refused(reason)) => {
            assert!(
                reason.starts_with(rule),
                "refused for {reason:?}, not {rule}"
            )
        }
        other => panic!("expected a refusal under {rule}, got {other:?}"),
    }
}

#[track_caller]
fn signature(result: Result<Response, SignerError>) -> Signature {
    match result {
        Ok(Response::Signature(sig)) => sig,
        other => panic!("expected a signature, got {other:?}"),
    }
}

#[track_caller]
fn accepted(result: Result<Response, SignerError>) {
    assert!(
        matches!(result, Ok(Response::Accepted)),
        "expected Accepted, got {result:?}"
    );
}

/// What the funder of a commitment with `htlcs` HTLC outputs pays at `feerate` (BOLT 3,
/// without anchors, as the channels here are).
const fn commitment_fee(feerate: u32, htlcs: usize) -> u64 {
    feerate as u64 * (724 + 172 * htlcs as u64) / 1000
}

/// An HTLC as LDK lists it in a commitment; `offered` is from the broadcaster's view, so in
/// the peer's commitment our outgoing HTLCs are those with `offered: false`.
fn htlc(offered: bool, amount_msat: u64, hash: u8) -> HTLCOutputInCommitment {
    HTLCOutputInCommitment {
        offered,
        amount_msat,
        cltv_expiry: 700_000,
        payment_hash: PaymentHash([hash; 32]),
        transaction_output_index: None,
    }
}

/// The host side: a SignerHub with the node registered, and a `flotilla signer` process
/// (seed, policy and state dir in `dir`) attached to it.
struct Rig {
    dir: PathBuf,
    hub: Arc<SignerHub>,
    link: SignerLink,
    handover: Handover,
    config: PathBuf,
    signer: Child,
}

impl Rig {
    async fn start(name: &str, policy: Value) -> Rig {
        let dir = std::env::temp_dir().join(format!("flotilla-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        let seed_file = write_seed(&dir, name);
        let seed = flotilla_signer::seed::read_seed_file(&seed_file).expect("seed file reads");
        let node_id = flotilla_signer::seed::node_public_key(&seed).expect("node id");

        // As `flotilla host` does: a fresh CA for the hub; the signer gets only the CA file.
        let tls = HubTls::generate(&["localhost".into(), "127.0.0.1".into()]).expect("tls");
        tls.write(&dir.join("tls")).expect("tls files");
        let hub = SignerHub::start("127.0.0.1:0".parse().expect("addr"), &tls)
            .await
            .expect("hub");
        let link = SignerLink::new(node_id, hub.register(node_id));

        let config = dir.join("signer.json");
        let body = json!({
            "host_url": format!("https://{}", hub.local_addr()),
            "ca_file": dir.join("tls").join(flotilla_host::signer_client::tls::CA_FILE),
            "state_dir": dir.join("signer-state"),
            "seed_files": [seed_file],
            "policy": policy,
        });
        std::fs::write(&config, body.to_string()).expect("signer config");
        let signer = spawn_signer(&config);
        wait_attached(&link, true).await;
        let handover = hub
            .handover(&node_id)
            .borrow()
            .clone()
            .expect("the signer handed over");
        assert_eq!(handover.node_id, node_id);
        Rig {
            dir,
            hub,
            link,
            handover,
            config,
            signer,
        }
    }

    async fn ask(&self, request: Request) -> Result<Response, SignerError> {
        let kind = request.kind();
        tokio::time::timeout(DEADLINE, self.link.call(request))
            .await
            .unwrap_or_else(|_| panic!("no answer to {kind}"))
    }

    /// SIGKILL, then wait until the hub saw the stream end.
    async fn kill_signer(&mut self) {
        self.signer.start_kill().expect("kill signer");
        self.signer.wait().await.expect("signer exits");
        wait_attached(&self.link, false).await;
    }

    /// The same signer again: same seed, policy and state dir.
    async fn restart_signer(&mut self) {
        self.signer = spawn_signer(&self.config);
        wait_attached(&self.link, true).await;
    }

    async fn stop(mut self) {
        let _ = self.signer.start_kill();
        let _ = self.signer.wait().await;
        self.hub.shutdown().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn_signer(config: &Path) -> Child {
    signer_command(config)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", flotilla_bin().display()))
}

/// `flotilla signer --config <config>`, its errors on the test's stderr.
fn signer_command(config: &Path) -> Command {
    // Refusals are logged as warnings; keep them out of the test output unless asked for.
    let log = std::env::var("FLOTILLA_LOG").unwrap_or_else(|_| "error".into());
    let mut command = Command::new(flotilla_bin());
    command
        .arg("signer")
        .arg("--config")
        .arg(config)
        .env("FLOTILLA_LOG", log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    command
}

async fn wait_attached(link: &SignerLink, attached: bool) {
    let mut watch = link.attached();
    tokio::time::timeout(DEADLINE, watch.wait_for(|a| *a == attached))
        .await
        .unwrap_or_else(|_| panic!("the signer's attached state did not become {attached}"))
        .expect("hub alive");
}

/// A channel between the signer's node and the peer, on channel keys the signer handed out.
/// Builds the requests an LDK host would send for it.
struct Channel {
    keys_id: KeysId,
    params: ChannelTransactionParameters,
    /// The peer's channel keys (it signs our commitments with them).
    peer: InMemorySigner,
    secp: Secp256k1<All>,
}

impl Channel {
    /// A channel the peer opened to us, approved first (as the host does).
    async fn open(rig: &Rig, tag: u8) -> Channel {
        let ch = Channel::unapproved(rig, tag, false).await;
        accepted(rig.ask(ch.approval(allowed_peer())).await);
        ch
    }

    /// A channel we open, approved, whose parameters name the wallet transaction funding it
    /// (its first signature binds it; the signer signs that transaction only after the peer
    /// signed our first commitment).
    async fn open_funded(rig: &Rig, tag: u8) -> Channel {
        let mut ch = Channel::unapproved(rig, tag, true).await;
        accepted(rig.ask(ch.approval(allowed_peer())).await);
        let txid = ch.funding_psbt(&rig.handover).unsigned_tx.compute_txid();
        ch.params.funding_outpoint = Some(OutPoint { txid, index: 0 });
        ch
    }

    async fn unapproved(rig: &Rig, tag: u8, outbound: bool) -> Channel {
        let set = match rig.ask(Request::NewChannelKeys { count: 1 }).await {
            Ok(Response::ChannelKeys(mut sets)) if sets.len() == 1 => sets.remove(0),
            other => panic!("channel keys: {other:?}"),
        };
        let peer = peer_keys().derive_channel_keys(&[tag; 32]);
        let secp = Secp256k1::new();
        let params = ChannelTransactionParameters {
            holder_pubkeys: set.pubkeys,
            holder_selected_contest_delay: 144,
            is_outbound_from_holder: outbound,
            counterparty_parameters: Some(CounterpartyChannelTransactionParameters {
                pubkeys: peer.pubkeys(&secp),
                selected_contest_delay: 144,
            }),
            funding_outpoint: Some(OutPoint {
                txid: Txid::from_byte_array([tag; 32]),
                index: 0,
            }),
            splice_parent_funding_txid: None,
            // What hosted nodes negotiate (no anchors yet).
            channel_type_features: ChannelTypeFeatures::only_static_remote_key(),
            channel_value_satoshis: CHANNEL_SAT,
        };
        Channel {
            keys_id: set.keys_id,
            params,
            peer,
            secp,
        }
    }

    /// What the host asks before it opens (or accepts) this channel with `peer`.
    fn approval(&self, peer: PublicKey) -> Request {
        Request::ApproveChannelOpen {
            peer,
            value_sat: self.params.channel_value_satoshis,
            push_msat: 0,
            keys_id: self.keys_id,
            outbound: self.params.is_outbound_from_holder,
        }
    }

    /// A wallet transaction paying this channel's value to its funding output, the witness
    /// script named as the host names it.
    fn funding_psbt(&self, handover: &Handover) -> Psbt {
        let redeem = self.funding_redeemscript();
        let funding = TxOut {
            value: Amount::from_sat(self.params.channel_value_satoshis),
            script_pubkey: redeem.to_p2wsh(),
        };
        let (mut psbt, _) = wallet_psbt(handover, vec![funding], 1_000);
        psbt.outputs[0].witness_script = Some(redeem);
        psbt
    }

    /// The same channel keys, described by the host with other parameters.
    fn misdescribed(&self, change: impl FnOnce(&mut ChannelTransactionParameters)) -> Channel {
        let mut params = self.params.clone();
        change(&mut params);
        Channel {
            keys_id: self.keys_id,
            params,
            peer: self.peer.clone(),
            secp: Secp256k1::new(),
        }
    }

    fn funding_redeemscript(&self) -> ScriptBuf {
        let peer = self.params.counterparty_pubkeys().expect("populated");
        make_funding_redeemscript(
            &self.params.holder_pubkeys.funding_pubkey,
            &peer.funding_pubkey,
        )
    }

    /// The peer's commitment `number` giving us `to_us` sat besides `htlcs`.
    fn counterparty_tx(
        &self,
        number: u64,
        to_us: u64,
        htlcs: Vec<HTLCOutputInCommitment>,
    ) -> CommitmentTransaction {
        self.counterparty_tx_at(number, FEERATE, to_us, htlcs)
    }

    /// The same at `feerate`: the peer's balance is what is left once the fee is paid.
    fn counterparty_tx_at(
        &self,
        number: u64,
        feerate: u32,
        to_us: u64,
        htlcs: Vec<HTLCOutputInCommitment>,
    ) -> CommitmentTransaction {
        let point = self
            .peer
            .get_per_commitment_point(number, &self.secp)
            .expect("point");
        let (to_us, to_peer) = self.balances(feerate, to_us, &htlcs);
        CommitmentTransaction::new(
            number,
            &point,
            to_peer,
            to_us,
            feerate,
            htlcs,
            &self.params.as_counterparty_broadcastable(),
            &self.secp,
        )
    }

    /// Our balance and the peer's in a commitment at `feerate` holding `htlcs`, given `to_us`
    /// for the same without HTLCs: the funder pays for each
    /// HTLC's output as LDK does, the peer's balance is the rest.
    fn balances(&self, feerate: u32, to_us: u64, htlcs: &[HTLCOutputInCommitment]) -> (u64, u64) {
        let htlc_sat: u64 = htlcs.iter().map(|h| h.amount_msat / 1000).sum();
        let fee = commitment_fee(feerate, htlcs.len());
        let per_htlcs = fee - commitment_fee(feerate, 0);
        let to_us = if self.params.is_outbound_from_holder {
            to_us - per_htlcs
        } else {
            to_us
        };
        (to_us, CHANNEL_SAT - to_us - htlc_sat - fee)
    }

    fn sign_counterparty(&self, tx: &CommitmentTransaction) -> Request {
        Request::SignCounterpartyCommitment {
            keys_id: self.keys_id,
            params: self.params.clone(),
            tx: tx.clone(),
            inbound_preimages: vec![],
            outbound_preimages: vec![],
            revocation: None,
        }
    }

    /// The peer revokes its commitment `idx` with the secret of commitment `secret_of`.
    fn revoke(&self, idx: u64, secret_of: u64) -> Request {
        Request::ValidateCounterpartyRevocation {
            keys_id: self.keys_id,
            revocation: Revocation {
                idx,
                secret: self
                    .peer
                    .release_commitment_secret(secret_of)
                    .expect("secret"),
            },
        }
    }

    /// Asserts `result` is a valid signature of our funding key on `tx` (and one per HTLC).
    #[track_caller]
    fn signed_counterparty(
        &self,
        tx: &CommitmentTransaction,
        result: Result<Response, SignerError>,
    ) {
        let (commitment, htlcs) = match result {
            Ok(Response::CommitmentSignatures { commitment, htlcs }) => (commitment, htlcs),
            other => panic!(
                "expected commitment {} signed, got {other:?}",
                tx.commitment_number()
            ),
        };
        let sighash = tx
            .trust()
            .built_transaction()
            .get_sighash_all(&self.funding_redeemscript(), CHANNEL_SAT);
        self.secp
            .verify_ecdsa(
                &sighash,
                &commitment,
                &self.params.holder_pubkeys.funding_pubkey,
            )
            .expect("the commitment signature verifies");
        assert_eq!(htlcs.len(), tx.nondust_htlcs().len());
    }

    /// Signs the peer's commitment and checks the signature.
    async fn sign_counterparty_ok(&self, rig: &Rig, tx: &CommitmentTransaction) {
        self.signed_counterparty(tx, rig.ask(self.sign_counterparty(tx)).await);
    }

    /// Our commitment `number` (point from the signer), signed by the peer, or by nobody
    /// (`forged`: the peer's signature of another transaction).
    async fn holder_tx(&self, rig: &Rig, number: u64, forged: bool) -> HolderCommitmentTransaction {
        self.holder_tx_with(rig, number, TO_US_SAT, vec![], forged)
            .await
    }

    /// Our commitment `number` giving us `to_us` sat besides `htlcs`, signed by the peer as
    /// LDK's signer signs it (its HTLC signatures too), or `forged` (the commitment signature
    /// is the peer's signature of another transaction).
    async fn holder_tx_with(
        &self,
        rig: &Rig,
        number: u64,
        to_us: u64,
        htlcs: Vec<HTLCOutputInCommitment>,
        forged: bool,
    ) -> HolderCommitmentTransaction {
        self.holder_tx_at(rig, number, FEERATE, to_us, htlcs, forged)
            .await
    }

    /// The same at `feerate`: the peer's balance is what is left once the fee is paid.
    async fn holder_tx_at(
        &self,
        rig: &Rig,
        number: u64,
        feerate: u32,
        to_us: u64,
        htlcs: Vec<HTLCOutputInCommitment>,
        forged: bool,
    ) -> HolderCommitmentTransaction {
        let point = self.holder_point(rig, number).await;
        let (to_us, to_peer) = self.balances(feerate, to_us, &htlcs);
        let tx = CommitmentTransaction::new(
            number,
            &point,
            to_us,
            to_peer,
            feerate,
            htlcs,
            &self.params.as_holder_broadcastable(),
            &self.secp,
        );
        // To the peer, our commitment is its counterparty's.
        let (sig, htlc_sigs) = self
            .peer
            .sign_counterparty_commitment(&self.peer_params(), &tx, vec![], vec![], &self.secp)
            .expect("the peer signs our commitment");
        let sig = if forged {
            self.secp
                .sign_ecdsa(&Message::from_digest([7; 32]), &self.peer.funding_key(None))
        } else {
            sig
        };
        let peer = self.params.counterparty_pubkeys().expect("populated");
        HolderCommitmentTransaction::new(
            tx,
            sig,
            htlc_sigs,
            &self.params.holder_pubkeys.funding_pubkey,
            &peer.funding_pubkey,
        )
    }

    /// The channel's parameters as the peer holds them.
    fn peer_params(&self) -> ChannelTransactionParameters {
        let ours = &self.params;
        let theirs = ours.counterparty_parameters.as_ref().expect("populated");
        ChannelTransactionParameters {
            holder_pubkeys: theirs.pubkeys.clone(),
            holder_selected_contest_delay: theirs.selected_contest_delay,
            is_outbound_from_holder: !ours.is_outbound_from_holder,
            counterparty_parameters: Some(CounterpartyChannelTransactionParameters {
                pubkeys: ours.holder_pubkeys.clone(),
                selected_contest_delay: ours.holder_selected_contest_delay,
            }),
            ..ours.clone()
        }
    }

    async fn holder_point(&self, rig: &Rig, number: u64) -> PublicKey {
        match rig
            .ask(Request::PerCommitmentPoints {
                keys_id: self.keys_id,
                first: number,
                count: 1,
            })
            .await
        {
            Ok(Response::Points(points)) if points.len() == 1 => points[0],
            other => panic!("points: {other:?}"),
        }
    }

    fn validate_holder(&self, tx: HolderCommitmentTransaction) -> Request {
        Request::ValidateHolderCommitment {
            keys_id: self.keys_id,
            holder: HolderCommitment {
                params: Some(self.params.clone()),
                tx,
                outbound_preimages: vec![],
            },
        }
    }

    /// As LDK sends a validation before anything was signed since the host started.
    fn validate_holder_without_params(&self, tx: HolderCommitmentTransaction) -> Request {
        Request::ValidateHolderCommitment {
            keys_id: self.keys_id,
            holder: HolderCommitment {
                params: None,
                tx,
                outbound_preimages: vec![],
            },
        }
    }

    fn release_secret(&self, idx: u64) -> Request {
        Request::ReleaseCommitmentSecret {
            keys_id: self.keys_id,
            idx,
            holder: None,
        }
    }

    fn sign_holder(&self, tx: HolderCommitmentTransaction) -> Request {
        Request::SignHolderCommitment {
            keys_id: self.keys_id,
            params: self.params.clone(),
            tx,
        }
    }

    /// A mutual close paying us `to_us` to `script`, the rest less `fee` to the peer.
    fn close(&self, to_us: u64, script: &ScriptBuf, fee: u64) -> (Request, ClosingTransaction) {
        let to_peer = self.params.channel_value_satoshis - to_us - fee;
        let tx = ClosingTransaction::new(
            to_us,
            to_peer,
            script.clone(),
            peer_script(),
            self.params
                .funding_outpoint
                .expect("set")
                .into_bitcoin_outpoint(),
        );
        let request = Request::SignClosingTransaction {
            keys_id: self.keys_id,
            params: self.params.clone(),
            closing: ClosingParts {
                to_holder_sat: to_us,
                to_counterparty_sat: to_peer,
                to_holder_script: script.clone(),
                to_counterparty_script: peer_script(),
            },
        };
        (request, tx)
    }

    /// Asserts `result` is our funding key's signature of the closing transaction.
    #[track_caller]
    fn signed_close(&self, tx: &ClosingTransaction, result: Result<Response, SignerError>) {
        let sig = signature(result);
        let sighash = tx
            .trust()
            .get_sighash_all(&self.funding_redeemscript(), CHANNEL_SAT);
        self.secp
            .verify_ecdsa(&sighash, &sig, &self.params.holder_pubkeys.funding_pubkey)
            .expect("the closing signature verifies");
    }

    /// Our `to_remote` output of a commitment the peer broadcast: what the sweeper spends.
    fn to_remote_output(&self, sat: u64) -> SpendableOutputDescriptor {
        let script = get_countersigner_payment_script(
            &self.params.channel_type_features,
            &self.params.holder_pubkeys.payment_point,
        );
        SpendableOutputDescriptor::StaticPaymentOutput(StaticPaymentOutputDescriptor {
            outpoint: OutPoint {
                txid: Txid::from_byte_array([0x5e; 32]),
                index: 1,
            },
            output: TxOut {
                value: Amount::from_sat(sat),
                script_pubkey: script,
            },
            channel_keys_id: self.keys_id,
            channel_value_satoshis: CHANNEL_SAT,
            channel_transaction_parameters: Some(self.params.clone()),
        })
    }
}

/// The first key of the wallet's external chain, from the public descriptor the signer handed
/// over (`wpkh([fingerprint/84'/1'/0']tpub…/0/*)#checksum`): all a host knows of the wallet.
fn first_wallet_key(
    handover: &Handover,
    secp: &Secp256k1<All>,
) -> (PublicKey, Fingerprint, DerivationPath) {
    let descriptor = &handover.wallet_descriptors.0;
    let inner = descriptor
        .strip_prefix("wpkh([")
        .and_then(|d| d.split_once(')'))
        .map(|(inner, _)| inner)
        .unwrap_or_else(|| panic!("unexpected descriptor {descriptor}"));
    let (origin, key) = inner.split_once(']').expect("key origin");
    let (fingerprint, account) = origin.split_once('/').expect("origin path");
    let xpub: Xpub = key
        .split('/')
        .next()
        .expect("xpub")
        .parse()
        .expect("xpub parses");
    let chain = [
        ChildNumber::Normal { index: 0 },
        ChildNumber::Normal { index: 0 },
    ];
    let public = xpub.derive_pub(secp, &chain).expect("child key").public_key;
    let path: DerivationPath = format!("m/{account}/0/0").parse().expect("path");
    (public, fingerprint.parse().expect("fingerprint"), path)
}

/// A wallet transaction spending the wallet's first coin to `outputs`, paying `fee`; the coin's
/// previous transaction is in the PSBT, as bdk puts it, which proves its amount.
fn wallet_psbt(handover: &Handover, outputs: Vec<TxOut>, fee: u64) -> (Psbt, PublicKey) {
    let secp = Secp256k1::new();
    let (key, fingerprint, path) = first_wallet_key(handover, &secp);
    let input_sat = outputs.iter().map(|o| o.value.to_sat()).sum::<u64>() + fee;
    let coin = TxOut {
        value: Amount::from_sat(input_sat),
        script_pubkey: ScriptBuf::new_p2wpkh(&CompressedPublicKey(key).wpubkey_hash()),
    };
    // Any transaction with an input (one without would not decode: its input count reads as
    // the segwit marker).
    let previous = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: BtcOutPoint {
                txid: Txid::from_byte_array([0xa1; 32]),
                vout: 0,
            },
            ..TxIn::default()
        }],
        output: vec![coin.clone()],
    };
    let tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: BtcOutPoint {
                txid: previous.compute_txid(),
                vout: 0,
            },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            witness: Witness::new(),
        }],
        output: outputs,
    };
    let mut psbt = Psbt::from_unsigned_tx(tx).expect("psbt");
    let mut input = PsbtInput {
        witness_utxo: Some(coin),
        non_witness_utxo: Some(previous),
        ..Default::default()
    };
    input.bip32_derivation.insert(key, (fingerprint, path));
    psbt.inputs[0] = input;
    (psbt, key)
}

/// A wallet transaction paying 90,000 sat to `to`, with `fee`.
fn payment_psbt(handover: &Handover, to: ScriptBuf, fee: u64) -> (Psbt, PublicKey) {
    let output = TxOut {
        value: Amount::from_sat(90_000),
        script_pubkey: to,
    };
    wallet_psbt(handover, vec![output], fee)
}

fn node_announcement(node: PublicKey) -> UnsignedNodeAnnouncement {
    UnsignedNodeAnnouncement {
        features: NodeFeatures::empty(),
        timestamp: 1_700_000_000,
        node_id: NodeId::from_pubkey(&node),
        rgb: [1, 2, 3],
        alias: NodeAlias([b'f'; 32]),
        addresses: vec![],
        excess_address_data: vec![],
        excess_data: vec![],
    }
}

const NODE_ANNOUNCEMENT: u16 = 257;

// ---------------------------------------------------------------------------------------------
// The test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_host_cannot_make_the_signer_sign_what_its_policy_forbids() {
    let mut rig = Rig::start("misbehaving-host", policy()).await;
    let own = rig.handover.shutdown_script.clone();
    let secp = Secp256k1::new();

    // Channel opens: only with allowed peers, and the signer signs for no channel whose open
    // it did not approve (a host cannot skip the question).
    let allowed_peer = allowed_peer();
    let ch = Channel::unapproved(&rig, 1, false).await;
    let first = ch.counterparty_tx(TOP, TO_US_SAT, vec![]);
    refused(
        rig.ask(ch.sign_counterparty(&first)).await,
        "channel_not_approved",
    );
    refused(rig.ask(ch.approval(key_of(9))).await, "peer_not_allowed");
    accepted(rig.ask(ch.approval(allowed_peer)).await);

    // Counterparty commitments only move forward.
    ch.sign_counterparty_ok(&rig, &first).await;
    let second = ch.counterparty_tx(TOP - 1, TO_US_SAT, vec![]);
    ch.sign_counterparty_ok(&rig, &second).await;
    // LDK may ask again for the very same transaction.
    ch.sign_counterparty_ok(&rig, &second).await;
    // The same number with other contents (less for us): a second valid state for the peer.
    let other_second = ch.counterparty_tx(TOP - 1, TO_US_SAT - 10_000, vec![]);
    refused(
        rig.ask(ch.sign_counterparty(&other_second)).await,
        "conflicting_counterparty_commitment",
    );
    // An older number, whether the one signed before or another one.
    refused(
        rig.ask(ch.sign_counterparty(&first)).await,
        "stale_counterparty_commitment",
    );
    let other_first = ch.counterparty_tx(TOP, TO_US_SAT - 10_000, vec![]);
    refused(
        rig.ask(ch.sign_counterparty(&other_first)).await,
        "stale_counterparty_commitment",
    );

    // The channel's parameters are pinned by its first signature: the host cannot swap in
    // another peer, another value, or turn the peer's channel into ours. Each commitment is
    // consistent with the parameters it names.
    let swapped = ch.misdescribed(|p| {
        let other = peer_keys().derive_channel_keys(&[99; 32]);
        p.counterparty_parameters = Some(CounterpartyChannelTransactionParameters {
            pubkeys: other.pubkeys(&Secp256k1::new()),
            selected_contest_delay: 144,
        });
    });
    let resized = ch.misdescribed(|p| p.channel_value_satoshis += 100_000);
    let outbound = ch.misdescribed(|p| p.is_outbound_from_holder = true);
    for other in [&swapped, &resized, &outbound] {
        let tx = other.counterparty_tx(TOP - 2, TO_US_SAT, vec![]);
        refused(
            rig.ask(other.sign_counterparty(&tx)).await,
            "channel_parameters_changed",
        );
    }

    // A new commitment only once the peer revoked the one before the last: the peer never
    // holds more than the newest two unrevoked (it could broadcast an older, richer one).
    let third = ch.counterparty_tx(TOP - 2, TO_US_SAT, vec![]);
    refused(
        rig.ask(ch.sign_counterparty(&third)).await,
        "counterparty_not_revoked",
    );
    // Only with commitment TOP's own secret, and not the newest one's revocation.
    refused(rig.ask(ch.revoke(TOP, TOP - 1)).await, "invalid_revocation");
    refused(
        rig.ask(ch.revoke(TOP - 1, TOP - 1)).await,
        "invalid_revocation",
    );
    accepted(rig.ask(ch.revoke(TOP, TOP)).await);

    // New outgoing HTLCs: only of payments the signer approved, which is where the
    // per-payment limit and the hourly velocity limit apply.
    let paying = ch.counterparty_tx(TOP - 2, TO_US_SAT, vec![htlc(false, 40_000_000, 1)]);
    refused(
        rig.ask(ch.sign_counterparty(&paying)).await,
        "unapproved_htlc",
    );
    refused(
        rig.ask(approve(1, MAX_PAYMENT_MSAT + 1)).await,
        "max_payment",
    );
    accepted(rig.ask(approve(1, 40_000_000)).await);
    // Commitment TOP - 2 is still free: the refusals above left no trace.
    ch.sign_counterparty_ok(&rig, &paying).await;
    accepted(rig.ask(ch.revoke(TOP - 1, TOP - 1)).await);
    let beyond_hour = ch.counterparty_tx(
        TOP - 3,
        TO_US_SAT,
        vec![htlc(false, 40_000_000, 1), htlc(false, 45_000_000, 2)],
    );
    refused(
        rig.ask(ch.sign_counterparty(&beyond_hour)).await,
        "unapproved_htlc",
    );
    refused(rig.ask(approve(2, 45_000_000)).await, "velocity");
    accepted(rig.ask(approve(3, 1_000)).await);

    // Holder commitment secrets: commitment N's secret only once N - 1 was validated, i.e. the
    // peer's signature on it checked, so the node always holds a commitment it can broadcast.
    refused(
        rig.ask(ch.release_secret(TOP)).await,
        "secret_before_next_commitment",
    );
    accepted(
        rig.ask(ch.validate_holder(ch.holder_tx(&rig, TOP, false).await))
            .await,
    );
    refused(
        rig.ask(ch.release_secret(TOP)).await,
        "secret_before_next_commitment",
    );
    // A commitment N - 1 the peer did not sign does not count.
    refused(
        rig.ask(ch.validate_holder(ch.holder_tx(&rig, TOP - 1, true).await))
            .await,
        "invalid_counterparty_signature",
    );
    // Nor does it without parameters: the signer checks it against the pinned ones.
    refused(
        rig.ask(ch.validate_holder_without_params(ch.holder_tx(&rig, TOP - 1, true).await))
            .await,
        "invalid_counterparty_signature",
    );
    refused(
        rig.ask(ch.release_secret(TOP)).await,
        "secret_before_next_commitment",
    );
    accepted(
        rig.ask(ch.validate_holder_without_params(ch.holder_tx(&rig, TOP - 1, false).await))
            .await,
    );
    accepted(
        rig.ask(ch.validate_holder(ch.holder_tx(&rig, TOP - 1, false).await))
            .await,
    );
    // A channel with nothing pinned yet (an inbound one before its first signature): a holder
    // commitment without parameters could not be checked, so none is taken, not even the
    // first.
    let fresh = Channel::open(&rig, 3).await;
    for number in [TOP, TOP - 1] {
        refused(
            rig.ask(
                fresh.validate_holder_without_params(fresh.holder_tx(&rig, number, false).await),
            )
            .await,
            "channel_parameters_missing",
        );
    }
    match rig.ask(ch.release_secret(TOP)).await {
        Ok(Response::Secret(secret)) => {
            let secret = SecretKey::from_slice(&secret).expect("a key");
            assert_eq!(
                PublicKey::from_secret_key(&secp, &secret),
                ch.holder_point(&rig, TOP).await,
                "the secret of commitment TOP"
            );
        }
        other => panic!("expected the secret of TOP, got {other:?}"),
    }
    refused(
        rig.ask(ch.release_secret(TOP - 1)).await,
        "secret_before_next_commitment",
    );
    // A revoked commitment is never signed for broadcast; the current one is.
    refused(
        rig.ask(ch.sign_holder(ch.holder_tx(&rig, TOP, false).await))
            .await,
        "revoked_holder_commitment",
    );
    let current = ch.holder_tx(&rig, TOP - 1, false).await;
    let sig = signature(rig.ask(ch.sign_holder(current.clone())).await);
    let sighash = current
        .trust()
        .built_transaction()
        .get_sighash_all(&ch.funding_redeemscript(), CHANNEL_SAT);
    secp.verify_ecdsa(&sighash, &sig, &ch.params.holder_pubkeys.funding_pubkey)
        .expect("holder commitment signature verifies");

    // Mutual closes pay our side to the signer's own wallet or an allowlisted script, with a
    // fee within the cap when it is ours to pay (a channel we funded). Not `ch`: its payment
    // is still pending, and a close waits for that.
    let (request, _) = ch.close(TO_US_SAT, &own, 1_000);
    refused(rig.ask(request).await, "closing_with_pending_htlcs");
    let idle = Channel::open(&rig, 6).await;
    let (request, _) = idle.close(TO_US_SAT, &foreign_script(), 1_000);
    refused(rig.ask(request).await, "destination_not_allowed");
    let (request, tx) = idle.close(TO_US_SAT, &own, 1_000);
    idle.signed_close(&tx, rig.ask(request).await);
    let (request, tx) = idle.close(TO_US_SAT, &allowlisted_script(), 1_000);
    idle.signed_close(&tx, rig.ask(request).await);
    // All of a channel we funded is ours until a commitment says otherwise: a close before
    // the peer's first commitment pays us all of it but the fee.
    let funded = Channel::open_funded(&rig, 4).await;
    let all_but = |fee| CHANNEL_SAT - fee;
    let (request, _) = funded.close(all_but(MAX_FEE_SAT + 1), &own, MAX_FEE_SAT + 1);
    refused(rig.ask(request).await, "max_fee");
    let (request, _) = funded.close(TO_US_SAT, &own, MAX_FEE_SAT);
    refused(rig.ask(request).await, "closing_balance_mismatch");
    let (request, tx) = funded.close(all_but(MAX_FEE_SAT), &own, MAX_FEE_SAT);
    funded.signed_close(&tx, rig.ask(request).await);
    // Calling our channel the peer's, whose fee is not ours: its open says otherwise.
    let disowned = funded.misdescribed(|p| p.is_outbound_from_holder = false);
    let (request, _) = disowned.close(TO_US_SAT, &own, MAX_FEE_SAT + 1);
    refused(rig.ask(request).await, "channel_not_approved");

    // Sweeps (our output of a commitment the peer broadcast) go to the wallet, within the cap.
    let sweep = |change_script: ScriptBuf, outputs: Vec<TxOut>, feerate| Request::SpendOutputs {
        descriptors: vec![ch.to_remote_output(100_000)],
        outputs,
        change_script,
        feerate_sat_per_1000_weight: feerate,
        locktime: None,
    };
    refused(
        rig.ask(sweep(foreign_script(), vec![], 253)).await,
        "destination_not_allowed",
    );
    let theft = TxOut {
        value: Amount::from_sat(90_000),
        script_pubkey: foreign_script(),
    };
    refused(
        rig.ask(sweep(own.clone(), vec![theft], 253)).await,
        "destination_not_allowed",
    );
    // ~50,000 sat/kWU on a ~440 WU sweep: a fee of ~22,000 sat.
    refused(rig.ask(sweep(own.clone(), vec![], 50_000)).await, "max_fee");
    match rig.ask(sweep(own.clone(), vec![], 253)).await {
        Ok(Response::Transaction(tx)) => {
            assert_eq!(tx.output.len(), 1);
            assert_eq!(tx.output[0].script_pubkey, own);
            assert!(tx.output[0].value > Amount::from_sat(100_000 - MAX_FEE_SAT));
            assert!(!tx.input[0].witness.is_empty(), "the sweep is signed");
        }
        other => panic!("expected the sweep signed, got {other:?}"),
    }

    // Wallet transactions: to the wallet, an allowlisted script, or the funding of a channel
    // we open whose open was approved; within the fee cap.
    let (psbt, _) = payment_psbt(&rig.handover, foreign_script(), 1_000);
    refused(
        rig.ask(Request::SignPsbt { psbt }).await,
        "destination_not_allowed",
    );
    for unfunded in [&ch, &Channel::unapproved(&rig, 5, true).await] {
        refused(
            rig.ask(Request::SignPsbt {
                psbt: unfunded.funding_psbt(&rig.handover),
            })
            .await,
            "destination_not_allowed",
        );
    }
    let (psbt, _) = payment_psbt(&rig.handover, allowlisted_script(), MAX_FEE_SAT + 1);
    refused(rig.ask(Request::SignPsbt { psbt }).await, "max_fee");
    let (psbt, key) = payment_psbt(&rig.handover, allowlisted_script(), MAX_FEE_SAT);
    match rig.ask(Request::SignPsbt { psbt }).await {
        Ok(Response::Psbt(signed)) => {
            let bitcoin_key = bitcoin::PublicKey::new(key);
            assert!(
                signed.inputs[0].partial_sigs.contains_key(&bitcoin_key),
                "the wallet input is signed"
            );
        }
        other => panic!("expected the PSBT signed, got {other:?}"),
    }

    // Gossip: only announcements of this node.
    let ours = node_announcement(rig.handover.node_id);
    let gossip = |msg: &UnsignedNodeAnnouncement| Request::SignGossip {
        msg_type: NODE_ANNOUNCEMENT,
        msg: msg.encode(),
    };
    refused(
        rig.ask(gossip(&node_announcement(key_of(6)))).await,
        "gossip_not_ours",
    );
    let sig = signature(rig.ask(gossip(&ours)).await);
    let digest = Message::from_digest(sha256d::Hash::hash(&ours.encode()).to_byte_array());
    secp.verify_ecdsa(&digest, &sig, &rig.handover.node_id)
        .expect("announcement signature verifies");

    // After all that, the signer is attached and answers the next honest request.
    assert!(rig.link.is_attached(), "refusals detached the signer");
    let third = ch.counterparty_tx(TOP - 3, TO_US_SAT, vec![htlc(false, 40_000_000, 1)]);
    ch.sign_counterparty_ok(&rig, &third).await;

    // A restarted signer process remembers (its state dir): the same refusals, the same
    // newest commitment signs again, and the next one.
    rig.kill_signer().await;
    assert!(matches!(
        rig.link.call(ch.sign_counterparty(&third)).await,
        Err(SignerError::Unavailable)
    ));
    rig.restart_signer().await;
    refused(
        rig.ask(ch.sign_counterparty(&paying)).await,
        "stale_counterparty_commitment",
    );
    let other_third = ch.counterparty_tx(
        TOP - 3,
        TO_US_SAT - 10_000,
        vec![htlc(false, 40_000_000, 1)],
    );
    refused(
        rig.ask(ch.sign_counterparty(&other_third)).await,
        "conflicting_counterparty_commitment",
    );
    let tx = swapped.counterparty_tx(TOP - 4, TO_US_SAT, vec![]);
    refused(
        rig.ask(swapped.sign_counterparty(&tx)).await,
        "channel_parameters_changed",
    );
    // Commitment TOP - 2 is still unrevoked.
    refused(
        rig.ask(ch.sign_counterparty(&ch.counterparty_tx(TOP - 4, TO_US_SAT, vec![])))
            .await,
        "counterparty_not_revoked",
    );
    accepted(rig.ask(ch.revoke(TOP - 2, TOP - 2)).await);
    // It remembers this hour's spending too.
    refused(rig.ask(approve(2, 45_000_000)).await, "velocity");
    refused(
        rig.ask(ch.release_secret(TOP - 1)).await,
        "secret_before_next_commitment",
    );
    refused(
        rig.ask(ch.sign_holder(ch.holder_tx(&rig, TOP, false).await))
            .await,
        "revoked_holder_commitment",
    );
    ch.sign_counterparty_ok(&rig, &third).await;
    let fourth = ch.counterparty_tx(TOP - 4, TO_US_SAT, vec![htlc(false, 40_000_000, 1)]);
    ch.sign_counterparty_ok(&rig, &fourth).await;

    rig.stop().await;
}

/// Our balance moves only through HTLCs and fees: a commitment or a mutual close that hands
/// it to the peer otherwise is refused, the same move as a payment is signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_balance_moves_only_through_htlcs_and_fees() {
    let rig = Rig::start("balance", policy()).await;
    let own = rig.handover.shutdown_script.clone();
    // A channel we funded starts with all of its value ours but the commitment's fee.
    let ch = Channel::open_funded(&rig, 2).await;
    let full = CHANNEL_SAT - COMMITMENT_FEE_SAT;
    refused(
        rig.ask(ch.sign_counterparty(&ch.counterparty_tx(TOP, full - 60_000, vec![])))
            .await,
        "balance_moved_without_htlc",
    );
    ch.sign_counterparty_ok(&rig, &ch.counterparty_tx(TOP, full, vec![]))
        .await;

    // 60,000 sat of ours to the peer without an HTLC: past every payment limit unseen.
    let drained = ch.counterparty_tx(TOP - 1, full - 60_000, vec![]);
    refused(
        rig.ask(ch.sign_counterparty(&drained)).await,
        "balance_moved_without_htlc",
    );
    // 40,000 sat leaving as an outgoing HTLC is a payment (within the limits): signed; then
    // settled, the HTLC is gone and its value stays with the peer.
    accepted(rig.ask(approve(1, 40_000_000)).await);
    let paying = ch.counterparty_tx(TOP - 1, full - 40_000, vec![htlc(false, 40_000_000, 1)]);
    ch.sign_counterparty_ok(&rig, &paying).await;
    accepted(rig.ask(ch.revoke(TOP, TOP)).await);
    let settled = ch.counterparty_tx(TOP - 2, full - 40_000, vec![]);
    ch.sign_counterparty_ok(&rig, &settled).await;

    // A mutual close must pay us our balance, less the fee we pay as the funder.
    let balance = full - 40_000;
    for to_us in [0, balance - 5_000] {
        let (request, _) = ch.close(to_us, &own, 1_000);
        refused(rig.ask(request).await, "closing_balance_mismatch");
    }
    let (request, tx) = ch.close(balance - 1_000, &own, 1_000);
    ch.signed_close(&tx, rig.ask(request).await);
    rig.stop().await;
}

/// The fee ratchet: the host builds each commitment at a feerate of its choosing. As funder
/// our balance pays the fee, so a fee above the cap is refused, and so is one below what
/// nodes relay (the commitment could not confirm). A fee raised within the cap is signed; a
/// fee then lowered with the difference handed to the peer, not back to us, is refused (raise
/// and lower in turn, and the peer collects each swing), in the peer's commitments and in
/// ours; lowered with the difference back to us, it is signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fee_ratchet_and_fees_outside_the_floor_and_cap_are_refused() {
    let rig = Rig::start("fee-ratchet", policy()).await;
    let ch = Channel::open_funded(&rig, 3).await;
    let ours_at = |feerate| CHANNEL_SAT - commitment_fee(feerate, 0);
    let peers = |number, feerate, to_us| ch.counterparty_tx_at(number, feerate, to_us, vec![]);
    ch.sign_counterparty_ok(&rig, &peers(TOP, FEERATE, ours_at(FEERATE)))
        .await;
    refused(
        rig.ask(ch.sign_counterparty(&peers(TOP - 1, 252, ours_at(252))))
            .await,
        "commitment_feerate_below_floor",
    );
    // 8,000 sat/kw is 5,792 sat for this commitment, above the cap of 5,000.
    refused(
        rig.ask(ch.sign_counterparty(&peers(TOP - 1, 8_000, ours_at(8_000))))
            .await,
        "max_fee",
    );
    // 6,000 sat/kw is 4,344 sat: within the cap, paid from our balance.
    let raised = peers(TOP - 1, 6_000, ours_at(6_000));
    ch.sign_counterparty_ok(&rig, &raised).await;
    accepted(rig.ask(ch.revoke(TOP, TOP)).await);
    // Back to the floor, the 4,161 sat of fee going to the peer: refused.
    refused(
        rig.ask(ch.sign_counterparty(&peers(TOP - 2, FEERATE, ours_at(6_000))))
            .await,
        "balance_moved_without_htlc",
    );
    ch.sign_counterparty_ok(&rig, &peers(TOP - 2, FEERATE, ours_at(FEERATE)))
        .await;

    // Our own commitments, which the signer signs for broadcast, are held to the same.
    let holder =
        |number, feerate, to_us| ch.holder_tx_at(&rig, number, feerate, to_us, vec![], false);
    accepted(
        rig.ask(ch.validate_holder(holder(TOP, FEERATE, ours_at(FEERATE)).await))
            .await,
    );
    refused(
        rig.ask(ch.validate_holder(holder(TOP - 1, 8_000, ours_at(8_000)).await))
            .await,
        "max_fee",
    );
    accepted(
        rig.ask(ch.validate_holder(holder(TOP - 1, 6_000, ours_at(6_000)).await))
            .await,
    );
    refused(
        rig.ask(ch.validate_holder(holder(TOP - 2, FEERATE, ours_at(6_000)).await))
            .await,
        "balance_moved_without_htlc",
    );
    // The peer's own fee is the peer's: a channel it funds may pay any fee it likes, as long as
    // our balance does not pay it.
    let inbound = Channel::open(&rig, 4).await;
    let theirs =
        |number, feerate, to_us| inbound.counterparty_tx_at(number, feerate, to_us, vec![]);
    inbound
        .sign_counterparty_ok(&rig, &theirs(TOP, 20_000, TO_US_SAT))
        .await;
    refused(
        rig.ask(inbound.sign_counterparty(&theirs(TOP - 1, 30_000, TO_US_SAT - 1_000)))
            .await,
        "balance_moved_without_htlc",
    );
    rig.stop().await;
}

/// The wallet signs only as a wallet spends. A host that asks for SIGHASH_NONE|ANYONECANPAY
/// gets a signature that commits to no output (it could then pay the coin anywhere); one that
/// names a key path off the wallet's chains gets the seed's other keys used; one that lies
/// about an input's amount (a segwit signature commits only to its own input's) can combine
/// two signatures into a transaction whose fee the signer never saw. All refused; the honest
/// request is then signed, with SIGHASH_ALL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighash_none_foreign_key_paths_and_unproven_amounts_are_refused() {
    let rig = Rig::start("sighash", policy()).await;
    let own = rig.handover.shutdown_script.clone();
    let honest = || payment_psbt(&rig.handover, own.clone(), 1_000);
    let sign = |psbt: Psbt| rig.ask(Request::SignPsbt { psbt });

    let (mut none, _) = honest();
    none.inputs[0].sighash_type = Some(bitcoin::EcdsaSighashType::NonePlusAnyoneCanPay.into());
    refused(sign(none).await, "sighash_not_all");
    let (mut single, _) = honest();
    single.inputs[0].sighash_type = Some(bitcoin::EcdsaSighashType::Single.into());
    refused(sign(single).await, "sighash_not_all");

    // The seed's master key at a path no wallet address uses (m/0'/7): the signer must not
    // lend it out, whatever the output pays.
    let (mut foreign_path, key) = honest();
    let (fingerprint, _) = foreign_path.inputs[0].bip32_derivation[&key].clone();
    foreign_path.inputs[0]
        .bip32_derivation
        .insert(key, (fingerprint, "m/0'/7".parse().expect("path")));
    refused(sign(foreign_path).await, "key_path_not_wallet");

    // Amounts: no previous transaction, one that is not the input's, one that disagrees with
    // the amount the input claims.
    let (mut bare, _) = honest();
    bare.inputs[0].non_witness_utxo = None;
    refused(sign(bare).await, "input_amount_unproven");
    let (mut other, _) = honest();
    if let Some(previous) = other.inputs[0].non_witness_utxo.as_mut() {
        previous.lock_time = LockTime::from_consensus(1);
    }
    refused(sign(other).await, "input_amount_unproven");
    let (mut inflated, _) = honest();
    if let Some(claimed) = inflated.inputs[0].witness_utxo.as_mut() {
        claimed.value += Amount::from_sat(50_000);
    }
    refused(sign(inflated).await, "input_amount_unproven");

    // Nothing of that was recorded or signed: the signer is attached, and the honest request
    // is signed with SIGHASH_ALL.
    assert!(rig.link.is_attached(), "refusals detached the signer");
    let (psbt, key) = honest();
    match sign(psbt).await {
        Ok(Response::Psbt(signed)) => {
            let sig = signed.inputs[0]
                .partial_sigs
                .get(&bitcoin::PublicKey::new(key))
                .expect("the wallet input is signed");
            assert_eq!(sig.sighash_type, bitcoin::EcdsaSighashType::All);
        }
        other => panic!("expected the PSBT signed, got {other:?}"),
    }
    rig.stop().await;
}

/// Every outgoing HTLC belongs to a payment the signer approved. A host that sends one without
/// asking (the approval hook and the limits would be advisory) is refused, and so is one that
/// leans on an incoming HTLC of the same hash: a hosted node forwards nothing, and that
/// exemption let one incoming HTLC of X cover any number of outgoing ones of X, the incoming
/// failed back afterwards. The approved payment's HTLC is then signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unapproved_htlcs_are_refused_even_with_an_incoming_htlc_of_the_same_hash() {
    let rig = Rig::start("unapproved-htlc", policy()).await;
    let incoming = Channel::open(&rig, 2).await;
    let outgoing = Channel::open(&rig, 3).await;
    // The peer offers us 30,000 sat under hash 7 (our commitment holds it, signed by the peer).
    let held = incoming
        .holder_tx_with(
            &rig,
            TOP,
            TO_US_SAT,
            vec![htlc(false, 30_000_000, 7)],
            false,
        )
        .await;
    accepted(rig.ask(incoming.validate_holder(held)).await);
    // The host sends 30,000 sat under hash 7 on the other channel, twice over, never asking.
    let once = outgoing.counterparty_tx(TOP, TO_US_SAT, vec![htlc(false, 30_000_000, 7)]);
    refused(
        rig.ask(outgoing.sign_counterparty(&once)).await,
        "unapproved_htlc",
    );
    let small = outgoing.counterparty_tx(TOP, TO_US_SAT, vec![htlc(false, 1_000, 8)]);
    refused(
        rig.ask(outgoing.sign_counterparty(&small)).await,
        "unapproved_htlc",
    );

    // The host asks, as it does before every payment: the HTLC is signed, once counted.
    assert!(rig.link.is_attached(), "refusals detached the signer");
    accepted(rig.ask(approve(7, 30_000_000)).await);
    outgoing.sign_counterparty_ok(&rig, &once).await;
    rig.stop().await;
}

/// The signer signs our commitment for broadcast only as it validated it: a peer that co-signs
/// a commitment giving us nothing (the host would broadcast it, the channel's value the
/// peer's), or an HTLC the peer did not sign (it could never be claimed on chain), or an older
/// commitment than the newest validated, is refused. The host is left consistent: the honest
/// commitment is then validated and signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unvalidated_holder_commitments_are_not_signed() {
    let rig = Rig::start("unvalidated-holder", policy()).await;
    let secp = Secp256k1::new();
    // A channel we funded: all of its value is ours but the commitment's fee.
    let ch = Channel::open_funded(&rig, 2).await;
    let full = CHANNEL_SAT - COMMITMENT_FEE_SAT;

    // The peer co-signs a commitment that gives us nothing; the host asks it signed.
    let nothing = ch.holder_tx_with(&rig, TOP, 0, vec![], false).await;
    refused(
        rig.ask(ch.sign_holder(nothing.clone())).await,
        "balance_moved_without_htlc",
    );
    refused(
        rig.ask(ch.validate_holder(nothing)).await,
        "balance_moved_without_htlc",
    );
    // A payment of ours in flight (approved, as the host asks before sending), whose HTLC's
    // second-stage transaction the peer did not sign.
    accepted(rig.ask(approve(7, 30_000_000)).await);
    // In our own commitment, the HTLCs we offered are `offered`.
    let paying = || vec![htlc(true, 30_000_000, 7)];
    let mut unsigned_htlc = ch
        .holder_tx_with(&rig, TOP, full - 30_000, paying(), false)
        .await;
    unsigned_htlc.counterparty_htlc_sigs[0] = unsigned_htlc.counterparty_sig;
    refused(
        rig.ask(ch.sign_holder(unsigned_htlc)).await,
        "invalid_counterparty_signature",
    );

    // The honest first commitment is validated and signed.
    assert!(rig.link.is_attached(), "refusals detached the signer");
    let first = ch.holder_tx_with(&rig, TOP, full, vec![], false).await;
    let sig = signature(rig.ask(ch.sign_holder(first.clone())).await);
    let sighash = first
        .trust()
        .built_transaction()
        .get_sighash_all(&ch.funding_redeemscript(), CHANNEL_SAT);
    secp.verify_ecdsa(&sighash, &sig, &ch.params.holder_pubkeys.funding_pubkey)
        .expect("holder commitment signature verifies");
    // Once a newer one is validated, the older (not yet revoked) one is not signed again.
    let second = ch
        .holder_tx_with(&rig, TOP - 1, full - 30_000, paying(), false)
        .await;
    accepted(rig.ask(ch.validate_holder(second.clone())).await);
    refused(
        rig.ask(ch.sign_holder(first)).await,
        "holder_commitment_not_validated",
    );
    signature(rig.ask(ch.sign_holder(second)).await);
    rig.stop().await;
}

/// The signer signs a channel's funding only after the peer signed our first commitment and
/// the signer validated that signature: signed before, the coins could sit in the 2-of-2 with
/// nothing the node could close with, the peer holding them hostage. The host asks too early,
/// then with a forged commitment; both refused, and the funding is signed once the honest
/// commitment is validated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn funding_before_countersigned_is_refused() {
    let rig = Rig::start("funding-countersigned", policy()).await;
    let ch = Channel::open_funded(&rig, 2).await;
    let full = CHANNEL_SAT - COMMITMENT_FEE_SAT;
    let funding = || Request::SignPsbt {
        psbt: ch.funding_psbt(&rig.handover),
    };
    refused(rig.ask(funding()).await, "funding_before_countersigned");
    // Our signature of the peer's first commitment binds the channel to this funding; the
    // peer's of ours is still missing.
    ch.sign_counterparty_ok(&rig, &ch.counterparty_tx(TOP, full, vec![]))
        .await;
    refused(rig.ask(funding()).await, "funding_before_countersigned");
    let forged = ch.holder_tx_with(&rig, TOP, full, vec![], true).await;
    refused(
        rig.ask(ch.validate_holder(forged)).await,
        "invalid_counterparty_signature",
    );
    refused(rig.ask(funding()).await, "funding_before_countersigned");

    // The peer's signature of our first commitment, validated: the funding is signed.
    assert!(rig.link.is_attached(), "refusals detached the signer");
    let first = ch.holder_tx_with(&rig, TOP, full, vec![], false).await;
    accepted(rig.ask(ch.validate_holder(first)).await);
    match rig.ask(funding()).await {
        Ok(Response::Psbt(signed)) => assert!(
            !signed.inputs[0].partial_sigs.is_empty(),
            "the wallet input is signed"
        ),
        other => panic!("expected the funding signed, got {other:?}"),
    }
    rig.stop().await;
}

/// Every transaction the signer signs pays what the channel allows. Our HTLC-timeout
/// transaction pays the HTLC to our delayed output, not to a script the host chose, and its
/// fee (from the feerate the host names) is within the cap; claims of the peer's HTLC outputs
/// and justice transactions pay the wallet within the cap; a mutual close waits until no HTLC
/// is pending (a close drops them). Each is refused, then the honest one signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_stage_outputs_claim_fees_and_closes_with_pending_htlcs_are_checked() {
    let rig = Rig::start("second-stage", policy()).await;
    let own = rig.handover.shutdown_script.clone();
    let secp = Secp256k1::new();
    let ch = Channel::open(&rig, 2).await;
    let full = CHANNEL_SAT - COMMITMENT_FEE_SAT;
    // A payment of ours in flight on both commitments.
    accepted(rig.ask(approve(7, 30_000_000)).await);
    ch.sign_counterparty_ok(
        &rig,
        &ch.counterparty_tx(TOP, full - 30_000, vec![htlc(false, 30_000_000, 7)]),
    )
    .await;
    let holder = ch
        .holder_tx_with(
            &rig,
            TOP,
            full - 30_000,
            vec![htlc(true, 30_000_000, 7)],
            false,
        )
        .await;
    accepted(rig.ask(ch.validate_holder(holder.clone())).await);

    // Our HTLC-timeout transaction, as LDK's monitor builds it.
    let descriptor = HTLCDescriptor {
        channel_derivation_parameters: ChannelDerivationParameters {
            value_satoshis: CHANNEL_SAT,
            keys_id: ch.keys_id,
            transaction_parameters: ch.params.clone(),
        },
        commitment_txid: holder.trust().built_transaction().txid,
        per_commitment_number: TOP,
        per_commitment_point: ch.holder_point(&rig, TOP).await,
        feerate_per_kw: 253,
        htlc: holder.nondust_htlcs()[0].clone(),
        preimage: None,
        counterparty_sig: holder.counterparty_htlc_sigs[0],
    };
    let timeout_tx = |descriptor: &HTLCDescriptor| Transaction {
        version: Version::TWO,
        lock_time: LockTime::from_consensus(descriptor.htlc.cltv_expiry),
        input: vec![descriptor.unsigned_tx_input()],
        output: vec![descriptor.tx_output(&secp)],
    };
    let sign_htlc =
        |descriptor: &HTLCDescriptor, tx: Transaction| Request::SignHolderHtlcTransaction {
            keys_id: ch.keys_id,
            tx,
            input: 0,
            descriptor: descriptor.clone(),
        };
    let mut elsewhere = timeout_tx(&descriptor);
    elsewhere.output[0].script_pubkey = foreign_script();
    refused(
        rig.ask(sign_htlc(&descriptor, elsewhere)).await,
        "htlc_output_not_ours",
    );
    // 10,000 sat/kw makes the HTLC-timeout's fee (663 weight units) 6,630 sat, above the cap.
    let greedy = HTLCDescriptor {
        feerate_per_kw: 10_000,
        ..descriptor.clone()
    };
    refused(
        rig.ask(sign_htlc(&greedy, timeout_tx(&greedy))).await,
        "max_fee",
    );
    signature(
        rig.ask(sign_htlc(&descriptor, timeout_tx(&descriptor)))
            .await,
    );

    // A claim of the peer's HTLC output and a justice transaction: to the wallet, within the
    // cap.
    let claim_tx = |fee: u64| Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: BtcOutPoint {
                txid: Txid::from_byte_array([0xc1; 32]),
                vout: 0,
            },
            ..TxIn::default()
        }],
        output: vec![TxOut {
            value: Amount::from_sat(100_000 - fee),
            script_pubkey: own.clone(),
        }],
    };
    let claim = |fee| Request::SignCounterpartyHtlcTransaction {
        keys_id: ch.keys_id,
        params: ch.params.clone(),
        tx: claim_tx(fee),
        input: 0,
        amount: 100_000,
        per_commitment_point: key_of(9),
        htlc: htlc(true, 100_000_000, 8),
    };
    refused(rig.ask(claim(MAX_FEE_SAT + 1)).await, "max_fee");
    signature(rig.ask(claim(1_000)).await);
    let justice = |fee| Request::SignJusticeRevokedOutput {
        keys_id: ch.keys_id,
        params: ch.params.clone(),
        tx: claim_tx(fee),
        input: 0,
        amount: 100_000,
        per_commitment_key: [9; 32],
    };
    refused(rig.ask(justice(MAX_FEE_SAT + 1)).await, "max_fee");
    signature(rig.ask(justice(1_000)).await);

    // A mutual close while our HTLC is pending would drop it: refused.
    let (request, _) = ch.close(full - 30_000, &own, 1_000);
    refused(rig.ask(request).await, "closing_with_pending_htlcs");
    assert!(rig.link.is_attached(), "refusals detached the signer");
    rig.stop().await;
}

/// Two copies of one seed's state: the phone's, and a backup taken earlier (restored on a new
/// phone, or a second device). After the backup was taken the channel moved on and our
/// commitment was revoked; the backup's state still holds it as our newest. Attached, the
/// backup would sign it and the host could broadcast a revoked commitment, which hands the
/// peer the whole channel. The host has seen a newer state version from this node's signer,
/// so the backup is refused at attach, and the signer process ends saying its state is stale;
/// the phone's signer, back, signs only the newest commitment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_signer_state_is_refused_before_it_signs_a_revoked_commitment() {
    let mut rig = Rig::start("stale-signer-state", policy()).await;
    let ch = Channel::open_funded(&rig, 4).await;
    let full = CHANNEL_SAT - COMMITMENT_FEE_SAT;
    let first = ch.holder_tx_with(&rig, TOP, full, vec![], false).await;
    accepted(rig.ask(ch.validate_holder(first.clone())).await);

    // The backup: the state directory as it is now (the signer down while it is copied).
    rig.kill_signer().await;
    let backup_dir = rig.dir.join("backup-state");
    copy_files(&rig.dir.join("signer-state"), &backup_dir);
    rig.restart_signer().await;

    // The channel moves on: commitment TOP - 1 validated, TOP revoked.
    let second = ch.holder_tx_with(&rig, TOP - 1, full, vec![], false).await;
    accepted(rig.ask(ch.validate_holder(second.clone())).await);
    assert!(matches!(
        rig.ask(ch.release_secret(TOP)).await,
        Ok(Response::Secret(_))
    ));
    rig.kill_signer().await;

    // The backup dials in, and is refused: the process ends with the reason.
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(&rig.config).expect("config")).expect("json");
    config["state_dir"] = json!(backup_dir);
    let backup_config = rig.dir.join("backup.json");
    std::fs::write(&backup_config, config.to_string()).expect("backup config");
    let backup = signer_command(&backup_config)
        .stderr(Stdio::piped())
        .output();
    let backup = tokio::time::timeout(DEADLINE, backup)
        .await
        .expect("the stale signer gives up instead of retrying")
        .expect("the stale signer ran");
    let stderr = String::from_utf8_lossy(&backup.stderr);
    assert!(
        !backup.status.success(),
        "a stale signer exits with an error"
    );
    assert!(stderr.contains("stale signer state"), "{stderr}");
    assert!(!rig.link.is_attached(), "the stale signer never attached");
    assert!(matches!(
        rig.ask(ch.sign_holder(first.clone())).await,
        Err(SignerError::Unavailable)
    ));

    // The phone's signer is back: the revoked commitment is refused, the newest one signed.
    rig.restart_signer().await;
    refused(
        rig.ask(ch.sign_holder(first)).await,
        "revoked_holder_commitment",
    );
    signature(rig.ask(ch.sign_holder(second)).await);
    rig.stop().await;
}

/// Copies the files of `from` (a signer's state directory) into a new `to`.
fn copy_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("backup dir");
    for entry in std::fs::read_dir(from).expect("state dir") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            let name = path.file_name().expect("file name");
            std::fs::copy(&path, to.join(name)).expect("copy");
        }
    }
}
