//! What a node does with LDK's events, and how the plain tables follow them.

use std::time::{SystemTime, UNIX_EPOCH};

use flotilla_proto::Request;
use lightning::events::{
    Event, FundingInfo, HTLCHandlingFailureType, InboundChannelFunds, PaymentPurpose,
};
use serde_json::json;

use crate::error::HostError;
use crate::node::{Node, PaymentOutcome};
use crate::store::{ChannelRow, ChannelStatus, Direction, PaymentRow, PaymentStatus, Rows};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Lowercase hex, as hashes and preimages are kept in the plain tables.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bitcoin::hex::DisplayHex::to_lower_hex_string(bytes)
}

/// Handles one event. An error makes LDK replay the event later, so every step is idempotent.
/// The rows it changes are written in one commit, before anyone waiting on a payment's
/// outcome hears it (so the payment they may read next is there).
pub(crate) async fn handle(node: &Node, event: Event) -> Result<(), HostError> {
    let mut rows = Rows::default();
    let outcome = act(node, event, &mut rows).await?;
    node.store().write_rows(rows)?;
    if let Some((hash, outcome)) = outcome {
        resolve(node, hash, outcome);
    }
    Ok(())
}

/// What `event` makes the node do, and the rows it changes; a payment's outcome, if it ended.
async fn act(
    node: &Node,
    event: Event,
    rows: &mut Rows,
) -> Result<Option<([u8; 32], PaymentOutcome)>, HostError> {
    let node_id = node.id.to_string();
    let store = node.store();
    let mut outcome = None;
    match event {
        Event::FundingGenerationReady {
            temporary_channel_id,
            counterparty_node_id,
            channel_value_satoshis,
            output_script,
            ..
        } => {
            // Built unsigned, LDK given its outpoint; signed once the peer signed our first
            // commitment (`FundingTxBroadcastSafe`, `funding.rs`).
            let built = crate::funding::build(
                node,
                temporary_channel_id,
                counterparty_node_id,
                channel_value_satoshis,
                &output_script,
            );
            if let Err(e) = built {
                // No funds, or the channel is gone: abandon it cleanly, once (a replay would
                // find no channel to fund).
                tracing::warn!(node = %node.alias, error = %e, "cannot fund channel; closing it");
                let _ = node.channel_manager.force_close_broadcasting_latest_txn(
                    &temporary_channel_id,
                    &counterparty_node_id,
                    format!("funding failed: {e}"),
                );
                rows.event(&node_id, "funding_failed", &json!({"error": e.to_string()}))?;
            }
        }
        Event::FundingTxBroadcastSafe {
            channel_id,
            funding_txo,
            counterparty_node_id,
            ..
        } => crate::funding::broadcast(node, channel_id, counterparty_node_id, funding_txo, rows)?,
        Event::PaymentClaimable {
            payment_hash,
            purpose,
            amount_msat,
            claim_deadline,
            ..
        } => match purpose.preimage() {
            Some(preimage) => node.channel_manager.claim_funds(preimage),
            // A hold invoice's: the preimage is the user's (`hold.rs`).
            None => node.payment_to_hold(rows, payment_hash, amount_msat, claim_deadline)?,
        },
        Event::PaymentClaimed {
            payment_hash,
            purpose,
            amount_msat,
            ..
        } => {
            let preimage = match &purpose {
                PaymentPurpose::Bolt11InvoicePayment {
                    payment_preimage, ..
                }
                | PaymentPurpose::Bolt12OfferPayment {
                    payment_preimage, ..
                }
                | PaymentPurpose::Bolt12RefundPayment {
                    payment_preimage, ..
                } => payment_preimage.map(|p| hex(&p.0)),
                PaymentPurpose::SpontaneousPayment(p) => Some(hex(&p.0)),
            };
            let hash = hex(&payment_hash.0);
            rows.payment(PaymentRow {
                amount_msat: Some(amount_msat),
                preimage,
                ..payment_update(
                    &node_id,
                    &hash,
                    Direction::Inbound,
                    PaymentStatus::Succeeded,
                )
            })?;
            rows.event(
                &node_id,
                "payment_received",
                &json!({"payment_hash": hash, "amount_msat": amount_msat}),
            )?;
            refresh_channels(node, rows)?;
        }
        Event::PaymentSent {
            payment_hash,
            payment_preimage,
            fee_paid_msat,
            amount_msat,
            ..
        } => {
            let hash = hex(&payment_hash.0);
            rows.payment(PaymentRow {
                amount_msat,
                fee_msat: fee_paid_msat,
                preimage: Some(hex(&payment_preimage.0)),
                ..payment_update(
                    &node_id,
                    &hash,
                    Direction::Outbound,
                    PaymentStatus::Succeeded,
                )
            })?;
            rows.event(
                &node_id,
                "payment_sent",
                &json!({"payment_hash": hash, "fee_msat": fee_paid_msat}),
            )?;
            refresh_channels(node, rows)?;
            outcome = Some((
                payment_hash.0,
                PaymentOutcome::Succeeded {
                    preimage: payment_preimage.0,
                    fee_msat: fee_paid_msat,
                },
            ));
        }
        Event::PaymentFailed {
            payment_hash,
            reason,
            ..
        } => {
            let reason = format!("{reason:?}");
            if let Some(payment_hash) = payment_hash {
                let hash = hex(&payment_hash.0);
                rows.payment(PaymentRow {
                    failure_reason: Some(reason.clone()),
                    ..payment_update(&node_id, &hash, Direction::Outbound, PaymentStatus::Failed)
                })?;
                rows.event(
                    &node_id,
                    "payment_failed",
                    &json!({"payment_hash": hash, "reason": reason}),
                )?;
                outcome = Some((payment_hash.0, PaymentOutcome::Failed { reason }));
            }
        }
        Event::SpendableOutputs {
            outputs,
            channel_id,
        } => {
            // The sweeper persists them and spends them to the wallet, rebroadcasting as needed.
            // Static outputs already pay the signer's wallet (its shutdown script): left alone.
            node.sweeper
                .track_spendable_outputs(outputs, channel_id, true, None)
                .map_err(|_| HostError::Lightning("sweeper could not persist outputs".into()))?;
            rows.event(
                &node_id,
                "spendable_outputs",
                &json!({"channel_id": channel_id.map(|c| c.to_string())}),
            )?;
        }
        Event::ChannelPending {
            channel_id,
            counterparty_node_id,
            funding_txo,
            ..
        } => {
            rows.event(
                &node_id,
                "channel_pending",
                &json!({
                    "channel_id": channel_id.to_string(),
                    "counterparty": counterparty_node_id.to_string(),
                    "funding_txo": funding_txo.to_string(),
                }),
            )?;
            refresh_channels(node, rows)?;
        }
        Event::ChannelReady {
            channel_id,
            counterparty_node_id,
            ..
        } => {
            rows.event(
                &node_id,
                "channel_ready",
                &json!({
                    "channel_id": channel_id.to_string(),
                    "counterparty": counterparty_node_id.to_string(),
                }),
            )?;
            refresh_channels(node, rows)?;
        }
        Event::ChannelClosed {
            channel_id,
            reason,
            counterparty_node_id,
            channel_capacity_sats,
            channel_funding_txo,
            user_channel_id,
            ..
        } => {
            let id = channel_id.to_string();
            let reason = format!("{reason}");
            let mut row = store.channel(&node_id, &id)?.unwrap_or_else(|| ChannelRow {
                node_id: node_id.clone(),
                channel_id: id.clone(),
                user_channel_id: user_channel_id.to_string(),
                counterparty_node_id: counterparty_node_id
                    .map(|c| c.to_string())
                    .unwrap_or_default(),
                funding_txid: channel_funding_txo.map(|o| o.txid.to_string()),
                funding_vout: channel_funding_txo.map(|o| o.index as u32),
                capacity_sat: channel_capacity_sats.unwrap_or(0),
                local_balance_msat: 0,
                short_channel_id: None,
                status: ChannelStatus::Closed,
                close_reason: None,
                is_outbound: false,
                updated_at: now(),
            });
            row.status = ChannelStatus::Closed;
            row.close_reason = Some(reason.clone());
            row.updated_at = now();
            rows.channel(row)?;
            // The others' balances, and whether any announced channel is left.
            refresh_channels(node, rows)?;
            rows.event(
                &node_id,
                "channel_closed",
                &json!({"channel_id": id, "reason": reason}),
            )?;
        }
        Event::DiscardFunding {
            channel_id,
            funding_info,
        } => {
            // Never broadcast: its inputs are the wallet's to spend again.
            match funding_info {
                FundingInfo::Tx { transaction } => node.wallet.release_reservation(&transaction)?,
                FundingInfo::OutPoint { outpoint } => {
                    crate::funding::discard(node, outpoint.into_bitcoin_outpoint())?
                }
            }
            rows.event(
                &node_id,
                "discard_funding",
                &json!({"channel_id": channel_id.to_string()}),
            )?;
        }
        Event::OpenChannelRequest {
            temporary_channel_id,
            counterparty_node_id,
            funding_satoshis,
            channel_negotiation_type,
            ..
        } => {
            let push_msat = match channel_negotiation_type {
                InboundChannelFunds::PushMsat(push) => push,
                InboundChannelFunds::DualFunded => 0,
            };
            // The signer decides which peers may open channels to this node, and signs only
            // for channels it approved (by their key set).
            let user_channel_id = node.fresh_user_channel_id();
            let approval = match node.keys.reserve_channel_keys(user_channel_id) {
                Ok(keys_id) => node
                    .link
                    .call(Request::ApproveChannelOpen {
                        peer: counterparty_node_id,
                        value_sat: funding_satoshis,
                        push_msat,
                        keys_id,
                        outbound: false,
                    })
                    .await
                    .map_err(HostError::from),
                Err(e) => Err(e.into()),
            };
            let accepted = match approval {
                Ok(_) => node
                    .channel_manager
                    .accept_inbound_channel(
                        &temporary_channel_id,
                        &counterparty_node_id,
                        user_channel_id,
                        None,
                    )
                    .map_err(HostError::from),
                Err(e) => {
                    // Rejecting tells the peer; the request is gone already if it left.
                    if let Err(gone) = node.channel_manager.force_close_broadcasting_latest_txn(
                        &temporary_channel_id,
                        &counterparty_node_id,
                        format!("channel refused: {e}"),
                    ) {
                        tracing::debug!(node = %node.alias, error = ?gone, "refused request already gone");
                    }
                    Err(e)
                }
            };
            // A refusal is final, whoever made it: LDK drops a request it could not accept
            // (and tells the peer), so replaying the event would only fail again, forever.
            if let Err(e) = accepted {
                node.keys.release_channel_keys(user_channel_id);
                tracing::warn!(node = %node.alias, peer = %counterparty_node_id, error = %e, "inbound channel refused");
                rows.event(
                    &node_id,
                    "channel_refused",
                    &json!({"peer": counterparty_node_id.to_string(),
                            "funding_sat": funding_satoshis, "reason": e.to_string()}),
                )?;
            }
        }
        Event::PaymentPathFailed { .. } | Event::PaymentPathSuccessful { .. } => {}
        Event::HTLCHandlingFailed {
            failure_type: HTLCHandlingFailureType::Receive { payment_hash },
            failure_reason,
            ..
        } => node.receive_failed(rows, payment_hash, failure_reason)?,
        Event::PaymentForwarded { .. } | Event::HTLCHandlingFailed { .. } => {}
        other => {
            tracing::debug!(node = %node.alias, event = ?other, "event not acted on");
        }
    }
    Ok(outcome)
}

/// A payment update from this node's event, now; see [`PaymentRow::update`].
pub(crate) fn payment_update(
    node_id: &str,
    hash: &str,
    direction: Direction,
    status: PaymentStatus,
) -> PaymentRow {
    PaymentRow::update(node_id, hash, direction, status, now())
}

fn resolve(node: &Node, hash: [u8; 32], outcome: PaymentOutcome) {
    let waiters = node
        .payment_waiters
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&hash);
    for waiter in waiters.into_iter().flatten() {
        let _ = waiter.send(outcome.clone());
    }
}

/// Adds the current state of each of the node's open channels to `rows`.
pub(crate) fn refresh_channels(node: &Node, rows: &mut Rows) -> Result<(), HostError> {
    let node_id = node.id.to_string();
    let channels = node.channel_manager.list_channels();
    node.note_announced(&channels);
    for c in channels {
        let confirmed = c.funding_txo.is_some() && c.confirmations.unwrap_or(0) > 0;
        let status = if c.is_channel_ready || confirmed {
            ChannelStatus::Open
        } else {
            ChannelStatus::Pending
        };
        let reserve = c.unspendable_punishment_reserve.unwrap_or(0) * 1000;
        rows.channel(ChannelRow {
            node_id: node_id.clone(),
            channel_id: c.channel_id.to_string(),
            user_channel_id: c.user_channel_id.to_string(),
            counterparty_node_id: c.counterparty.node_id.to_string(),
            funding_txid: c.funding_txo.map(|o| o.txid.to_string()),
            funding_vout: c.funding_txo.map(|o| o.index as u32),
            capacity_sat: c.channel_value_satoshis,
            local_balance_msat: c.outbound_capacity_msat + reserve,
            short_channel_id: c.short_channel_id,
            status,
            close_reason: None,
            is_outbound: c.is_outbound,
            updated_at: now(),
        })?;
    }
    Ok(())
}
