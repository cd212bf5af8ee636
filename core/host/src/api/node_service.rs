//! The node API's calls: each checks its token's scope, reads its request (INVALID_ARGUMENT
//! naming the field), and asks the token's node. A request never names a node, so a token
//! reaches only its own; ids of another node's payments or channels are NOT_FOUND.

use std::time::Duration;

use bitcoin::hashes::Hash;
use flotilla_proto::node as pb;
use flotilla_proto::node::node_server::Node as NodeApi;
use lightning_invoice::Bolt11Invoice;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::auth::{bearer, Gate};
use super::follow::{follow, EventStream};
use super::idempotency::Idempotency;
use super::messages::{self, page_size};
use super::token::Scope;
use crate::error::HostError;
use crate::events::hex;
use crate::hold::DEFAULT_HOLD_CLTV_DELTA;
use crate::node::Node;
use crate::ops::StartedPayment;
use crate::store::{Direction, PaymentFilter};

/// Invoice lifetime when the request names none.
const DEFAULT_INVOICE_EXPIRY_SECS: u32 = 3_600;
/// Longest invoice lifetime accepted: a year.
const MAX_INVOICE_EXPIRY_SECS: u32 = 365 * 24 * 3_600;
/// How long PayInvoice waits for the outcome when asked to and told no time.
const DEFAULT_PAY_WAIT_SECS: u32 = 60;
const MAX_PAY_WAIT_SECS: u32 = 600;
/// No amount is larger than all bitcoin there will be.
const MAX_MSAT: u64 = 21_000_000 * 100_000_000 * 1_000;
/// BOLT 11 limits a description to 639 bytes.
const MAX_DESCRIPTION_BYTES: usize = 639;

pub(super) struct NodeService {
    pub(super) gate: Gate,
    pub(super) idempotency: Idempotency,
    /// Becomes true when the server stops: ends the event streams.
    pub(super) stop: watch::Receiver<bool>,
}

type Answer<T> = Result<Response<T>, Status>;

fn amount_msat(field: &str, msat: u64) -> Result<u64, Status> {
    match msat {
        0 => Err(Status::invalid_argument(format!(
            "{field}: must be above zero"
        ))),
        n if n > MAX_MSAT => Err(Status::invalid_argument(format!(
            "{field}: {n} is more than all bitcoin"
        ))),
        n => Ok(n),
    }
}

/// The stored row of `node`'s payment, as the API shows it.
fn stored_payment(node: &Node, hash: &str, direction: Direction) -> Result<pb::Payment, Status> {
    node.store()
        .payment(&node.id.to_string(), hash, direction)
        .map_err(HostError::from)?
        .map(messages::payment)
        .ok_or_else(|| Status::not_found(format!("no {direction} payment {hash}")))
}

#[tonic::async_trait]
impl NodeApi for NodeService {
    async fn get_node_info(
        &self,
        request: Request<pb::GetNodeInfoRequest>,
    ) -> Answer<pb::NodeInfo> {
        let node = self.gate.node(&request, Scope::Read)?;
        let best = node.channel_manager.current_best_block();
        let channels = node.channels();
        Ok(Response::new(pb::NodeInfo {
            node_id: node.id.to_string(),
            alias: node.alias.clone(),
            network: node.wallet.network().to_string(),
            listen_addr: node.listen_addr().to_string(),
            block_height: best.height,
            block_hash: best.block_hash.to_string(),
            peers: node.peers().len() as u32,
            channels: channels.len() as u32,
            usable_channels: channels.iter().filter(|c| c.is_usable).count() as u32,
        }))
    }

    async fn get_balances(&self, request: Request<pb::GetBalancesRequest>) -> Answer<pb::Balances> {
        let node = self.gate.node(&request, Scope::Read)?;
        let wallet = node.wallet_balance();
        let channels = node.channels();
        Ok(Response::new(pb::Balances {
            onchain_confirmed_sat: wallet.confirmed_sat,
            onchain_pending_sat: wallet.pending_sat,
            onchain_immature_sat: wallet.immature_sat,
            lightning_outbound_msat: channels.iter().map(|c| c.outbound_capacity_msat).sum(),
            lightning_inbound_msat: channels.iter().map(|c| c.inbound_capacity_msat).sum(),
            claimable_on_chain_sat: node.claimable_on_chain_sat(),
        }))
    }

    async fn new_address(
        &self,
        request: Request<pb::NewAddressRequest>,
    ) -> Answer<pb::NewAddressResponse> {
        let node = self.gate.node(&request, Scope::Receive)?;
        let address = node.new_address()?.to_string();
        Ok(Response::new(pb::NewAddressResponse { address }))
    }

    async fn connect_peer(
        &self,
        request: Request<pb::ConnectPeerRequest>,
    ) -> Answer<pb::ConnectPeerResponse> {
        let node = self.gate.node(&request, Scope::Peers)?;
        let req = request.into_inner();
        let peer = messages::node_id("node_id", &req.node_id)?;
        if peer == node.id {
            return Err(Status::invalid_argument("node_id: is this node's own"));
        }
        let unresolved = || Status::invalid_argument("address: not a reachable host:port");
        let addr = tokio::net::lookup_host(req.address.trim())
            .await
            .map_err(|_| unresolved())?
            .next()
            .ok_or_else(unresolved)?;
        node.connect(peer, addr).await?;
        Ok(Response::new(pb::ConnectPeerResponse {}))
    }

    async fn disconnect_peer(
        &self,
        request: Request<pb::DisconnectPeerRequest>,
    ) -> Answer<pb::DisconnectPeerResponse> {
        let node = self.gate.node(&request, Scope::Peers)?;
        let peer = messages::node_id("node_id", &request.get_ref().node_id)?;
        node.disconnect(&peer)?;
        Ok(Response::new(pb::DisconnectPeerResponse {}))
    }

    async fn list_peers(
        &self,
        request: Request<pb::ListPeersRequest>,
    ) -> Answer<pb::ListPeersResponse> {
        let node = self.gate.node(&request, Scope::Read)?;
        let peers = node
            .peers()
            .into_iter()
            .map(|(id, address, inbound)| pb::Peer {
                node_id: id.to_string(),
                address: address.unwrap_or_default(),
                inbound,
            })
            .collect();
        Ok(Response::new(pb::ListPeersResponse { peers }))
    }

    async fn open_channel(
        &self,
        request: Request<pb::OpenChannelRequest>,
    ) -> Answer<pb::OpenChannelResponse> {
        let node = self.gate.node(&request, Scope::Channels)?;
        let req = request.into_inner();
        let answer = self
            .idempotency
            .run(&node, "OpenChannel", &req.idempotency_key, &req, || async {
                open_channel(&node, &req)
            })
            .await?;
        Ok(Response::new(answer))
    }

    async fn close_channel(
        &self,
        request: Request<pb::CloseChannelRequest>,
    ) -> Answer<pb::CloseChannelResponse> {
        let node = self.gate.node(&request, Scope::Channels)?;
        let req = request.into_inner();
        let id = messages::channel_id("channel_id", &req.channel_id)?;
        let channel = node
            .channels()
            .into_iter()
            .find(|c| c.channel_id == id)
            .ok_or_else(|| Status::not_found(format!("no open channel {id}")))?;
        let peer = channel.counterparty.node_id;
        if req.force {
            node.force_close_channel(&id, &peer)?;
        } else {
            node.close_channel(&id, &peer).await?;
        }
        Ok(Response::new(pb::CloseChannelResponse {}))
    }

    async fn list_channels(
        &self,
        request: Request<pb::ListChannelsRequest>,
    ) -> Answer<pb::ListChannelsResponse> {
        let node = self.gate.node(&request, Scope::Read)?;
        let channels = node.channels().iter().map(messages::channel).collect();
        Ok(Response::new(pb::ListChannelsResponse { channels }))
    }

    async fn create_invoice(
        &self,
        request: Request<pb::CreateInvoiceRequest>,
    ) -> Answer<pb::Invoice> {
        let node = self.gate.node(&request, Scope::Receive)?;
        let req = request.into_inner();
        let answer = self
            .idempotency
            .run(
                &node,
                "CreateInvoice",
                &req.idempotency_key,
                &req,
                || async { create_invoice(&node, &req) },
            )
            .await?;
        Ok(Response::new(answer))
    }

    async fn settle_held(
        &self,
        request: Request<pb::SettleHeldRequest>,
    ) -> Answer<pb::SettleHeldResponse> {
        let node = self.gate.node(&request, Scope::Receive)?;
        let preimage = messages::bytes32("preimage", &request.get_ref().preimage)?;
        node.settle_held_payment(preimage)?;
        Ok(Response::new(pb::SettleHeldResponse {}))
    }

    async fn cancel_held(
        &self,
        request: Request<pb::CancelHeldRequest>,
    ) -> Answer<pb::CancelHeldResponse> {
        let node = self.gate.node(&request, Scope::Receive)?;
        let hash = messages::bytes32("payment_hash", &request.get_ref().payment_hash)?;
        node.cancel_hold_invoice(hash)?;
        Ok(Response::new(pb::CancelHeldResponse {}))
    }

    async fn pay_invoice(&self, request: Request<pb::PayInvoiceRequest>) -> Answer<pb::Payment> {
        let node = self.gate.node(&request, Scope::Send)?;
        let req = request.into_inner();
        let answer = self
            .idempotency
            .run(&node, "PayInvoice", &req.idempotency_key, &req, || {
                pay_invoice(&node, &req)
            })
            .await?;
        Ok(Response::new(answer))
    }

    async fn keysend(&self, request: Request<pb::KeysendRequest>) -> Answer<pb::Payment> {
        let node = self.gate.node(&request, Scope::Send)?;
        let req = request.into_inner();
        let answer = self
            .idempotency
            .run(&node, "Keysend", &req.idempotency_key, &req, || {
                keysend(&node, &req)
            })
            .await?;
        Ok(Response::new(answer))
    }

    async fn onchain_send(
        &self,
        request: Request<pb::OnchainSendRequest>,
    ) -> Answer<pb::OnchainSendResponse> {
        let node = self.gate.node(&request, Scope::Send)?;
        let req = request.into_inner();
        let answer = self
            .idempotency
            .run(&node, "OnchainSend", &req.idempotency_key, &req, || async {
                let txid = node.send_onchain(&req.address, req.amount_sat)?;
                Ok(pb::OnchainSendResponse {
                    txid: txid.to_string(),
                })
            })
            .await?;
        Ok(Response::new(answer))
    }

    async fn decode_invoice(
        &self,
        request: Request<pb::DecodeInvoiceRequest>,
    ) -> Answer<pb::DecodedInvoice> {
        self.gate.node(&request, Scope::Read)?;
        let invoice: Bolt11Invoice = request
            .get_ref()
            .bolt11
            .trim()
            .parse()
            .map_err(|e| Status::invalid_argument(format!("bolt11: {e}")))?;
        let description = match invoice.description() {
            lightning_invoice::Bolt11InvoiceDescriptionRef::Direct(d) => d.to_string(),
            lightning_invoice::Bolt11InvoiceDescriptionRef::Hash(h) => hex(&h.0.to_byte_array()),
        };
        let created_at = invoice.duration_since_epoch();
        Ok(Response::new(pb::DecodedInvoice {
            payment_hash: hex(&invoice.payment_hash().to_byte_array()),
            amount_msat: invoice.amount_milli_satoshis(),
            description,
            payee_node_id: invoice.get_payee_pub_key().to_string(),
            network: invoice.network().to_string(),
            created_at: created_at.as_secs(),
            expires_at: (created_at + invoice.expiry_time()).as_secs(),
            expired: invoice.would_expire(crate::node::now()),
            min_final_cltv_expiry_delta: invoice.min_final_cltv_expiry_delta(),
        }))
    }

    async fn get_signer_status(
        &self,
        request: Request<pb::GetSignerStatusRequest>,
    ) -> Answer<pb::SignerStatus> {
        let node = self.gate.node(&request, Scope::Read)?;
        Ok(Response::new(pb::SignerStatus {
            attached: node.link.is_attached(),
            requests_answered: node.signer_requests(),
        }))
    }

    async fn get_payment(&self, request: Request<pb::GetPaymentRequest>) -> Answer<pb::Payment> {
        let node = self.gate.node(&request, Scope::Read)?;
        let req = request.get_ref();
        let hash = hex(&messages::bytes32("payment_hash", &req.payment_hash)?);
        let direction = messages::direction("direction", req.direction())?;
        Ok(Response::new(stored_payment(&node, &hash, direction)?))
    }

    async fn list_payments(
        &self,
        request: Request<pb::ListPaymentsRequest>,
    ) -> Answer<pb::ListPaymentsResponse> {
        let node = self.gate.node(&request, Scope::Read)?;
        let req = request.get_ref();
        let before = match req.page_token.as_str() {
            "" => None,
            token => Some(
                token
                    .parse::<i64>()
                    .map_err(|_| Status::invalid_argument("page_token: not one this API gave"))?,
            ),
        };
        let filter = PaymentFilter {
            direction: messages::optional_direction(req.direction()),
            status: messages::optional_status(req.status()),
        };
        let size = page_size(req.page_size);
        // One more than the page, to know whether another follows.
        let mut rows = node
            .store()
            .payments_page(&node.id.to_string(), filter, before, size + 1)
            .map_err(HostError::from)?;
        let next_page_token = if rows.len() > size as usize {
            rows.truncate(size as usize);
            rows.last()
                .map(|(cursor, _)| cursor.to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListPaymentsResponse {
            payments: rows
                .into_iter()
                .map(|(_, row)| messages::payment(row))
                .collect(),
            next_page_token,
        }))
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Answer<pb::ListEventsResponse> {
        let node = self.gate.node(&request, Scope::Read)?;
        let req = request.get_ref();
        let after = i64::try_from(req.after)
            .map_err(|_| Status::invalid_argument("after: not an event id"))?;
        let events = node
            .store()
            .events(&node.id.to_string(), after, page_size(req.limit))
            .map_err(HostError::from)?;
        Ok(Response::new(pb::ListEventsResponse {
            events: events.into_iter().map(messages::event).collect(),
        }))
    }

    type SubscribeEventsStream = EventStream;

    async fn subscribe_events(
        &self,
        request: Request<pb::SubscribeEventsRequest>,
    ) -> Answer<EventStream> {
        let node = self.gate.node(&request, Scope::Read)?;
        let token = bearer(&request)?.to_owned();
        let after = i64::try_from(request.get_ref().after)
            .map_err(|_| Status::invalid_argument("after: not an event id"))?;
        Ok(Response::new(follow(
            self.gate.clone(),
            token,
            node.id.to_string(),
            after,
            self.stop.clone(),
        )))
    }
}

/// Opens a channel as `req` asks, refusing first what could not be funded.
fn open_channel(
    node: &Node,
    req: &pb::OpenChannelRequest,
) -> Result<pb::OpenChannelResponse, Status> {
    let peer = messages::node_id("node_id", &req.node_id)?;
    let amount_sat = amount_msat("amount_sat", req.amount_sat)?;
    if req.push_msat > amount_sat.saturating_mul(1_000) {
        return Err(Status::invalid_argument(
            "push_msat: more than the channel's amount",
        ));
    }
    // Funding comes later (when the peer accepted), from confirmed coins: refuse now what the
    // wallet cannot pay rather than fail the channel then.
    let spendable = node.wallet_balance().confirmed_sat;
    if amount_sat > spendable {
        return Err(Status::invalid_argument(format!(
            "amount_sat: {amount_sat} is above the wallet's confirmed balance ({spendable})"
        )));
    }
    let channel_id = node.open_channel(peer, amount_sat, req.push_msat)?;
    Ok(pb::OpenChannelResponse {
        channel_id: channel_id.to_string(),
    })
}

/// Makes the invoice `req` asks for: a plain one, or with a payment hash a hold invoice.
fn create_invoice(node: &Node, req: &pb::CreateInvoiceRequest) -> Result<pb::Invoice, Status> {
    let amount = req
        .amount_msat
        .map(|a| amount_msat("amount_msat", a))
        .transpose()?;
    if req.description.len() > MAX_DESCRIPTION_BYTES {
        return Err(Status::invalid_argument(format!(
            "description: longer than {MAX_DESCRIPTION_BYTES} bytes"
        )));
    }
    let expiry = req.expiry_secs.unwrap_or(DEFAULT_INVOICE_EXPIRY_SECS);
    if expiry == 0 || expiry > MAX_INVOICE_EXPIRY_SECS {
        return Err(Status::invalid_argument(format!(
            "expiry_secs: must be 1 to {MAX_INVOICE_EXPIRY_SECS}"
        )));
    }
    let invoice = match &req.payment_hash {
        Some(hash) => {
            let hash = messages::bytes32("payment_hash", hash)?;
            let amount = amount.ok_or_else(|| {
                Status::invalid_argument("amount_msat: a hold invoice needs an amount")
            })?;
            let delta = req
                .cltv_expiry_delta
                .unwrap_or(u32::from(DEFAULT_HOLD_CLTV_DELTA));
            let delta = u16::try_from(delta)
                .map_err(|_| Status::invalid_argument("cltv_expiry_delta: too large"))?;
            node.create_hold_invoice(amount, hash, &req.description, expiry, delta)?
        }
        None if req.cltv_expiry_delta.is_some() => {
            return Err(Status::invalid_argument(
                "cltv_expiry_delta: only for hold invoices (with payment_hash)",
            ))
        }
        None => node.create_invoice(amount, &req.description, expiry)?,
    };
    Ok(invoice_message(&invoice))
}

/// How long a payment call waits for the outcome (`None`: it answers at once), checked with
/// its fee cap.
fn payment_wait(
    wait: bool,
    timeout_secs: Option<u32>,
    max_fee_msat: Option<u64>,
) -> Result<Option<Duration>, Status> {
    let secs = timeout_secs.unwrap_or(DEFAULT_PAY_WAIT_SECS);
    if secs > MAX_PAY_WAIT_SECS {
        return Err(Status::invalid_argument(format!(
            "timeout_secs: at most {MAX_PAY_WAIT_SECS}"
        )));
    }
    if max_fee_msat.is_some_and(|f| f > MAX_MSAT) {
        return Err(Status::invalid_argument("max_fee_msat: too large"));
    }
    Ok(wait.then(|| Duration::from_secs(secs.into())))
}

/// The payment `started` as it stands after waiting (if asked) for its outcome.
async fn answer_payment(
    node: &Node,
    started: StartedPayment,
    wait: Option<Duration>,
) -> Result<pb::Payment, Status> {
    let hash = hex(&started.payment_hash);
    if let Some(wait) = wait {
        // Still pending after the wait: the row says so; the client follows it on.
        started.outcome(wait).await?;
    }
    stored_payment(node, &hash, Direction::Outbound)
}

/// Pays `req`'s destination by keysend.
async fn keysend(node: &Node, req: &pb::KeysendRequest) -> Result<pb::Payment, Status> {
    let wait = payment_wait(req.wait, req.timeout_secs, req.max_fee_msat)?;
    let destination = messages::node_id("node_id", &req.node_id)?;
    let amount = amount_msat("amount_msat", req.amount_msat)?;
    let started = node
        .start_keysend(destination, amount, req.max_fee_msat)
        .await?;
    answer_payment(node, started, wait).await
}

/// Pays the invoice of `req` (once), answering with its payment as it stands then.
async fn pay_invoice(node: &Node, req: &pb::PayInvoiceRequest) -> Result<pb::Payment, Status> {
    let wait = payment_wait(req.wait, req.timeout_secs, req.max_fee_msat)?;
    let started = node
        .start_invoice_payment(&req.bolt11, req.max_fee_msat)
        .await
        .map_err(|e| match e {
            HostError::InvalidInput(m) => {
                Status::invalid_argument(format!("bolt11: {}", m.trim_start_matches("invoice: ")))
            }
            other => other.into(),
        })?;
    answer_payment(node, started, wait).await
}

fn invoice_message(invoice: &Bolt11Invoice) -> pb::Invoice {
    pb::Invoice {
        bolt11: invoice.to_string(),
        payment_hash: hex(&invoice.payment_hash().to_byte_array()),
        expires_at: invoice.expires_at().map_or(0, |t| t.as_secs()),
    }
}
