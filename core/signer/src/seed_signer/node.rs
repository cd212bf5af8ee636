//! Node-level requests: what the node key signs (handshakes, onions, invoices, gossip,
//! messages), fresh channel key sets, and the approval of outgoing payments.

use bitcoin::bech32::Fe32;
use bitcoin::secp256k1::Scalar;
use flotilla_proto::{ChannelKeySet, Request, Response, SignerError};
use lightning::ln::msgs::{
    UnsignedChannelAnnouncement, UnsignedChannelUpdate, UnsignedGossipMessage,
    UnsignedNodeAnnouncement,
};
use lightning::routing::gossip::NodeId;
use lightning::sign::{ChannelSigner, EntropySource, NodeSigner, Recipient, SignerProvider};
use lightning::util::ser::LengthReadable;
use lightning_invoice::RawBolt11Invoice;

use super::{lock, SeedSigner, CHANNEL_ANNOUNCEMENT, CHANNEL_UPDATE, MAX_BATCH, NODE_ANNOUNCEMENT};
use crate::policy::{PaymentApproval, Refusal};

impl SeedSigner {
    /// Answers a request made with the node key, not about one channel or the wallet.
    pub(super) fn node_request(
        &self,
        kind: &str,
        request: Request,
    ) -> Result<Response, SignerError> {
        let ldk = |what: &str| self.malformed(kind, format!("LDK could not {what}"));
        match request {
            Request::NewChannelKeys { count } => self.new_channel_keys(kind, count),
            Request::Ecdh { other_key, tweak } => {
                let tweak = tweak
                    .map(Scalar::from_be_bytes)
                    .transpose()
                    .map_err(|_| self.malformed(kind, "tweak is not a scalar"))?;
                self.keys
                    .ecdh(Recipient::Node, &other_key, tweak.as_ref())
                    .map(|s| Response::SharedSecret(s.secret_bytes()))
                    .map_err(|()| ldk("compute the shared secret"))
            }
            Request::SignInvoice { hrp, data } => {
                let data = data
                    .into_iter()
                    .map(Fe32::try_from)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| self.malformed(kind, "invoice data is not 5-bit values"))?;
                let raw = RawBolt11Invoice::from_raw(&hrp, &data)
                    .map_err(|e| self.malformed(kind, format!("invoice: {e}")))?;
                self.keys
                    .sign_invoice(&raw, Recipient::Node)
                    .map(Response::RecoverableSignature)
                    .map_err(|()| ldk("sign the invoice"))
            }
            Request::SignGossip { msg_type, msg } => self.sign_gossip(kind, msg_type, &msg),
            Request::SignMessage { msg } => self
                .keys
                .sign_message(&msg)
                .map(Response::Message)
                .map_err(|()| ldk("sign the message")),
            Request::ApprovePayment {
                payment_hash,
                amount_msat,
                destination,
            } => self.approve_payment(
                kind,
                PaymentApproval {
                    payment_hash,
                    amount_msat,
                    destination,
                },
            ),
            other => Err(self.malformed(
                kind,
                format!("{} is not a node-level request", other.kind()),
            )),
        }
    }

    fn new_channel_keys(&self, kind: &str, count: u32) -> Result<Response, SignerError> {
        if count > MAX_BATCH {
            return Err(self.malformed(kind, format!("{count} key sets at once")));
        }
        let mut sets = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let random = self.keys.get_secure_random_bytes();
            let mut user_channel_id = [0u8; 16];
            user_channel_id.copy_from_slice(&random[..16]);
            let keys_id = self
                .keys
                .generate_channel_keys_id(false, u128::from_be_bytes(user_channel_id));
            let signer = self.channel(&keys_id);
            sets.push(ChannelKeySet {
                keys_id,
                pubkeys: signer.pubkeys(&self.secp),
            });
        }
        Ok(Response::ChannelKeys(sets))
    }

    fn sign_gossip(&self, kind: &str, msg_type: u16, msg: &[u8]) -> Result<Response, SignerError> {
        let ours = NodeId::from_pubkey(&self.node_id);
        let bad = |what: &str| self.malformed(kind, format!("{what} does not decode"));
        let not_ours = |what: &str| {
            self.refuse(
                kind,
                Refusal {
                    rule: "gossip_not_ours",
                    reason: format!("{what} does not name this node"),
                },
            )
        };
        let mut reader = msg;
        let sign = |gossip: UnsignedGossipMessage| {
            self.keys
                .sign_gossip_message(gossip)
                .map(Response::Signature)
                .map_err(|()| self.malformed(kind, "LDK could not sign the gossip"))
        };
        match msg_type {
            CHANNEL_ANNOUNCEMENT => {
                let m = UnsignedChannelAnnouncement::read_from_fixed_length_buffer(&mut reader)
                    .map_err(|_| bad("channel_announcement"))?;
                if m.node_id_1 != ours && m.node_id_2 != ours {
                    return Err(not_ours("channel_announcement"));
                }
                sign(UnsignedGossipMessage::ChannelAnnouncement(&m))
            }
            NODE_ANNOUNCEMENT => {
                let m = UnsignedNodeAnnouncement::read_from_fixed_length_buffer(&mut reader)
                    .map_err(|_| bad("node_announcement"))?;
                if m.node_id != ours {
                    return Err(not_ours("node_announcement"));
                }
                sign(UnsignedGossipMessage::NodeAnnouncement(&m))
            }
            CHANNEL_UPDATE => {
                let m = UnsignedChannelUpdate::read_from_fixed_length_buffer(&mut reader)
                    .map_err(|_| bad("channel_update"))?;
                sign(UnsignedGossipMessage::ChannelUpdate(&m))
            }
            other => Err(self.malformed(kind, format!("gossip message type {other}"))),
        }
    }

    fn approve_payment(
        &self,
        kind: &str,
        payment: PaymentApproval,
    ) -> Result<Response, SignerError> {
        let now = (self.clock)();
        // Limits first, so the hook (perhaps a person) is asked without the state locked,
        // then again under the lock in case other payments went out meanwhile.
        self.policy
            .check_payment(&lock(&self.kept).state, &payment, now)
            .map_err(|r| self.refuse(kind, r))?;
        if let Some(hook) = &self.approval {
            if !hook.approve(&payment) {
                return Err(self.refuse(
                    kind,
                    Refusal {
                        rule: "approval_declined",
                        reason: "the approval hook declined the payment".into(),
                    },
                ));
            }
        }
        self.transact(|state| {
            self.policy
                .check_payment(state, &payment, now)
                .map_err(|r| self.refuse(kind, r))?;
            self.policy.record_approved(state, &payment, now);
            Ok(Response::Accepted)
        })
    }
}
