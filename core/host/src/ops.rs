//! What a user of a hosted node asks of it: addresses, channels, invoices, payments.

use std::time::Duration;

use bitcoin::hashes::Hash;
use bitcoin::hex::FromHex;
use bitcoin::secp256k1::PublicKey;
use bitcoin::Address;
use flotilla_proto::Request;
use lightning::ln::channel_state::ChannelDetails;
use lightning::ln::channelmanager::{
    Bolt11InvoiceParameters, PaymentId, RecentPaymentDetails, Retry,
};
use lightning::ln::types::ChannelId;
use lightning::routing::router::RouteParametersConfig;
use lightning_invoice::{Bolt11Invoice, Bolt11InvoiceDescription, Currency, Description};
use tokio::sync::oneshot;

use crate::error::HostError;
use crate::events::payment_update;
use crate::node::{now, Node, PaymentOutcome};
use crate::signer_client::link::SYNC_DEADLINE;
use crate::store::{Direction, PaymentRow, PaymentStatus};

/// How long a cooperative close waits for its channel to be between updates.
const CLOSE_WAIT: Duration = Duration::from_secs(30);
/// How often it asks again meanwhile.
const CLOSE_RETRY: Duration = Duration::from_millis(20);

/// Where a payment of an invoice stands.
enum Progress {
    /// It succeeded: the same outcome again.
    Ended(PaymentOutcome),
    /// Still under way: its outcome arrives here.
    InFlight(oneshot::Receiver<PaymentOutcome>),
}

/// On-chain balance of a node's wallet, in satoshis.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct WalletBalance {
    pub confirmed_sat: u64,
    pub pending_sat: u64,
    pub immature_sat: u64,
}

impl Node {
    pub fn new_address(&self) -> Result<Address, HostError> {
        self.check_running()?;
        Ok(self.wallet.new_address()?)
    }

    pub fn wallet_balance(&self) -> WalletBalance {
        let b = self.wallet.balance();
        WalletBalance {
            confirmed_sat: b.confirmed.to_sat(),
            pending_sat: (b.trusted_pending + b.untrusted_pending).to_sat(),
            immature_sat: b.immature.to_sat(),
        }
    }

    /// Opens a private channel of `amount_sat` to a connected peer; funding happens when LDK
    /// asks for it (FundingGenerationReady), from this node's wallet.
    pub fn open_channel(
        &self,
        peer: PublicKey,
        amount_sat: u64,
        push_msat: u64,
    ) -> Result<ChannelId, HostError> {
        self.check_running()?;
        if amount_sat == 0 || push_msat > amount_sat.saturating_mul(1000) {
            return Err(HostError::InvalidInput(format!(
                "channel of {amount_sat} sat pushing {push_msat} msat"
            )));
        }
        if !self.is_connected(&peer) {
            return Err(HostError::InvalidInput(format!(
                "peer {peer} is not connected"
            )));
        }
        // The signer approves the open for the key set the channel will use, and signs for
        // no channel it did not approve.
        let user_channel_id = self.fresh_user_channel_id();
        let keys_id = self.keys.reserve_channel_keys(user_channel_id)?;
        let created = self
            .link
            .call_blocking(
                Request::ApproveChannelOpen {
                    peer,
                    value_sat: amount_sat,
                    push_msat,
                    keys_id,
                    outbound: true,
                },
                SYNC_DEADLINE,
            )
            .map_err(HostError::from)
            .and_then(|_| {
                Ok(self.channel_manager.create_channel(
                    peer,
                    amount_sat,
                    push_msat,
                    user_channel_id,
                    None,
                    None,
                )?)
            });
        if created.is_err() {
            self.keys.release_channel_keys(user_channel_id);
        }
        created
    }

    pub fn channels(&self) -> Vec<ChannelDetails> {
        self.channel_manager.list_channels()
    }

    /// Cooperative close. LDK refuses to begin one while the channel waits for its monitor's
    /// save, holds an HTLC not yet committed or is quiescent: moments on a busy channel (here
    /// every update waits for its save, and its signature for the signer), so while the
    /// channel stays live the close is asked again until it begins or `CLOSE_WAIT` passes.
    /// A channel not live (peer away, already closing, unknown) fails at once.
    pub async fn close_channel(
        &self,
        channel_id: &ChannelId,
        peer: &PublicKey,
    ) -> Result<(), HostError> {
        self.check_running()?;
        let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
        loop {
            match self.channel_manager.close_channel(channel_id, peer) {
                Err(_)
                    if self.is_live(channel_id, peer) && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(CLOSE_RETRY).await
                }
                other => return Ok(other?),
            }
        }
    }

    /// Ready, not closing, peer connected.
    fn is_live(&self, channel_id: &ChannelId, peer: &PublicKey) -> bool {
        self.channel_manager
            .list_channels_with_counterparty(peer)
            .iter()
            .any(|c| c.channel_id == *channel_id && c.is_usable)
    }

    /// Unilateral close: broadcasts our latest commitment.
    pub fn force_close_channel(
        &self,
        channel_id: &ChannelId,
        peer: &PublicKey,
    ) -> Result<(), HostError> {
        self.check_running()?;
        Ok(self.channel_manager.force_close_broadcasting_latest_txn(
            channel_id,
            peer,
            "closed by the node's operator".into(),
        )?)
    }

    /// A BOLT11 invoice for `amount_msat` (any amount the payer chooses if `None`); its
    /// payment is claimed automatically.
    pub fn create_invoice(
        &self,
        amount_msat: Option<u64>,
        description: &str,
        expiry_secs: u32,
    ) -> Result<Bolt11Invoice, HostError> {
        self.check_running()?;
        self.new_invoice(
            Bolt11InvoiceParameters {
                amount_msats: amount_msat,
                invoice_expiry_delta_secs: Some(expiry_secs),
                ..Default::default()
            },
            description,
        )
    }

    /// Makes an invoice of `params` (its description set here) and records it as a pending
    /// inbound payment.
    pub(crate) fn new_invoice(
        &self,
        params: Bolt11InvoiceParameters,
        description: &str,
    ) -> Result<Bolt11Invoice, HostError> {
        let description = Description::new(description.to_string())
            .map_err(|e| HostError::InvalidInput(format!("description: {e}")))?;
        let params = Bolt11InvoiceParameters {
            description: Bolt11InvoiceDescription::Direct(description),
            ..params
        };
        let amount_msat = params.amount_msats;
        let invoice = self
            .channel_manager
            .create_bolt11_invoice(params)
            .map_err(|e| HostError::Lightning(format!("invoice: {e:?}")))?;
        self.store().upsert_payment(&PaymentRow {
            amount_msat,
            bolt11: Some(invoice.to_string()),
            ..payment_update(
                &self.id.to_string(),
                &invoice.payment_hash().to_string(),
                Direction::Inbound,
                PaymentStatus::Pending,
            )
        })?;
        Ok(invoice)
    }

    /// Pays a BOLT11 invoice and waits for the outcome (bounded by `timeout`).
    pub async fn pay_invoice(
        &self,
        invoice: &str,
        timeout: Duration,
    ) -> Result<PaymentOutcome, HostError> {
        let payment = self.start_invoice_payment(invoice, None).await?;
        let hash = payment.payment_hash;
        payment
            .outcome(timeout)
            .await?
            .ok_or_else(|| HostError::Timeout(format!("payment {}", crate::events::hex(&hash))))
    }

    /// Starts paying a BOLT11 invoice (routing fees up to `max_fee_msat`, else LDK's
    /// default), or finds the earlier payment of the same invoice: an invoice is paid once.
    pub async fn start_invoice_payment(
        &self,
        invoice: &str,
        max_fee_msat: Option<u64>,
    ) -> Result<StartedPayment, HostError> {
        self.check_running()?;
        let invoice: Bolt11Invoice = invoice
            .trim()
            .parse()
            .map_err(|e| HostError::InvalidInput(format!("invoice: {e}")))?;
        let payment_hash = invoice.payment_hash().to_byte_array();
        let _turn = self.starting.turn(payment_hash).await;
        let progress = match self.earlier_payment(&invoice)? {
            Some(earlier) => earlier,
            None => Progress::InFlight(self.start_payment(&invoice, max_fee_msat).await?),
        };
        Ok(StartedPayment {
            payment_hash,
            progress,
        })
    }

    /// Has the signer approve the payment of `invoice`, then hands it to LDK; the outcome
    /// arrives on the receiver.
    async fn start_payment(
        &self,
        invoice: &Bolt11Invoice,
        max_fee_msat: Option<u64>,
    ) -> Result<oneshot::Receiver<PaymentOutcome>, HostError> {
        self.check_payable(invoice)?;
        let outgoing = Outgoing {
            payment_hash: invoice.payment_hash().to_byte_array(),
            amount_msat: invoice.amount_milli_satoshis().unwrap_or(0),
            destination: invoice.get_payee_pub_key(),
            bolt11: Some(invoice.to_string()),
        };
        self.send_tracked(outgoing, |id| {
            self.channel_manager
                .pay_for_bolt11_invoice(
                    invoice,
                    id,
                    None,
                    RouteParametersConfig {
                        max_total_routing_fee_msat: max_fee_msat,
                        ..Default::default()
                    },
                    Retry::Attempts(3),
                )
                .map_err(|e| format!("{e:?}"))
        })
        .await
    }

    /// Has the signer approve `outgoing`, records it pending, and hands it to LDK with `send`;
    /// its outcome arrives on the receiver. A payment LDK refuses at once is recorded failed.
    pub(crate) async fn send_tracked(
        &self,
        outgoing: Outgoing,
        send: impl FnOnce(PaymentId) -> Result<(), String>,
    ) -> Result<oneshot::Receiver<PaymentOutcome>, HostError> {
        let hash = outgoing.payment_hash;
        // The signer's policy (limits, approval hook) decides before any HTLC exists, so a
        // refusal leaves nothing to unwind.
        self.link
            .call(Request::ApprovePayment {
                payment_hash: hash,
                amount_msat: outgoing.amount_msat,
                destination: outgoing.destination,
            })
            .await?;
        let rx = self.wait_for_payment(hash);
        let pending = PaymentRow {
            amount_msat: Some(outgoing.amount_msat),
            bolt11: outgoing.bolt11,
            ..payment_update(
                &self.id.to_string(),
                &crate::events::hex(&hash),
                Direction::Outbound,
                PaymentStatus::Pending,
            )
        };
        self.store().upsert_payment(&pending)?;
        if let Err(reason) = send(PaymentId(hash)) {
            // No other caller waits on this hash: starts take turns, and an earlier
            // payment LDK still knew would have been found in flight.
            self.payment_waiters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&hash);
            self.store().upsert_payment(&PaymentRow {
                status: PaymentStatus::Failed,
                failure_reason: Some(reason.clone()),
                ..pending
            })?;
            return Err(HostError::PaymentFailed(reason));
        }
        Ok(rx)
    }

    /// Refuses, before the signer (and its user) is asked, an invoice no payment could
    /// settle: another chain's, one without an amount, an expired one, this node's own.
    fn check_payable(&self, invoice: &Bolt11Invoice) -> Result<(), HostError> {
        let network = self.wallet.network();
        let problem = if invoice.currency() != Currency::from(network) {
            format!(
                "the invoice is for another chain ({:?}), this node is on {network}",
                invoice.currency()
            )
        } else if invoice.amount_milli_satoshis().is_none() {
            "the invoice names no amount".to_owned()
        } else if invoice.would_expire(now()) {
            "the invoice has expired".to_owned()
        } else if invoice.get_payee_pub_key() == self.id {
            "the invoice is this node's own".to_owned()
        } else {
            return Ok(());
        };
        Err(HostError::InvalidInput(problem))
    }

    /// An invoice is paid once. Asked again, the node answers with the first payment's
    /// outcome (a client retrying after a timeout must not pay twice: LDK refuses a repeated
    /// payment id only for a few minutes, after which it would pay again, and the payee would
    /// take it), or with its outcome once it ends while it is in flight.
    fn earlier_payment(&self, invoice: &Bolt11Invoice) -> Result<Option<Progress>, HostError> {
        let hash = invoice.payment_hash().to_byte_array();
        let row = || {
            self.store().payment(
                &self.id.to_string(),
                &invoice.payment_hash().to_string(),
                Direction::Outbound,
            )
        };
        let pending = |r: &Option<PaymentRow>| {
            r.as_ref()
                .is_some_and(|r| r.status == PaymentStatus::Pending)
        };
        let mut stored = row()?;
        if pending(&stored) {
            // In flight if LDK knows it; a pending row LDK forgot (a crash before the first
            // save) is no payment at all.
            let known = self.channel_manager.list_recent_payments().iter().any(|p| {
                matches!(p,
                    RecentPaymentDetails::Pending { payment_id, .. }
                    | RecentPaymentDetails::Fulfilled { payment_id, .. }
                    if payment_id.0 == hash)
            });
            if !known {
                return Ok(None);
            }
            let rx = self.wait_for_payment(hash);
            // Read again: it may have resolved before the wait was registered.
            stored = row()?;
            if pending(&stored) {
                return Ok(Some(Progress::InFlight(rx)));
            }
        }
        match stored {
            Some(PaymentRow {
                status: PaymentStatus::Succeeded,
                preimage: Some(preimage),
                fee_msat,
                ..
            }) => {
                let preimage = <[u8; 32]>::from_hex(&preimage)
                    .map_err(|e| HostError::Corrupt(format!("stored preimage: {e}")))?;
                Ok(Some(Progress::Ended(PaymentOutcome::Succeeded {
                    preimage,
                    fee_msat,
                })))
            }
            _ => Ok(None),
        }
    }

    /// Registers for the outcome of the outbound payment of `hash`.
    fn wait_for_payment(&self, hash: [u8; 32]) -> oneshot::Receiver<PaymentOutcome> {
        let (tx, rx) = oneshot::channel();
        self.payment_waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(hash)
            .or_default()
            .push(tx);
        rx
    }

    /// Channels whose monitor still watches the chain: open ones, and closed ones until they
    /// are resolved and archived.
    pub fn watched_channels(&self) -> usize {
        self.chain_monitor.list_monitors().len()
    }

    /// Balances LDK can claim on-chain from channels (closing or closed), in satoshis.
    pub fn claimable_on_chain_sat(&self) -> u64 {
        self.chain_monitor
            .get_claimable_balances(&[])
            .iter()
            .map(|b| b.claimable_amount_satoshis())
            .sum()
    }
}

/// A payment about to leave the node: what the signer approves and the row records.
pub(crate) struct Outgoing {
    pub payment_hash: [u8; 32],
    pub amount_msat: u64,
    pub destination: PublicKey,
    pub bolt11: Option<String>,
}

/// A payment handed to LDK, or the earlier payment of the same invoice.
pub struct StartedPayment {
    pub payment_hash: [u8; 32],
    progress: Progress,
}

impl StartedPayment {
    /// A payment just handed to LDK, whose outcome arrives on `rx`.
    pub(crate) fn in_flight(payment_hash: [u8; 32], rx: oneshot::Receiver<PaymentOutcome>) -> Self {
        StartedPayment {
            payment_hash,
            progress: Progress::InFlight(rx),
        }
    }

    /// Its outcome, once it ended; `None` if still under way after `timeout`.
    pub async fn outcome(self, timeout: Duration) -> Result<Option<PaymentOutcome>, HostError> {
        match self.progress {
            Progress::Ended(outcome) => Ok(Some(outcome)),
            Progress::InFlight(rx) => match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(outcome)) => Ok(Some(outcome)),
                Ok(Err(_)) => Err(HostError::PaymentFailed("node stopped".into())),
                Err(_) => Ok(None),
            },
        }
    }
}
