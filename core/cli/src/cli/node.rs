//! `flotilla node <command>`: drives one hosted node through the node API with its token:
//! what a user of the node does (wallet, peers, channels, invoices, payments, events).

use clap::{Args, Subcommand};
use flotilla_client::pb;
use serde_json::{json, Value};

use super::api::{ApiArgs, ApiCallError};

#[derive(Args)]
pub struct NodeArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: NodeCommand,
}

#[derive(Subcommand)]
enum NodeCommand {
    /// The node's id, alias, chain tip, peers and channels.
    Info,
    /// On-chain and channel balances.
    Balance,
    /// A fresh on-chain address of the node's wallet.
    Address,
    /// Connect to a Lightning peer.
    Connect {
        node_id: String,
        /// host:port
        address: String,
    },
    /// Drop a peer (and stop dialling it).
    Disconnect {
        node_id: String,
    },
    Peers,
    /// Open a channel of SAT to a connected peer, funded from the node's wallet.
    Open {
        node_id: String,
        sat: u64,
        #[arg(long, default_value_t = 0)]
        push_msat: u64,
        /// Retrying with the same key does the work once (and answers as the first time).
        #[arg(long, default_value = "")]
        idempotency_key: String,
    },
    /// Close a channel (cooperatively; `--force` broadcasts the node's commitment).
    Close {
        channel_id: String,
        #[arg(long)]
        force: bool,
    },
    Channels,
    /// A BOLT11 invoice; with `--hash` a hold invoice, settled or cancelled later.
    Invoice {
        /// Omit for an invoice of any amount.
        #[arg(long)]
        msat: Option<u64>,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long, value_name = "SECS")]
        expiry: Option<u32>,
        /// The payment hash of a hold invoice (you keep its preimage).
        #[arg(long = "hash", value_name = "PAYMENT_HASH")]
        payment_hash: Option<String>,
        /// Retrying with the same key does the work once (and answers as the first time).
        #[arg(long, default_value = "")]
        idempotency_key: String,
    },
    /// Take a held payment with its preimage.
    Settle {
        preimage: String,
    },
    /// Send a held payment back (or refuse its invoice's payments).
    Cancel {
        payment_hash: String,
    },
    /// Pay a BOLT11 invoice (once, however often asked), waiting for the outcome.
    Pay {
        bolt11: String,
        #[arg(long)]
        max_fee_msat: Option<u64>,
        /// Answer at once with the payment pending.
        #[arg(long)]
        no_wait: bool,
        #[arg(long, value_name = "SECS")]
        timeout: Option<u32>,
        /// Retrying with the same key does the work once (and answers as the first time).
        #[arg(long, default_value = "")]
        idempotency_key: String,
    },
    /// One payment, by hash and direction (`in` or `out`).
    Payment {
        payment_hash: String,
        #[arg(value_parser = ["in", "out"])]
        direction: String,
    },
    /// The node's payments, newest first.
    Payments {
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// The node's events after an id; with `--follow`, then each new one as it happens.
    Events {
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long)]
        follow: bool,
    },
}

fn direction_name(d: pb::Direction) -> &'static str {
    match d {
        pb::Direction::Inbound => "inbound",
        pb::Direction::Outbound => "outbound",
        pb::Direction::Unspecified => "unknown",
    }
}

fn status_name(s: pb::PaymentStatus) -> &'static str {
    match s {
        pb::PaymentStatus::Pending => "pending",
        pb::PaymentStatus::Held => "held",
        pb::PaymentStatus::Succeeded => "succeeded",
        pb::PaymentStatus::Failed => "failed",
        pb::PaymentStatus::Unspecified => "unknown",
    }
}

fn payment(p: &pb::Payment) -> Value {
    json!({
        "payment_hash": p.payment_hash,
        "direction": direction_name(p.direction()),
        "status": status_name(p.status()),
        "amount_msat": p.amount_msat,
        "fee_msat": p.fee_msat,
        "preimage": p.preimage,
        "bolt11": p.bolt11,
        "failure_reason": p.failure_reason,
        "created_at": p.created_at,
        "updated_at": p.updated_at,
    })
}

fn event(e: &pb::Event) -> Value {
    let data: Value = serde_json::from_str(&e.data_json).unwrap_or(Value::Null);
    json!({"id": e.id, "kind": e.kind, "created_at": e.created_at, "data": data})
}

pub async fn run(args: NodeArgs) -> Result<(), ApiCallError> {
    let mut node = args.api.node().await?;
    let answer = match args.command {
        NodeCommand::Info => {
            let i = node
                .get_node_info(pb::GetNodeInfoRequest {})
                .await?
                .into_inner();
            json!({
                "node_id": i.node_id, "alias": i.alias, "network": i.network,
                "listen_addr": i.listen_addr, "block_height": i.block_height,
                "block_hash": i.block_hash, "peers": i.peers, "channels": i.channels,
                "usable_channels": i.usable_channels,
            })
        }
        NodeCommand::Balance => {
            let b = node
                .get_balances(pb::GetBalancesRequest {})
                .await?
                .into_inner();
            json!({
                "onchain_confirmed_sat": b.onchain_confirmed_sat,
                "onchain_pending_sat": b.onchain_pending_sat,
                "onchain_immature_sat": b.onchain_immature_sat,
                "lightning_outbound_msat": b.lightning_outbound_msat,
                "lightning_inbound_msat": b.lightning_inbound_msat,
                "claimable_on_chain_sat": b.claimable_on_chain_sat,
            })
        }
        NodeCommand::Address => {
            let a = node
                .new_address(pb::NewAddressRequest {})
                .await?
                .into_inner();
            json!({ "address": a.address })
        }
        NodeCommand::Connect { node_id, address } => {
            node.connect_peer(pb::ConnectPeerRequest {
                node_id: node_id.clone(),
                address,
            })
            .await?;
            json!({ "connected": node_id })
        }
        NodeCommand::Disconnect { node_id } => {
            node.disconnect_peer(pb::DisconnectPeerRequest {
                node_id: node_id.clone(),
            })
            .await?;
            json!({ "disconnected": node_id })
        }
        NodeCommand::Peers => {
            let peers = node
                .list_peers(pb::ListPeersRequest {})
                .await?
                .into_inner()
                .peers;
            Value::Array(
                peers
                    .iter()
                    .map(|p| json!({"node_id": p.node_id, "address": p.address, "inbound": p.inbound}))
                    .collect(),
            )
        }
        NodeCommand::Open {
            node_id,
            sat,
            push_msat,
            idempotency_key,
        } => {
            let opened = node
                .open_channel(pb::OpenChannelRequest {
                    node_id,
                    amount_sat: sat,
                    push_msat,
                    idempotency_key,
                })
                .await?
                .into_inner();
            json!({ "channel_id": opened.channel_id })
        }
        NodeCommand::Close { channel_id, force } => {
            node.close_channel(pb::CloseChannelRequest {
                channel_id: channel_id.clone(),
                force,
            })
            .await?;
            json!({ "closing": channel_id, "force": force })
        }
        NodeCommand::Channels => {
            let channels = node
                .list_channels(pb::ListChannelsRequest {})
                .await?
                .into_inner()
                .channels;
            Value::Array(
                channels
                    .iter()
                    .map(|c| {
                        json!({
                            "channel_id": c.channel_id, "peer": c.peer_node_id,
                            "capacity_sat": c.capacity_sat, "outbound_msat": c.outbound_msat,
                            "inbound_msat": c.inbound_msat, "ready": c.ready, "usable": c.usable,
                            "outbound": c.outbound, "funding_outpoint": c.funding_outpoint,
                            "short_channel_id": c.short_channel_id, "pending_htlcs": c.pending_htlcs,
                        })
                    })
                    .collect(),
            )
        }
        NodeCommand::Invoice {
            msat,
            description,
            expiry,
            payment_hash,
            idempotency_key,
        } => {
            let invoice = node
                .create_invoice(pb::CreateInvoiceRequest {
                    amount_msat: msat,
                    description,
                    expiry_secs: expiry,
                    payment_hash,
                    cltv_expiry_delta: None,
                    idempotency_key,
                })
                .await?
                .into_inner();
            json!({
                "bolt11": invoice.bolt11,
                "payment_hash": invoice.payment_hash,
                "expires_at": invoice.expires_at,
            })
        }
        NodeCommand::Settle { preimage } => {
            node.settle_held(pb::SettleHeldRequest { preimage }).await?;
            json!({ "settled": true })
        }
        NodeCommand::Cancel { payment_hash } => {
            node.cancel_held(pb::CancelHeldRequest {
                payment_hash: payment_hash.clone(),
            })
            .await?;
            json!({ "cancelled": payment_hash })
        }
        NodeCommand::Pay {
            bolt11,
            max_fee_msat,
            no_wait,
            timeout,
            idempotency_key,
        } => {
            let paid = node
                .pay_invoice(pb::PayInvoiceRequest {
                    bolt11,
                    max_fee_msat,
                    wait: !no_wait,
                    timeout_secs: timeout,
                    idempotency_key,
                })
                .await?
                .into_inner();
            payment(&paid)
        }
        NodeCommand::Payment {
            payment_hash,
            direction,
        } => {
            let direction = match direction.as_str() {
                "in" => pb::Direction::Inbound,
                _ => pb::Direction::Outbound,
            };
            let found = node
                .get_payment(pb::GetPaymentRequest {
                    payment_hash,
                    direction: direction.into(),
                })
                .await?
                .into_inner();
            payment(&found)
        }
        NodeCommand::Payments { limit, page_token } => {
            let page = node
                .list_payments(pb::ListPaymentsRequest {
                    page_size: limit,
                    page_token,
                    ..Default::default()
                })
                .await?
                .into_inner();
            json!({
                "payments": page.payments.iter().map(payment).collect::<Vec<_>>(),
                "next_page_token": page.next_page_token,
            })
        }
        NodeCommand::Events { after, follow } => {
            if follow {
                let mut stream = node
                    .subscribe_events(pb::SubscribeEventsRequest { after })
                    .await?
                    .into_inner();
                // One event at a time, as it comes, until the stream ends or ^C.
                while let Some(e) = stream.message().await? {
                    args.api.show(&event(&e));
                    if !args.api.json {
                        println!();
                    }
                }
                return Ok(());
            }
            let events = node
                .list_events(pb::ListEventsRequest { after, limit: 0 })
                .await?
                .into_inner()
                .events;
            Value::Array(events.iter().map(event).collect())
        }
    };
    args.api.show(&answer);
    Ok(())
}
