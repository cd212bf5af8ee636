//! Keysend: a payment to a node without an invoice. The paying node makes the preimage and
//! sends it in the onion, so the payee learns it on arrival; the signer approves the payment
//! (amount, destination, hash) as any other.

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::PublicKey;
use lightning::ln::channelmanager::{RecipientOnionFields, Retry};
use lightning::routing::router::{PaymentParameters, RouteParameters};
use lightning::sign::EntropySource;
use lightning::types::payment::PaymentPreimage;

use crate::error::HostError;
use crate::node::Node;
use crate::ops::{Outgoing, StartedPayment};

/// Blocks the last hop gives the payee to claim: LDK's keysend default.
const KEYSEND_FINAL_CLTV_DELTA: u32 = 40;
/// How often LDK may retry a failed path.
const RETRIES: u32 = 3;

impl Node {
    /// Starts paying `amount_msat` to `destination` by keysend (routing fees up to
    /// `max_fee_msat`, else LDK's default). Every call is a new payment: a client that must not
    /// pay twice gives an idempotency key through the API.
    pub async fn start_keysend(
        &self,
        destination: PublicKey,
        amount_msat: u64,
        max_fee_msat: Option<u64>,
    ) -> Result<StartedPayment, HostError> {
        self.check_running()?;
        if destination == self.id {
            return Err(HostError::InvalidInput(
                "destination: this node's own".into(),
            ));
        }
        if amount_msat == 0 {
            return Err(HostError::InvalidInput(
                "amount_msat: must be above zero".into(),
            ));
        }
        let preimage = self.keys.get_secure_random_bytes();
        let payment_hash = sha256::Hash::hash(&preimage).to_byte_array();
        let mut route = RouteParameters::from_payment_params_and_value(
            PaymentParameters::for_keysend(destination, KEYSEND_FINAL_CLTV_DELTA, false),
            amount_msat,
        );
        route.max_total_routing_fee_msat = max_fee_msat.or(route.max_total_routing_fee_msat);
        let outgoing = Outgoing {
            payment_hash,
            amount_msat,
            destination,
            bolt11: None,
        };
        let rx = self
            .send_tracked(outgoing, |id| {
                self.channel_manager
                    .send_spontaneous_payment(
                        Some(PaymentPreimage(preimage)),
                        RecipientOnionFields::spontaneous_empty(),
                        id,
                        route,
                        Retry::Attempts(RETRIES),
                    )
                    .map(|_| ())
                    .map_err(|e| format!("{e:?}"))
            })
            .await?;
        Ok(StartedPayment::in_flight(payment_hash, rx))
    }
}
