//! Funding a channel the node opens, in the order that keeps the customer's coins safe: the
//! wallet builds the funding transaction unsigned, LDK is given only its outpoint, and the
//! signer signs it only after the peer signed the node's first commitment and the signer
//! validated that signature (`FundingTxBroadcastSafe`). Signed before, the funds could sit in
//! the 2-of-2 with nothing the node could close with: the peer would hold them hostage.
//!
//! The unsigned transaction is kept in the node's store until it is broadcast or discarded,
//! and its inputs stay reserved in the wallet, again after a restart.

use bitcoin::secp256k1::PublicKey;
use bitcoin::{Amount, OutPoint, Psbt, Txid};
use flotilla_proto::{HolderCommitment, Request, Response};
use lightning::chain::chaininterface::BroadcasterInterface;
use lightning::ln::types::ChannelId;
use lightning::util::persist::KVStoreSync;
use serde_json::json;

use crate::error::HostError;
use crate::node::Node;
use crate::store::{read_optional, KvWrite, Rows};
use crate::wallet::WalletError;

const NAMESPACE: &str = "funding";
const SUB: &str = "pending";

/// `FundingGenerationReady`: builds the funding unsigned, keeps it, and hands LDK its
/// outpoint. On failure the channel is closed (nothing was broadcast).
pub(crate) fn build(
    node: &Node,
    temporary_channel_id: ChannelId,
    counterparty: PublicKey,
    value_sat: u64,
    output_script: &bitcoin::Script,
) -> Result<(), HostError> {
    // The wallet names the 2-of-2 behind the output, for the signer to check.
    let redeem = node
        .channel_manager
        .list_channels_with_counterparty(&counterparty)
        .into_iter()
        .find(|c| c.channel_id == temporary_channel_id)
        .and_then(|c| c.funding_redeem_script)
        .filter(|redeem| redeem.to_p2wsh() == *output_script)
        .ok_or_else(|| {
            WalletError::InvalidInput(
                "the channel has no funding script matching LDK's output".into(),
            )
        })?;
    let amount = Amount::from_sat(value_sat);
    let psbt = node
        .wallet
        .build_funding_psbt(&redeem, amount, node.funding_feerate())?;
    let txid = psbt.unsigned_tx.compute_txid();
    let vout = psbt
        .unsigned_tx
        .output
        .iter()
        .position(|o| o.script_pubkey == *output_script && o.value == amount)
        .ok_or_else(|| WalletError::Build("the funding output is missing".into()))?;
    let kept = node
        .kv
        .write_all(vec![KvWrite::put(
            NAMESPACE,
            SUB,
            &txid.to_string(),
            psbt.serialize(),
        )])
        .map_err(HostError::from);
    let handed = kept.and_then(|()| {
        let outpoint = lightning::chain::transaction::OutPoint {
            txid,
            index: vout as u16,
        };
        node.channel_manager
            .unsafe_manual_funding_transaction_generated(
                temporary_channel_id,
                counterparty,
                outpoint,
            )
            .map_err(HostError::from)
    });
    if handed.is_err() {
        forget(node, &psbt);
    }
    handed
}

/// `FundingTxBroadcastSafe`: the peer signed the node's first commitment. The signer checks
/// that signature (the commitment LDK validated, kept for the signer), then signs the funding,
/// which goes out. If the signer refuses, the funding is given up and the channel closed.
pub(crate) fn broadcast(
    node: &Node,
    channel_id: ChannelId,
    counterparty: PublicKey,
    funding: OutPoint,
    rows: &mut Rows,
) -> Result<(), HostError> {
    let Some(psbt) = pending(node, &funding.txid)? else {
        // Already broadcast (the event replayed after a restart) or given up.
        tracing::info!(node = %node.alias, %funding, "no funding waiting to be signed");
        return Ok(());
    };
    let signed = countersigned(node, funding).and_then(|()| {
        node.wallet
            .sign_built(psbt.clone())
            .map_err(HostError::from)
    });
    match signed {
        Ok(tx) => {
            // The wallet counts it from here (and frees its inputs); then it is forgotten.
            node.broadcaster.broadcast_transactions(&[&tx]);
            node.kv.write_all(vec![KvWrite::remove(
                NAMESPACE,
                SUB,
                &funding.txid.to_string(),
            )])?;
            Ok(())
        }
        Err(e) => {
            tracing::warn!(node = %node.alias, error = %e, "funding not signed; closing the channel");
            forget(node, &psbt);
            let event = close_unfunded(
                &node.channel_manager,
                channel_id,
                &counterparty,
                format!("funding not signed: {e}"),
            );
            rows.event(&node.id.to_string(), "funding_failed", &event)?;
            Ok(())
        }
    }
}

/// `DiscardFunding` of a funding never broadcast: its inputs are the wallet's again.
pub(crate) fn discard(node: &Node, funding: OutPoint) -> Result<(), HostError> {
    if let Some(psbt) = pending(node, &funding.txid)? {
        forget(node, &psbt);
    }
    Ok(())
}

/// At start: the fundings still waiting for the peer keep their inputs reserved.
pub(crate) fn reserve_pending(node: &Node) -> Result<(), HostError> {
    for name in node.kv.list(NAMESPACE, SUB)? {
        let txid: Txid = name
            .parse()
            .map_err(|_| HostError::Corrupt(format!("pending funding {name}")))?;
        if let Some(psbt) = pending(node, &txid)? {
            node.wallet.reserve_inputs(&psbt.unsigned_tx)?;
        }
    }
    Ok(())
}

/// Asks the signer to validate the node's first commitment of the channel funded at
/// `funding`, as LDK validated it: the signer signs the funding only after that.
fn countersigned(node: &Node, funding: OutPoint) -> Result<(), HostError> {
    let (keys_id, holder) = node
        .keys
        .carried()
        .holder_of_funding(funding)
        .ok_or_else(|| {
            HostError::Corrupt(format!("no commitment of the channel funded at {funding}"))
        })?;
    let request = Request::ValidateHolderCommitment {
        keys_id,
        // The signer checks it against the parameters its first signature pinned.
        holder: HolderCommitment {
            params: None,
            ..holder
        },
    };
    match node
        .link
        .call_blocking(request, crate::signer_client::link::SYNC_DEADLINE)?
    {
        Response::Accepted => Ok(()),
        other => Err(HostError::Lightning(format!(
            "unexpected answer to a validation: {other:?}"
        ))),
    }
}

fn pending(node: &Node, txid: &Txid) -> Result<Option<Psbt>, HostError> {
    let Some(bytes) = read_optional(&*node.kv, NAMESPACE, SUB, &txid.to_string())? else {
        return Ok(None);
    };
    Psbt::deserialize(&bytes)
        .map(Some)
        .map_err(|e| HostError::Corrupt(format!("pending funding {txid}: {e}")))
}

/// Gives a funding up: its inputs are freed and it is no longer kept.
fn forget(node: &Node, psbt: &Psbt) {
    let _ = node.wallet.release_reservation(&psbt.unsigned_tx);
    let txid = psbt.unsigned_tx.compute_txid();
    if let Err(e) = node
        .kv
        .write_all(vec![KvWrite::remove(NAMESPACE, SUB, &txid.to_string())])
    {
        tracing::warn!(node = %node.alias, %txid, error = %e, "a given-up funding is still kept");
    }
}

/// The signer refused a commitment of channel `channel_id`: if it is a channel the node is
/// opening and not open yet (not ready, nothing confirmed), it never will be, so it is closed
/// now and the node's user is told why (`funding_failed`). An open channel, or a peer's open
/// our signer holds back, is left to wait.
pub(crate) fn abandon_unopened(
    manager: &crate::types::ChannelManager,
    events: &crate::store::Store,
    node_hex: &str,
    channel_id: ChannelId,
    reason: &str,
) {
    let Some(channel) = manager
        .list_channels()
        .into_iter()
        .find(|c| c.channel_id == channel_id)
    else {
        return;
    };
    if !channel.is_outbound || channel.is_channel_ready || channel.confirmations.unwrap_or(0) > 0 {
        return;
    }
    let event = close_unfunded(
        manager,
        channel_id,
        &channel.counterparty.node_id,
        format!("its commitment was refused: {reason}"),
    );
    events.queue_event(node_hex, "funding_failed", &event);
}

/// Closes a channel whose funding never went out (there is nothing to broadcast; LDK's
/// `DiscardFunding` gives its inputs back to the wallet) and returns its `funding_failed`
/// event's data.
fn close_unfunded(
    manager: &crate::types::ChannelManager,
    channel_id: ChannelId,
    counterparty: &PublicKey,
    error: String,
) -> serde_json::Value {
    let _ = manager.force_close_broadcasting_latest_txn(&channel_id, counterparty, error.clone());
    json!({"channel_id": channel_id.to_string(), "error": error})
}
