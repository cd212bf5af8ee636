//! Hold invoices: the node's user keeps the preimage and decides when a payment received to
//! it is taken (settled) or sent back (cancelled), as escrow, a swap or a check before
//! delivery needs. Meanwhile the HTLC stays in the channel; LDK fails it back itself at the
//! payment's claim deadline, a few blocks before the payer could take it back on chain.

use bitcoin::hashes::{sha256, Hash};
use lightning::events::HTLCHandlingFailureReason;
use lightning::ln::channelmanager::{Bolt11InvoiceParameters, MIN_FINAL_CLTV_EXPIRY_DELTA};
use lightning::types::payment::{PaymentHash, PaymentPreimage};
use lightning_invoice::Bolt11Invoice;
use serde_json::json;

use crate::error::HostError;
use crate::events::{hex, payment_update};
use crate::node::Node;
use crate::store::{Direction, PaymentRow, PaymentStatus, Rows};

/// The invoice's final CLTV delta when the user names none: about a day of blocks, of which
/// all but LDK's fail-back buffer (21 blocks) is time to decide.
pub const DEFAULT_HOLD_CLTV_DELTA: u16 = 144;

impl Node {
    /// An invoice for `payment_hash`, whose preimage only the caller knows. A payment to it
    /// is held (payment row `held`, event `payment_held` with its `claim_deadline` height)
    /// until [`Node::settle_held_payment`] or [`Node::cancel_hold_invoice`]. `cltv_expiry_delta`
    /// blocks (at least LDK's minimum, 24) bound how long: LDK fails it back 21 blocks before
    /// the payment's HTLC expires.
    pub fn create_hold_invoice(
        &self,
        amount_msat: u64,
        payment_hash: [u8; 32],
        description: &str,
        expiry_secs: u32,
        cltv_expiry_delta: u16,
    ) -> Result<Bolt11Invoice, HostError> {
        self.check_running()?;
        if cltv_expiry_delta < MIN_FINAL_CLTV_EXPIRY_DELTA {
            return Err(HostError::InvalidInput(format!(
                "cltv_expiry_delta {cltv_expiry_delta} is below {MIN_FINAL_CLTV_EXPIRY_DELTA}"
            )));
        }
        let hash = hex(&payment_hash);
        if self.inbound(&hash)?.is_some() {
            return Err(HostError::InvalidInput(format!(
                "payment hash {hash} already has an invoice"
            )));
        }
        self.new_invoice(
            Bolt11InvoiceParameters {
                amount_msats: Some(amount_msat),
                invoice_expiry_delta_secs: Some(expiry_secs),
                min_final_cltv_expiry_delta: Some(cltv_expiry_delta),
                payment_hash: Some(PaymentHash(payment_hash)),
                ..Default::default()
            },
            description,
        )
    }

    /// Takes the held payment `preimage` unlocks (the preimage is saved in its row first). The
    /// row turns `succeeded` (and the event `payment_received` is written) once LDK has saved
    /// the claim, as for any payment.
    pub fn settle_held_payment(&self, preimage: [u8; 32]) -> Result<(), HostError> {
        self.check_running()?;
        let hash = hex(&sha256::Hash::hash(&preimage).to_byte_array());
        match self.status(&hash)? {
            PaymentStatus::Held => {}
            status => return Err(not_held(&hash, status)),
        }
        // LDK's claim event carries no preimage it was not given with the invoice.
        self.store().upsert_payment(&PaymentRow {
            preimage: Some(hex(&preimage)),
            ..self.update(&hash, PaymentStatus::Held)
        })?;
        self.channel_manager.claim_funds(PaymentPreimage(preimage));
        Ok(())
    }

    /// Sends a held payment back to its payer, or, not paid yet, refuses every later payment
    /// of the invoice. The row turns `failed` at once.
    pub fn cancel_hold_invoice(&self, payment_hash: [u8; 32]) -> Result<(), HostError> {
        self.check_running()?;
        let hash = hex(&payment_hash);
        match self.status(&hash)? {
            PaymentStatus::Pending | PaymentStatus::Held => {}
            status => return Err(not_held(&hash, status)),
        }
        // Failed first: a payment that becomes claimable meanwhile then finds the row
        // failed and is sent back by the event handler, if not by the call below.
        let mut rows = Rows::default();
        self.failed(&mut rows, &hash, "cancelled by the node's user")?;
        self.store().write_rows(rows)?;
        self.channel_manager
            .fail_htlc_backwards(&PaymentHash(payment_hash));
        Ok(())
    }

    /// A payment LDK cannot claim alone (no preimage: a hold invoice's) has arrived. Held if
    /// its invoice is still open; otherwise (cancelled, timed out, settled, unknown) sent back.
    pub(crate) fn payment_to_hold(
        &self,
        rows: &mut Rows,
        payment_hash: PaymentHash,
        amount_msat: u64,
        claim_deadline: Option<u32>,
    ) -> Result<(), HostError> {
        let hash = hex(&payment_hash.0);
        match self.inbound(&hash)?.map(|row| row.status) {
            Some(PaymentStatus::Pending | PaymentStatus::Held) => {
                rows.payment(PaymentRow {
                    amount_msat: Some(amount_msat),
                    ..self.update(&hash, PaymentStatus::Held)
                })?;
                rows.event(
                    &self.id.to_string(),
                    "payment_held",
                    &json!({"payment_hash": hash, "amount_msat": amount_msat,
                            "claim_deadline": claim_deadline}),
                )?;
            }
            _ => self.channel_manager.fail_htlc_backwards(&payment_hash),
        }
        Ok(())
    }

    /// LDK failed back a payment this node received: a held one (its claim deadline came)
    /// has ended. Other receive failures (a wrong amount, say) leave the invoice payable.
    pub(crate) fn receive_failed(
        &self,
        rows: &mut Rows,
        payment_hash: PaymentHash,
        reason: Option<HTLCHandlingFailureReason>,
    ) -> Result<(), HostError> {
        let hash = hex(&payment_hash.0);
        if self.inbound(&hash)?.map(|row| row.status) == Some(PaymentStatus::Held) {
            let reason = reason.map_or("failed back".to_string(), |r| format!("{r:?}"));
            self.failed(rows, &hash, &reason)?;
        }
        Ok(())
    }

    /// The status of this node's invoice for `hash`; an error if it made none.
    fn status(&self, hash: &str) -> Result<PaymentStatus, HostError> {
        self.inbound(hash)?
            .map(|row| row.status)
            .ok_or_else(|| HostError::NotFound(format!("no invoice for payment hash {hash}")))
    }

    fn inbound(&self, hash: &str) -> Result<Option<PaymentRow>, HostError> {
        Ok(self
            .store()
            .payment(&self.id.to_string(), hash, Direction::Inbound)?)
    }

    /// An update of this node's inbound payment `hash` to `status`, now.
    fn update(&self, hash: &str, status: PaymentStatus) -> PaymentRow {
        payment_update(&self.id.to_string(), hash, Direction::Inbound, status)
    }

    fn failed(&self, rows: &mut Rows, hash: &str, reason: &str) -> Result<(), HostError> {
        rows.payment(PaymentRow {
            failure_reason: Some(reason.to_string()),
            ..self.update(hash, PaymentStatus::Failed)
        })?;
        rows.event(
            &self.id.to_string(),
            "payment_cancelled",
            &json!({"payment_hash": hash, "reason": reason}),
        )?;
        Ok(())
    }
}

fn not_held(hash: &str, status: PaymentStatus) -> HostError {
    HostError::InvalidInput(format!("the payment {hash} is {status}, not held"))
}
