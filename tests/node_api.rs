//! The node API over real gRPC/TLS, against a host running two nodes on real btcd, LDK peers
//! over TCP. A client holds one node's token and drives only that node: its wallet, peers,
//! channels, invoices (plain and hold), payments (paid once however often asked) and events.
//! Tokens without a scope, of another node, revoked or forged are refused with the status a
//! client can act on, and bad input is refused naming its field.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::Amount;
use flotilla_client::{pb, NodeClient};
use flotilla_host::api::token::{Grant, Scopes};
use flotilla_host::api::tokens::Tokens;
use flotilla_host::api::ApiServer;
use flotilla_host::signer_client::tls::HubTls;
use flotilla_host::Node;
use flotilla_regtest::wait_until;
use flotilla_tests::in_process::{mine_until, seed_signer, Pair};
use tonic::Code;

const CHANNEL_SAT: u64 = 500_000;
const PAYMENT_MSAT: u64 = 20_000_000;

/// The API of `pair`'s host on loopback, and the CA its clients trust.
async fn serve(pair: &Pair) -> (ApiServer, Vec<u8>) {
    let tls = HubTls::generate(&["localhost".into(), "127.0.0.1".into()]).expect("tls");
    let server = ApiServer::start(
        "127.0.0.1:0".parse().unwrap(),
        &tls,
        pair.host.clone(),
        None,
    )
    .await
    .expect("api");
    (server, tls.ca_pem().to_vec())
}

/// A token of `node` with `scopes` ("read,send", ...).
fn token(pair: &Pair, node: &Node, scopes: &str) -> String {
    let grant = Grant::new(
        Some(node.id.to_string()),
        Scopes::from_str(scopes).expect("scopes"),
    )
    .expect("grant");
    let (token, _) = Tokens::new(pair.host.store().clone())
        .create(&grant, None, None, 0)
        .expect("token");
    token.to_string()
}

async fn client(server: &ApiServer, ca: &[u8], token: &str) -> NodeClient {
    flotilla_client::connect(
        &format!("https://localhost:{}", server.local_addr().port()),
        ca,
        token,
    )
    .await
    .expect("connect")
}

const ALL: &str = "read,receive,send,channels,peers";

async fn payment(client: &mut NodeClient, hash: &str, direction: pb::Direction) -> pb::Payment {
    client
        .get_payment(pb::GetPaymentRequest {
            payment_hash: hash.to_owned(),
            direction: direction.into(),
        })
        .await
        .expect("payment")
        .into_inner()
}

/// Waits until `client`'s payment `hash` has `status`.
async fn payment_becomes(
    client: &NodeClient,
    hash: &str,
    direction: pb::Direction,
    status: pb::PaymentStatus,
) -> pb::Payment {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let row = payment(&mut client.clone(), hash, direction).await;
        if row.status() == status {
            return row;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{hash} stayed {:?}",
            row.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn invoice_request(amount_msat: u64) -> pb::CreateInvoiceRequest {
    pb::CreateInvoiceRequest {
        amount_msat: Some(amount_msat),
        description: "api".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_drives_its_node_through_the_api_over_tls() {
    let pair = Pair::start(
        "node-api",
        Arc::new(seed_signer(1)),
        Arc::new(seed_signer(2)),
    )
    .await;
    let (server, ca) = serve(&pair).await;
    let mut payer = client(&server, &ca, &token(&pair, &pair.payer, ALL)).await;
    let mut payee = client(&server, &ca, &token(&pair, &pair.payee, ALL)).await;

    let info = payer
        .get_node_info(pb::GetNodeInfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.node_id, pair.payer.id.to_string());
    assert_eq!(
        (info.alias.as_str(), info.network.as_str()),
        ("payer", "regtest")
    );
    assert_eq!(
        info.block_height,
        pair.chain.height().await.expect("height")
    );

    // On-chain: an address from the API receives coins.
    let address = payer
        .new_address(pb::NewAddressRequest {})
        .await
        .expect("address")
        .into_inner()
        .address;
    let address = bitcoin::Address::from_str(&address)
        .expect("an address")
        .require_network(bitcoin::Network::Regtest)
        .expect("regtest");
    pair.chain
        .send(&address, Amount::from_sat(CHANNEL_SAT + 100_000))
        .await
        .expect("send");
    pair.chain.mine(1).await.expect("mine");
    wait_until("funded", Duration::from_secs(60), || {
        pair.payer.wallet_balance().confirmed_sat == CHANNEL_SAT + 100_000
    })
    .await
    .expect("funded");
    let balances = payer
        .get_balances(pb::GetBalancesRequest {})
        .await
        .expect("balances")
        .into_inner();
    assert_eq!(balances.onchain_confirmed_sat, CHANNEL_SAT + 100_000);

    // A channel, opened through the API.
    payer
        .connect_peer(pb::ConnectPeerRequest {
            node_id: pair.payee.id.to_string(),
            address: pair.payee.listen_addr().to_string(),
        })
        .await
        .expect("connect");
    let peers = payer
        .list_peers(pb::ListPeersRequest {})
        .await
        .expect("peers")
        .into_inner()
        .peers;
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].node_id, pair.payee.id.to_string());
    payer
        .open_channel(pb::OpenChannelRequest {
            node_id: pair.payee.id.to_string(),
            amount_sat: CHANNEL_SAT,
            push_msat: 0,
            ..Default::default()
        })
        .await
        .expect("open");
    wait_until("funding broadcast", Duration::from_secs(60), || {
        pair.payer
            .channels()
            .iter()
            .all(|c| c.funding_txo.is_some())
    })
    .await
    .expect("funding");
    tokio::time::sleep(Duration::from_millis(500)).await;
    pair.chain.mine(3).await.expect("mine");
    wait_until("usable", Duration::from_secs(60), || {
        pair.payer.channels().iter().any(|c| c.is_usable)
    })
    .await
    .expect("usable");
    let channels = payer
        .list_channels(pb::ListChannelsRequest {})
        .await
        .expect("channels")
        .into_inner()
        .channels;
    assert_eq!(channels.len(), 1);
    let channel = &channels[0];
    assert!(channel.usable && channel.ready && channel.outbound);
    assert_eq!(channel.capacity_sat, CHANNEL_SAT);
    assert_eq!(channel.peer_node_id, pair.payee.id.to_string());

    // The payer's client follows its events from the first, live.
    let mut stream = payer
        .subscribe_events(pb::SubscribeEventsRequest { after: 0 })
        .await
        .expect("subscribe")
        .into_inner();
    let mut streamed = Vec::new();

    // Paid by invoice, waiting for the outcome; asked again, paid once.
    let invoice = payee
        .create_invoice(invoice_request(PAYMENT_MSAT))
        .await
        .expect("invoice")
        .into_inner();
    let before = pair.payer.channels()[0].outbound_capacity_msat;
    let pay = pb::PayInvoiceRequest {
        bolt11: invoice.bolt11.clone(),
        wait: true,
        ..Default::default()
    };
    let paid = payer
        .pay_invoice(pay.clone())
        .await
        .expect("pay")
        .into_inner();
    assert_eq!(paid.status(), pb::PaymentStatus::Succeeded, "{paid:?}");
    let preimage = paid.preimage.clone().expect("preimage");
    let hash =
        sha256::Hash::hash(&<[u8; 32] as bitcoin::hex::FromHex>::from_hex(&preimage).unwrap());
    assert_eq!(hash.to_string(), invoice.payment_hash);
    let again = payer.pay_invoice(pay).await.expect("again").into_inner();
    assert_eq!(again.preimage, paid.preimage);
    let received = payment_becomes(
        &payee,
        &invoice.payment_hash,
        pb::Direction::Inbound,
        pb::PaymentStatus::Succeeded,
    )
    .await;
    assert_eq!(received.amount_msat, Some(PAYMENT_MSAT));
    let after = pair.payer.channels()[0].outbound_capacity_msat;
    assert_eq!(
        before - after,
        PAYMENT_MSAT,
        "paid once: {before} -> {after}"
    );

    // With an idempotency key: the retry answers as the first call and pays nothing; the
    // key with another request is refused; an invoice asked twice with a key is made once.
    let keyed = |bolt11: &str| pb::PayInvoiceRequest {
        bolt11: bolt11.to_owned(),
        wait: true,
        idempotency_key: "order-17".into(),
        ..Default::default()
    };
    let make = || pb::CreateInvoiceRequest {
        idempotency_key: "invoice-17".into(),
        ..invoice_request(PAYMENT_MSAT)
    };
    let second = payee
        .create_invoice(make())
        .await
        .expect("keyed invoice")
        .into_inner();
    let again = payee
        .create_invoice(make())
        .await
        .expect("same key")
        .into_inner();
    assert_eq!(again, second, "one invoice for one key");
    let first = payer
        .pay_invoice(keyed(&second.bolt11))
        .await
        .expect("keyed pay")
        .into_inner();
    assert_eq!(first.status(), pb::PaymentStatus::Succeeded, "{first:?}");
    let retried = payer
        .pay_invoice(keyed(&second.bolt11))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(retried, first);
    let status = payer
        .pay_invoice(keyed(&invoice.bolt11))
        .await
        .expect_err("the key with another invoice");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("idempotency_key"),
        "{status:?}"
    );
    let after_keyed = pair.payer.channels()[0].outbound_capacity_msat;
    assert_eq!(
        after - after_keyed,
        PAYMENT_MSAT,
        "the keyed payment was made once"
    );

    read_until(&mut stream, &mut streamed, "payment_sent", 2).await;
    // The client goes away, and comes back after the last event it received.
    drop(stream);

    // A hold invoice: the payment waits for the payee's user, who settles it.
    let secret = [42u8; 32];
    let held_hash = sha256::Hash::hash(&secret).to_string();
    let hold = payee
        .create_invoice(pb::CreateInvoiceRequest {
            payment_hash: Some(held_hash.clone()),
            ..invoice_request(PAYMENT_MSAT)
        })
        .await
        .expect("hold invoice")
        .into_inner();
    assert_eq!(hold.payment_hash, held_hash);
    let pending = payer
        .pay_invoice(pb::PayInvoiceRequest {
            bolt11: hold.bolt11.clone(),
            ..Default::default()
        })
        .await
        .expect("pay hold")
        .into_inner();
    assert_eq!(
        pending.status(),
        pb::PaymentStatus::Pending,
        "answered at once"
    );
    payment_becomes(
        &payee,
        &held_hash,
        pb::Direction::Inbound,
        pb::PaymentStatus::Held,
    )
    .await;
    payee
        .settle_held(pb::SettleHeldRequest {
            preimage: bitcoin::hex::DisplayHex::to_lower_hex_string(&secret[..]),
        })
        .await
        .expect("settle");
    let settled = payment_becomes(
        &payer,
        &held_hash,
        pb::Direction::Outbound,
        pb::PaymentStatus::Succeeded,
    )
    .await;
    assert_eq!(
        settled.preimage.as_deref(),
        Some(bitcoin::hex::DisplayHex::to_lower_hex_string(&secret[..]).as_str())
    );

    let mut stream = payer
        .subscribe_events(pb::SubscribeEventsRequest {
            after: streamed.last().expect("events").id,
        })
        .await
        .expect("resume")
        .into_inner();
    read_until(&mut stream, &mut streamed, "payment_sent", 3).await;

    // Pages: newest first, until the last page says so.
    for _ in 0..3 {
        payee
            .create_invoice(invoice_request(1_000))
            .await
            .expect("invoice");
    }
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = payee
            .list_payments(pb::ListPaymentsRequest {
                direction: pb::Direction::Inbound.into(),
                page_size: 2,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .expect("page")
            .into_inner();
        assert!(page.payments.len() <= 2);
        seen.extend(page.payments);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen.len(), 6, "three paid, three open");
    assert_eq!(seen[3].payment_hash, held_hash);
    assert_eq!(seen[4].payment_hash, second.payment_hash);
    assert_eq!(seen[5].payment_hash, invoice.payment_hash);
    let succeeded = payee
        .list_payments(pb::ListPaymentsRequest {
            status: pb::PaymentStatus::Succeeded.into(),
            ..Default::default()
        })
        .await
        .expect("succeeded")
        .into_inner();
    assert_eq!(succeeded.payments.len(), 3);

    // Keysend: no invoice; the payee learns the preimage from the onion.
    let keysent = payer
        .keysend(pb::KeysendRequest {
            node_id: pair.payee.id.to_string(),
            amount_msat: 1_000_000,
            wait: true,
            idempotency_key: "tip-1".into(),
            ..Default::default()
        })
        .await
        .expect("keysend")
        .into_inner();
    assert_eq!(
        keysent.status(),
        pb::PaymentStatus::Succeeded,
        "{keysent:?}"
    );
    let tipped = payment_becomes(
        &payee,
        &keysent.payment_hash,
        pb::Direction::Inbound,
        pb::PaymentStatus::Succeeded,
    )
    .await;
    assert_eq!(tipped.amount_msat, Some(1_000_000));
    assert_eq!(tipped.preimage, keysent.preimage);

    // On chain: to the node's own wallet it signs; elsewhere the signer's policy refuses
    // (no destination is allowed by default) and nothing leaves.
    let own = payer
        .new_address(pb::NewAddressRequest {})
        .await
        .expect("own address")
        .into_inner()
        .address;
    let sent = payer
        .onchain_send(pb::OnchainSendRequest {
            address: own,
            amount_sat: 10_000,
            ..Default::default()
        })
        .await
        .expect("send to self")
        .into_inner();
    assert_eq!(sent.txid.len(), 64);
    let elsewhere = payee
        .new_address(pb::NewAddressRequest {})
        .await
        .expect("payee address")
        .into_inner()
        .address;
    let refused = payer
        .onchain_send(pb::OnchainSendRequest {
            address: elsewhere,
            amount_sat: 10_000,
            ..Default::default()
        })
        .await
        .expect_err("not an allowed destination");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("destination_not_allowed"),
        "{refused:?}"
    );
    let signer = payer
        .get_signer_status(pb::GetSignerStatusRequest {})
        .await
        .expect("signer status")
        .into_inner();
    assert!(
        signer.attached && signer.requests_answered > 0,
        "{signer:?}"
    );
    let decoded = payer
        .decode_invoice(pb::DecodeInvoiceRequest {
            bolt11: invoice.bolt11.clone(),
        })
        .await
        .expect("decode")
        .into_inner();
    assert_eq!(decoded.payment_hash, invoice.payment_hash);
    assert_eq!(decoded.amount_msat, Some(PAYMENT_MSAT));
    assert_eq!(decoded.payee_node_id, pair.payee.id.to_string());
    assert_eq!(
        (decoded.network.as_str(), decoded.description.as_str()),
        ("regtest", "api")
    );

    // Events: the payer's own, in order, resumable from any id.
    let events = payer
        .list_events(pb::ListEventsRequest { after: 0, limit: 0 })
        .await
        .expect("events")
        .into_inner()
        .events;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    for kind in [
        "onchain_received",
        "channel_pending",
        "channel_ready",
        "payment_sent",
    ] {
        assert!(kinds.contains(&kind), "{kinds:?}");
    }
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(
        streamed,
        events[..streamed.len()].to_vec(),
        "the stream, across the resume, is the log: nothing missed, nothing twice"
    );
    let rest = payer
        .list_events(pb::ListEventsRequest {
            after: events[1].id,
            limit: 0,
        })
        .await
        .expect("rest")
        .into_inner()
        .events;
    assert_eq!(rest, events[2..].to_vec());

    // A cooperative close through the API.
    payer
        .close_channel(pb::CloseChannelRequest {
            channel_id: channel.channel_id.clone(),
            force: false,
        })
        .await
        .expect("close");
    assert!(
        mine_until(&pair.chain, 10, || pair.payer.channels().is_empty()).await,
        "the channel closes"
    );

    server.shutdown().await;
    pair.stop().await;
}

/// Reads `stream` into `seen` until it holds `count` events of `kind` (a minute at most).
async fn read_until(
    stream: &mut tonic::Streaming<pb::Event>,
    seen: &mut Vec<pb::Event>,
    kind: &str,
    count: usize,
) {
    while seen.iter().filter(|e| e.kind == kind).count() < count {
        let event = tokio::time::timeout(Duration::from_secs(60), stream.message())
            .await
            .unwrap_or_else(|_| panic!("no {kind} in a minute: {seen:?}"))
            .expect("stream")
            .expect("open");
        seen.push(event);
    }
}

/// `Err(code)` of a call, or the call's answer.
fn code<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match result {
        Ok(answer) => panic!("expected a refusal, got {answer:?}"),
        Err(status) => status.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_reaches_only_its_node_and_scopes_and_bad_input_is_named() {
    let pair = Pair::start(
        "node-api-auth",
        Arc::new(seed_signer(3)),
        Arc::new(seed_signer(4)),
    )
    .await;
    let (server, ca) = serve(&pair).await;
    let tokens = Tokens::new(pair.host.store().clone());
    let a_token = token(&pair, &pair.payer, ALL);
    let mut a = client(&server, &ca, &a_token).await;
    let mut b = client(&server, &ca, &token(&pair, &pair.payee, ALL)).await;

    // B's invoices, one of them a hold invoice; A names them.
    let b_invoice = b
        .create_invoice(invoice_request(5_000))
        .await
        .expect("invoice")
        .into_inner();
    let b_hold_hash = sha256::Hash::hash(&[7; 32]).to_string();
    b.create_invoice(pb::CreateInvoiceRequest {
        payment_hash: Some(b_hold_hash.clone()),
        ..invoice_request(5_000)
    })
    .await
    .expect("hold");
    let get = |hash: &str| pb::GetPaymentRequest {
        payment_hash: hash.to_owned(),
        direction: pb::Direction::Inbound.into(),
    };
    assert_eq!(
        code(a.get_payment(get(&b_invoice.payment_hash)).await),
        Code::NotFound
    );
    assert_eq!(
        code(
            a.cancel_held(pb::CancelHeldRequest {
                payment_hash: b_hold_hash.clone()
            })
            .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(
            a.settle_held(pb::SettleHeldRequest {
                preimage: bitcoin::hex::DisplayHex::to_lower_hex_string(&[7u8; 32][..])
            })
            .await
        ),
        Code::NotFound
    );
    let a_payments = a
        .list_payments(pb::ListPaymentsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(a_payments.payments.is_empty(), "{a_payments:?}");
    let b_events = pair
        .host
        .store()
        .events(&pair.payee.id.to_string(), 0, 100)
        .expect("events");
    let a_events = a
        .list_events(pb::ListEventsRequest::default())
        .await
        .expect("events")
        .into_inner()
        .events;
    assert!(a_events
        .iter()
        .all(|e| b_events.iter().all(|b| b.id != e.id as i64)));
    // B's hold invoice is still open: A's cancel touched nothing.
    assert_eq!(
        b.get_payment(get(&b_hold_hash))
            .await
            .expect("b's")
            .into_inner()
            .status(),
        pb::PaymentStatus::Pending
    );

    // Missing, malformed, forged, revoked: UNAUTHENTICATED.
    let url = format!("https://localhost:{}", server.local_addr().port());
    let endpoint = tonic::transport::Endpoint::from_shared(url.clone())
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&ca)),
        )
        .unwrap();
    let mut anonymous = pb::node_client::NodeClient::new(endpoint.connect().await.expect("tls"));
    assert_eq!(
        code(anonymous.get_node_info(pb::GetNodeInfoRequest {}).await),
        Code::Unauthenticated
    );
    let mut forged_token = a_token.clone();
    let last = forged_token.pop().unwrap();
    forged_token.push(if last == 'a' { 'b' } else { 'a' });
    for presented in ["not-a-token", forged_token.as_str()] {
        let mut c = client(&server, &ca, presented).await;
        assert_eq!(
            code(c.get_node_info(pb::GetNodeInfoRequest {}).await),
            Code::Unauthenticated,
            "{presented}"
        );
    }
    let revoked = token(&pair, &pair.payer, "read");
    let mut c = client(&server, &ca, &revoked).await;
    c.get_node_info(pb::GetNodeInfoRequest {})
        .await
        .expect("valid until revoked");
    let mut stream = c
        .subscribe_events(pb::SubscribeEventsRequest {
            after: u64::MAX >> 1,
        })
        .await
        .expect("subscribed")
        .into_inner();
    let id = revoked.split('_').nth(1).expect("id");
    assert!(tokens.revoke(id, 1).expect("revoke"));
    assert_eq!(
        code(c.get_node_info(pb::GetNodeInfoRequest {}).await),
        Code::Unauthenticated
    );
    // Its open stream ends at the node's next event, which it does not see.
    pair.host
        .store()
        .insert_event(&pair.payer.id.to_string(), "test", &serde_json::json!({}))
        .expect("event");
    let ended = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the stream ends");
    assert_eq!(ended.expect_err("refused").code(), Code::Unauthenticated);

    // A scope short: PERMISSION_DENIED, and nothing happens.
    let mut reader = client(&server, &ca, &token(&pair, &pair.payer, "read")).await;
    reader
        .get_balances(pb::GetBalancesRequest {})
        .await
        .expect("read is enough");
    assert_eq!(
        code(reader.create_invoice(invoice_request(1_000)).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            reader
                .pay_invoice(pb::PayInvoiceRequest {
                    bolt11: b_invoice.bolt11.clone(),
                    ..Default::default()
                })
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(reader.new_address(pb::NewAddressRequest {}).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            reader
                .open_channel(pb::OpenChannelRequest {
                    node_id: pair.payee.id.to_string(),
                    amount_sat: 100_000,
                    push_msat: 0,
                    ..Default::default()
                })
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            reader
                .connect_peer(pb::ConnectPeerRequest {
                    node_id: pair.payee.id.to_string(),
                    address: pair.payee.listen_addr().to_string()
                })
                .await
        ),
        Code::PermissionDenied
    );
    let mut receiver = client(&server, &ca, &token(&pair, &pair.payer, "receive")).await;
    receiver
        .create_invoice(invoice_request(1_000))
        .await
        .expect("receive may invoice");
    assert_eq!(
        code(
            receiver
                .pay_invoice(pb::PayInvoiceRequest {
                    bolt11: b_invoice.bolt11.clone(),
                    ..Default::default()
                })
                .await
        ),
        Code::PermissionDenied,
        "a key that can receive cannot send"
    );
    let (operator, _) = tokens
        .create(&Grant::Operator, None, None, 0)
        .expect("operator");
    let mut op = client(&server, &ca, &operator.to_string()).await;
    assert_eq!(
        code(op.get_node_info(pb::GetNodeInfoRequest {}).await),
        Code::PermissionDenied,
        "an operator token drives no node"
    );
    let outbound = |client: &mut NodeClient| {
        let mut client = client.clone();
        async move {
            client
                .list_payments(pb::ListPaymentsRequest {
                    direction: pb::Direction::Outbound.into(),
                    ..Default::default()
                })
                .await
                .expect("list")
                .into_inner()
                .payments
        }
    };
    assert!(outbound(&mut a).await.is_empty(), "no payment was made");

    // Bad input: INVALID_ARGUMENT naming the field, and nothing changes.
    let invalid = |result: Result<tonic::Response<_>, tonic::Status>, field: &str| match result {
        Ok(answer) => panic!("{field}: accepted {answer:?}"),
        Err(status) => {
            assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
            assert!(
                status.message().starts_with(field),
                "{field}: {}",
                status.message()
            );
        }
    };
    invalid(
        a.create_invoice(invoice_request(0))
            .await
            .map(|r| r.map(|_| ())),
        "amount_msat",
    );
    invalid(
        a.create_invoice(invoice_request(u64::MAX))
            .await
            .map(|r| r.map(|_| ())),
        "amount_msat",
    );
    invalid(
        a.create_invoice(pb::CreateInvoiceRequest {
            description: "x".repeat(700),
            ..invoice_request(1_000)
        })
        .await
        .map(|r| r.map(|_| ())),
        "description",
    );
    invalid(
        a.create_invoice(pb::CreateInvoiceRequest {
            payment_hash: Some("beef".into()),
            ..invoice_request(1_000)
        })
        .await
        .map(|r| r.map(|_| ())),
        "payment_hash",
    );
    invalid(
        a.pay_invoice(pb::PayInvoiceRequest {
            bolt11: "lnbcrt1garbage".into(),
            ..Default::default()
        })
        .await
        .map(|r| r.map(|_| ())),
        "bolt11",
    );
    let expiring = b
        .create_invoice(pb::CreateInvoiceRequest {
            expiry_secs: Some(1),
            ..invoice_request(1_000)
        })
        .await
        .expect("short invoice")
        .into_inner();
    tokio::time::sleep(Duration::from_secs(2)).await;
    invalid(
        a.pay_invoice(pb::PayInvoiceRequest {
            bolt11: expiring.bolt11,
            ..Default::default()
        })
        .await
        .map(|r| r.map(|_| ())),
        "bolt11: the invoice has expired",
    );
    invalid(
        a.open_channel(pb::OpenChannelRequest {
            node_id: pair.payee.id.to_string(),
            amount_sat: 1_000_000,
            push_msat: 0,
            ..Default::default()
        })
        .await
        .map(|r| r.map(|_| ())),
        "amount_sat",
    );
    invalid(
        a.connect_peer(pb::ConnectPeerRequest {
            node_id: "02".into(),
            address: "127.0.0.1:1".into(),
        })
        .await
        .map(|r| r.map(|_| ())),
        "node_id",
    );
    invalid(
        a.get_payment(pb::GetPaymentRequest {
            payment_hash: b_invoice.payment_hash.clone(),
            direction: pb::Direction::Unspecified.into(),
        })
        .await
        .map(|r| r.map(|_| ())),
        "direction",
    );
    assert_eq!(
        code(
            a.close_channel(pb::CloseChannelRequest {
                channel_id: "11".repeat(32),
                force: true
            })
            .await
        ),
        Code::NotFound
    );
    // An oversized request is refused before it is decoded.
    let oversized = a
        .create_invoice(pb::CreateInvoiceRequest {
            description: "x".repeat(100_000),
            ..invoice_request(1_000)
        })
        .await;
    assert_eq!(code(oversized), Code::OutOfRange);
    assert!(outbound(&mut a).await.is_empty(), "still no payment");
    assert!(pair.payer.channels().is_empty(), "and no channel");

    server.shutdown().await;
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_health_checks_and_reflection() {
    let pair = Pair::start(
        "node-api-health",
        Arc::new(seed_signer(5)),
        Arc::new(seed_signer(6)),
    )
    .await;
    let (server, ca) = serve(&pair).await;
    let channel = tonic::transport::Endpoint::from_shared(format!(
        "https://localhost:{}",
        server.local_addr().port()
    ))
    .unwrap()
    .tls_config(
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&ca)),
    )
    .unwrap()
    .connect()
    .await
    .expect("tls");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "flotilla.node.v1.Node".into(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(
        status.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("reflection")
        .into_inner();
    let answer = answers.message().await.expect("answer").expect("one");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("{answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"flotilla.node.v1.Node".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );

    server.shutdown().await;
    pair.stop().await;
}
