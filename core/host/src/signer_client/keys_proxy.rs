//! LDK's node-level signing interfaces on the host, holding no private key: public data and
//! the handed-over symmetric keys answer what LDK asks synchronously; everything else is asked
//! of the node's signer (live, with a deadline, where LDK cannot wait).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bitcoin::absolute::LockTime;
use bitcoin::hex::{DisplayHex, FromHex};
use bitcoin::secp256k1::ecdh::SharedSecret;
use bitcoin::secp256k1::ecdsa::{RecoverableSignature, Signature};
use bitcoin::secp256k1::{schnorr, All, PublicKey, Scalar, Secp256k1};
use bitcoin::{ScriptBuf, Transaction, TxOut};
use flotilla_proto::{ChannelKeySet, Handover, KeysId, Request, Response, SignerError};
use lightning::ln::chan_utils::ChannelPublicKeys;
use lightning::ln::inbound_payment::ExpandedKey;
use lightning::ln::msgs::{DecodeError, UnsignedGossipMessage};
use lightning::ln::script::ShutdownScript;
use lightning::offers::invoice::UnsignedBolt12Invoice;
use lightning::sign::{
    EntropySource, NodeSigner, OutputSpender, PeerStorageKey, ReceiveAuthKey, Recipient,
    SignerProvider, SpendableOutputDescriptor,
};
use lightning::util::ser::{Readable, Writeable};
use lightning_invoice::RawBolt11Invoice;

use super::carried::{Carried, CarriedError};
use super::channel_signer_proxy::{ChannelSignerProxy, PointCache};
use super::link::SYNC_DEADLINE;
use super::pending::{Pending, Refused};
use super::retirements::Retirements;
use super::state_version::{SeenStateVersion, StateVersionError};
use crate::store::{Kv, KvWrite};

/// Key sets the host keeps unused, so opening a channel never waits for the signer.
const POOL_TARGET: usize = 4;
const KEYS_NAMESPACE: &str = "signer";
const KEYS_SUB: &str = "channel_keys";
const POOL_KEY: &str = "pool";

/// One node's keys interface for LDK, backed by its signer.
pub struct KeysProxy {
    handover: Handover,
    expanded_key: ExpandedKey,
    pending: Arc<Pending>,
    points: Arc<PointCache>,
    book: Arc<Mutex<KeyBook>>,
    carried: Arc<Carried>,
    state_version: SeenStateVersion,
    retirements: Retirements,
    kv: Kv,
    shutdown_script: ShutdownScript,
    /// The reason of the last sweep the signer refused, until one is signed: the sweeper asks
    /// again at every block, and the node's user is told of a refusal once, not per block.
    sweep_refused: Mutex<Option<String>>,
}

/// Every channel key set the signer handed over (by id), which are still unused, and which
/// are set aside for channels about to be created (by their user channel id).
#[derive(Default)]
struct KeyBook {
    known: HashMap<KeysId, ChannelPublicKeys>,
    pool: Vec<KeysId>,
    reserved: HashMap<u128, KeysId>,
    refilling: bool,
}

/// Why a node's keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("stored channel keys are unreadable: {0}")]
    Corrupt(String),
    #[error("storing channel keys failed: {0}")]
    Store(String),
    #[error("the signer's shutdown script is not a standard segwit script")]
    BadShutdownScript,
    #[error(transparent)]
    Signer(#[from] SignerError),
    #[error(transparent)]
    Carried(#[from] CarriedError),
    #[error(transparent)]
    StateVersion(#[from] StateVersionError),
}

impl KeysProxy {
    /// Loads the key sets stored for this node and tops the pool up if the signer is attached.
    pub fn load(handover: Handover, pending: Arc<Pending>, kv: Kv) -> Result<Self, KeysError> {
        let shutdown_script = ShutdownScript::try_from(handover.shutdown_script.clone())
            .map_err(|_| KeysError::BadShutdownScript)?;
        let mut book = KeyBook::default();
        for name in kv
            .list(KEYS_NAMESPACE, KEYS_SUB)
            .map_err(|e| KeysError::Store(e.to_string()))?
        {
            let bytes = kv
                .read(KEYS_NAMESPACE, KEYS_SUB, &name)
                .map_err(|e| KeysError::Store(e.to_string()))?;
            if name == POOL_KEY {
                book.pool = decode_ids(&bytes)?;
                continue;
            }
            let id = <[u8; 32]>::from_hex(&name)
                .map_err(|_| KeysError::Corrupt(format!("key name {name}")))?;
            let pubkeys = ChannelPublicKeys::read(&mut &bytes[..])
                .map_err(|e: DecodeError| KeysError::Corrupt(e.to_string()))?;
            book.known.insert(id, pubkeys);
        }
        if let Some(missing) = book.pool.iter().find(|id| !book.known.contains_key(*id)) {
            return Err(KeysError::Corrupt(format!(
                "pooled key set {} has no keys",
                missing.to_lower_hex_string()
            )));
        }
        let expanded_key = ExpandedKey::new(handover.inbound_payment_key);
        let carried = Arc::new(Carried::load(kv.as_ref())?);
        let state_version = SeenStateVersion::load(kv.as_ref(), pending.link().clone())?;
        let retirements = Retirements::load(
            kv.clone(),
            pending.link().clone(),
            pending.runtime().clone(),
        )
        .map_err(KeysError::Corrupt)?;
        Ok(KeysProxy {
            handover,
            expanded_key,
            pending,
            points: Arc::new(PointCache::default()),
            book: Arc::new(Mutex::new(book)),
            carried,
            state_version,
            retirements,
            kv,
            shutdown_script,
            sweep_refused: Mutex::new(None),
        })
    }

    pub fn node_id(&self) -> PublicKey {
        self.handover.node_id
    }

    /// What the host carries to the signer with later requests, saved with the monitor
    /// updates that record it.
    pub fn carried(&self) -> &Carried {
        &self.carried
    }

    /// The highest signer state version seen for the node, saved with it.
    pub fn state_version(&self) -> &SeenStateVersion {
        &self.state_version
    }

    /// What a save of the node's channels writes besides them: the notes carried to the
    /// signer and the signer state version seen since the last save.
    pub fn unsaved_notes(&self) -> Vec<KvWrite> {
        let mut writes = self.carried.unsaved();
        writes.extend(self.state_version.unsaved());
        writes
    }

    /// The writes that retire `keys_ids` (channels whose monitors are archived), to commit
    /// with the archive: the host's record of each key set goes, and each is marked for the
    /// signer until it acknowledges ([`Retirements`]).
    pub fn retire_writes(&self, keys_ids: &[KeysId]) -> Vec<KvWrite> {
        let mut writes = Retirements::marks(keys_ids);
        for id in keys_ids {
            writes.push(KvWrite::remove(
                KEYS_NAMESPACE,
                KEYS_SUB,
                &id.to_lower_hex_string(),
            ));
        }
        writes
    }

    /// The writes of [`Self::retire_writes`] are committed: forgets the key sets here (with
    /// their cached points and answers) and tells the signer, so it keeps only a tombstone of
    /// each.
    pub fn retire_channels(&self, keys_ids: &[KeysId]) {
        {
            let mut book = lock(&self.book);
            for id in keys_ids {
                book.known.remove(id);
            }
        }
        for id in keys_ids {
            self.points.forget(id);
            self.pending.forget(*id);
        }
        self.retirements.marked(keys_ids);
    }

    /// What the host owes a signer that just attached (or was there when the node started):
    /// every retirement it has not acknowledged, and a full pool of key sets.
    pub async fn signer_attached(&self) -> Result<(), KeysError> {
        self.retirements.resend();
        self.fill_pool().await
    }

    /// Fetches key sets until the pool holds [`POOL_TARGET`]; waits for the answer.
    async fn fill_pool(&self) -> Result<(), KeysError> {
        let need = POOL_TARGET.saturating_sub(lock(&self.book).pool.len());
        if need == 0 {
            return Ok(());
        }
        let answer = self
            .pending
            .link()
            .call(Request::NewChannelKeys { count: need as u32 })
            .await?;
        add_key_sets(&self.book, &self.kv, answer)
    }

    /// Asks for more key sets in the background once the pool runs low.
    fn refill_in_background(&self) {
        {
            let mut book = lock(&self.book);
            if book.refilling || book.pool.len() >= POOL_TARGET / 2 {
                return;
            }
            book.refilling = true;
        }
        let (book, kv, node) = (self.book.clone(), self.kv.clone(), self.node_id());
        self.pending.link().send(
            Request::NewChannelKeys {
                count: POOL_TARGET as u32,
            },
            Box::new(move |answer| {
                let result = answer
                    .map_err(KeysError::from)
                    .and_then(|answer| add_key_sets(&book, &kv, answer));
                lock(&book).refilling = false;
                if let Err(e) = result {
                    tracing::warn!(%node, error = %e, "channel key pool refill failed");
                }
            }),
        );
    }

    /// Sets a key set aside for the channel LDK is about to create with `user_channel_id`:
    /// the signer approves the open for this key set, and LDK's `generate_channel_keys_id`
    /// returns it for that channel.
    pub fn reserve_channel_keys(&self, user_channel_id: u128) -> Result<KeysId, KeysError> {
        let keys_id = self.take_key_set()?;
        lock(&self.book).reserved.insert(user_channel_id, keys_id);
        Ok(keys_id)
    }

    /// Drops the reservation of a channel that was not created (its key set stays unused).
    pub fn release_channel_keys(&self, user_channel_id: u128) {
        lock(&self.book).reserved.remove(&user_channel_id);
    }

    /// Takes a key set from the pool (refilled in the background); if the pool is empty, asks
    /// the signer and waits.
    fn take_key_set(&self) -> Result<KeysId, KeysError> {
        let taken = {
            let mut book = lock(&self.book);
            let taken = book.pool.pop();
            if taken.is_some() {
                write_pool(&self.kv, &book)?;
            }
            taken
        };
        self.refill_in_background();
        if let Some(id) = taken {
            return Ok(id);
        }
        let answer = self
            .pending
            .link()
            .call_blocking(Request::NewChannelKeys { count: 1 }, SYNC_DEADLINE)?;
        add_key_sets(&self.book, &self.kv, answer)?;
        let mut book = lock(&self.book);
        let id = book.pool.pop().ok_or_else(|| {
            KeysError::Signer(SignerError::Malformed("the signer sent no key set".into()))
        })?;
        write_pool(&self.kv, &book)?;
        Ok(id)
    }

    fn live(&self, request: Request) -> Result<Response, ()> {
        let kind = request.kind();
        self.pending
            .link()
            .call_blocking(request, SYNC_DEADLINE)
            .map_err(|e| tracing::warn!(node = %self.node_id(), kind, error = %e, "signer request failed"))
    }
}

fn lock(book: &Mutex<KeyBook>) -> std::sync::MutexGuard<'_, KeyBook> {
    book.lock().unwrap_or_else(|p| p.into_inner())
}

/// Stores key sets the signer handed over (durable before use: a channel may be built on them
/// right after) and adds them to the pool.
fn add_key_sets(book: &Mutex<KeyBook>, kv: &Kv, answer: Response) -> Result<(), KeysError> {
    let sets = match answer {
        Response::ChannelKeys(sets) => sets,
        other => {
            return Err(KeysError::Signer(SignerError::Malformed(format!(
                "expected channel keys, got {other:?}"
            ))))
        }
    };
    let mut book = lock(book);
    for ChannelKeySet { keys_id, pubkeys } in sets {
        kv.write(
            KEYS_NAMESPACE,
            KEYS_SUB,
            &keys_id.to_lower_hex_string(),
            pubkeys.encode(),
        )
        .map_err(|e| KeysError::Store(e.to_string()))?;
        book.known.insert(keys_id, pubkeys);
        book.pool.push(keys_id);
    }
    write_pool(kv, &book)
}

fn write_pool(kv: &Kv, book: &KeyBook) -> Result<(), KeysError> {
    let bytes: Vec<u8> = book.pool.iter().flatten().copied().collect();
    kv.write(KEYS_NAMESPACE, KEYS_SUB, POOL_KEY, bytes)
        .map_err(|e| KeysError::Store(e.to_string()))
}

fn decode_ids(bytes: &[u8]) -> Result<Vec<KeysId>, KeysError> {
    if !bytes.len().is_multiple_of(32) {
        return Err(KeysError::Corrupt("pool length".into()));
    }
    Ok(bytes
        .chunks_exact(32)
        .map(|c| {
            let mut id = [0u8; 32];
            id.copy_from_slice(c);
            id
        })
        .collect())
}

/// Shared entropy for the host's own randomness (channel ids, onion session keys): not key
/// material of any node.
impl EntropySource for KeysProxy {
    fn get_secure_random_bytes(&self) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        bitcoin::secp256k1::rand::RngCore::fill_bytes(
            &mut bitcoin::secp256k1::rand::thread_rng(),
            &mut bytes,
        );
        bytes
    }
}

impl NodeSigner for KeysProxy {
    fn get_expanded_key(&self) -> ExpandedKey {
        self.expanded_key
    }

    fn get_peer_storage_key(&self) -> PeerStorageKey {
        PeerStorageKey {
            inner: self.handover.peer_storage_key,
        }
    }

    fn get_receive_auth_key(&self) -> ReceiveAuthKey {
        ReceiveAuthKey(self.handover.receive_auth_key)
    }

    fn get_node_id(&self, recipient: Recipient) -> Result<PublicKey, ()> {
        match recipient {
            Recipient::Node => Ok(self.handover.node_id),
            Recipient::PhantomNode => Err(()),
        }
    }

    fn ecdh(
        &self,
        recipient: Recipient,
        other_key: &PublicKey,
        tweak: Option<&Scalar>,
    ) -> Result<SharedSecret, ()> {
        if let Recipient::PhantomNode = recipient {
            return Err(());
        }
        let request = Request::Ecdh {
            other_key: *other_key,
            tweak: tweak.map(|t| t.to_be_bytes()),
        };
        match self.live(request) {
            Ok(Response::SharedSecret(bytes)) => Ok(SharedSecret::from_bytes(bytes)),
            // LDK 0.2 unwraps the ECDH of an HTLC's onion, so an Err would panic the node's
            // task and strand the HTLC. A secret nobody knows fails the onion's HMAC check
            // instead: LDK fails that HTLC back, a handshake or onion message just fails.
            _ => Ok(SharedSecret::from_bytes(self.get_secure_random_bytes())),
        }
    }

    fn sign_invoice(
        &self,
        invoice: &RawBolt11Invoice,
        recipient: Recipient,
    ) -> Result<RecoverableSignature, ()> {
        if let Recipient::PhantomNode = recipient {
            return Err(());
        }
        let (hrp, data) = invoice.to_raw();
        let request = Request::SignInvoice {
            hrp,
            data: data.into_iter().map(u8::from).collect(),
        };
        match self.live(request)? {
            Response::RecoverableSignature(sig) => Ok(sig),
            _ => Err(()),
        }
    }

    /// BOLT12 is not offered by hosted nodes yet.
    fn sign_bolt12_invoice(
        &self,
        _invoice: &UnsignedBolt12Invoice,
    ) -> Result<schnorr::Signature, ()> {
        Err(())
    }

    fn sign_gossip_message(&self, msg: UnsignedGossipMessage) -> Result<Signature, ()> {
        let msg_type = match msg {
            UnsignedGossipMessage::ChannelAnnouncement(_) => 256,
            UnsignedGossipMessage::NodeAnnouncement(_) => 257,
            UnsignedGossipMessage::ChannelUpdate(_) => 258,
        };
        let request = Request::SignGossip {
            msg_type,
            msg: msg.encode(),
        };
        match self.live(request) {
            Ok(Response::Signature(sig)) => Ok(sig),
            // LDK panics (the whole host) if a channel update cannot be signed. A placeholder
            // fails the peer's check instead: that one update is ignored, nothing else breaks,
            // and the next update (LDK sends them again) is signed for real.
            _ if msg_type == 258 => {
                tracing::error!(node = %self.node_id(), "channel update unsigned: signer did not answer");
                Ok(super::channel_signer_proxy::placeholder_signature())
            }
            _ => Err(()),
        }
    }

    fn sign_message(&self, msg: &[u8]) -> Result<String, ()> {
        match self.live(Request::SignMessage { msg: msg.to_vec() })? {
            Response::Message(text) => Ok(text),
            _ => Err(()),
        }
    }
}

impl SignerProvider for KeysProxy {
    type EcdsaSigner = ChannelSignerProxy;

    /// The key set reserved for this channel's approved open; any other channel gets one
    /// from the pool, and the signer refuses to sign for it.
    fn generate_channel_keys_id(&self, _inbound: bool, user_channel_id: u128) -> [u8; 32] {
        if let Some(id) = lock(&self.book).reserved.remove(&user_channel_id) {
            return id;
        }
        // LDK cannot be told "no keys": an id without keys yields a channel whose signatures
        // the signer refuses, so the open fails cleanly at negotiation.
        self.take_key_set().unwrap_or_else(|e| {
            tracing::error!(error = %e, "no channel keys from the signer");
            [0u8; 32]
        })
    }

    fn derive_channel_signer(&self, channel_keys_id: [u8; 32]) -> ChannelSignerProxy {
        let pubkeys = lock(&self.book).known.get(&channel_keys_id).cloned();
        let pubkeys = pubkeys.unwrap_or_else(|| {
            tracing::error!(keys_id = %channel_keys_id.to_lower_hex_string(), "unknown channel keys; the signer will refuse this channel");
            placeholder_pubkeys()
        });
        ChannelSignerProxy::new(
            channel_keys_id,
            pubkeys,
            self.pending.clone(),
            self.points.clone(),
            self.carried.clone(),
        )
    }

    fn get_destination_script(&self, _channel_keys_id: [u8; 32]) -> Result<ScriptBuf, ()> {
        Ok(self.handover.shutdown_script.clone())
    }

    fn get_shutdown_scriptpubkey(&self) -> Result<ShutdownScript, ()> {
        Ok(self.shutdown_script.clone())
    }
}

/// Public keys of the generator point: valid keys no signer ever signs for.
fn placeholder_pubkeys() -> ChannelPublicKeys {
    use lightning::ln::channel_keys::{
        DelayedPaymentBasepoint, HtlcBasepoint, RevocationBasepoint,
    };
    let secp = Secp256k1::signing_only();
    let one = bitcoin::secp256k1::SecretKey::from_slice(&[
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 1,
    ])
    .expect("1 is a valid secret key");
    let g = PublicKey::from_secret_key(&secp, &one);
    ChannelPublicKeys {
        funding_pubkey: g,
        revocation_basepoint: RevocationBasepoint::from(g),
        payment_point: g,
        delayed_payment_basepoint: DelayedPaymentBasepoint::from(g),
        htlc_basepoint: HtlcBasepoint::from(g),
    }
}

impl OutputSpender for KeysProxy {
    fn spend_spendable_outputs(
        &self,
        descriptors: &[&SpendableOutputDescriptor],
        outputs: Vec<TxOut>,
        change_destination_script: ScriptBuf,
        feerate_sat_per_1000_weight: u32,
        locktime: Option<LockTime>,
        _secp: &Secp256k1<All>,
    ) -> Result<Transaction, ()> {
        let request = Request::SpendOutputs {
            descriptors: descriptors.iter().map(|d| (*d).clone()).collect(),
            outputs,
            change_script: change_destination_script,
            feerate_sat_per_1000_weight,
            locktime: locktime.map(|l| l.to_consensus_u32()),
        };
        let answer = self.pending.link().call_blocking(request, SYNC_DEADLINE);
        let mut last = self.sweep_refused.lock().unwrap_or_else(|p| p.into_inner());
        match answer {
            Ok(Response::Transaction(tx)) => {
                *last = None;
                Ok(tx)
            }
            // Nothing else waits on a sweep: the refusal is the user's only news of it.
            Err(SignerError::Refused(reason)) => {
                if last.as_ref() != Some(&reason) {
                    *last = Some(reason.clone());
                    self.pending.refused(Refused {
                        kind: "spend_outputs",
                        channel_id: None,
                        reason,
                    });
                }
                Err(())
            }
            other => {
                tracing::warn!(node = %self.node_id(), answer = ?other, "sweep not signed");
                Err(())
            }
        }
    }
}
