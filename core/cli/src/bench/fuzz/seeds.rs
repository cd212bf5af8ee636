//! Valid inputs for each target, built from the protocol's own encoders and sample values.

use bitcoin::consensus::encode::serialize_hex;
use bitcoin::Network;
use flotilla_proto::samples::*;
use flotilla_proto::wire::proto::{self, hub_message, signer_message};
use flotilla_proto::wire::{encode_handover, encode_request, encode_response};
use prost::Message as _;

/// Every request kind, as the hub sends it, and the handshake's messages.
pub(super) fn requests() -> Vec<Vec<u8>> {
    let hub = |msg| proto::HubMessage { msg: Some(msg) }.encode_to_vec();
    let mut seeds: Vec<Vec<u8>> = every_request()
        .iter()
        .enumerate()
        .map(|(i, r)| {
            hub(hub_message::Msg::Request(encode_request(
                i as u64 * 1_000_003,
                r,
            )))
        })
        .collect();
    seeds.push(hub(hub_message::Msg::Challenge(proto::Challenge {
        nonce: vec![7; 32],
    })));
    seeds.push(hub(hub_message::Msg::Accepted(proto::Accepted {})));
    seeds
}

/// Every answer kind and error, as a signer sends them, and the handshake's messages.
pub(super) fn signer_messages() -> Vec<Vec<u8>> {
    let signer = |msg| proto::SignerMessage { msg: Some(msg) }.encode_to_vec();
    let mut seeds: Vec<Vec<u8>> = every_result()
        .iter()
        .enumerate()
        .map(|(i, r)| signer(signer_message::Msg::Response(encode_response(i as u64, r))))
        .collect();
    seeds.push(signer(signer_message::Msg::Hello(proto::Hello {
        node_id: point(60).serialize().to_vec(),
    })));
    seeds.push(signer(signer_message::Msg::Proof(proto::Proof {
        signature: sig(61).serialize_compact().to_vec(),
        handover: Some(encode_handover(&handover())),
        ..Default::default()
    })));
    seeds
}

pub(super) fn chain_replies() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for (status, body) in rpc_bodies() {
        seeds.push(close_delimited(status, &body));
        seeds.push(sized(status, &body));
        seeds.push(chunked(status, &body));
    }
    seeds.extend(http_failures());
    seeds
}

/// Bodies of the calls the host makes, and RPC errors (bitcoind sends those with 500).
fn rpc_bodies() -> Vec<(&'static str, String)> {
    let block = bitcoin::constants::genesis_block(Network::Regtest);
    let hash = block.block_hash();
    let header = block.header;
    let reply = |id: u32, result: String| {
        (
            "200 OK",
            format!(r#"{{"result":{result},"error":null,"id":{id}}}"#),
        )
    };
    vec![
        reply(
            1,
            format!(
                r#"{{"chain":"regtest","blocks":101,"headers":101,"bestblockhash":"{hash}","difficulty":4.656542373906925e-10,"mediantime":1700000000,"verificationprogress":1,"initialblockdownload":false,"chainwork":"00000000000000000000000000000000000000000000000000000000000000cc","size_on_disk":30000,"pruned":false,"warnings":""}}"#
            ),
        ),
        reply(2, format!(r#""{hash}""#)),
        reply(
            3,
            format!(
                r#"{{"hash":"{hash}","confirmations":102,"height":0,"version":{},"versionHex":"00000001","merkleroot":"{}","time":{},"mediantime":{},"nonce":{},"bits":"{:08x}","difficulty":4.656542373906925e-10,"chainwork":"0000000000000000000000000000000000000000000000000000000000000002","nTx":1,"nextblockhash":"{hash}"}}"#,
                header.version.to_consensus(),
                header.merkle_root,
                header.time,
                header.time,
                header.nonce,
                header.bits.to_consensus(),
            ),
        ),
        reply(4, format!(r#""{}""#, serialize_hex(&block))),
        reply(5, r#"{"feerate":0.00012,"blocks":2}"#.into()),
        reply(
            6,
            r#"{"errors":["Insufficient data or no feerate found"],"blocks":0}"#.into(),
        ),
        reply(7, "-1".into()),
        reply(8, "101".into()),
        reply(9, "null".into()),
        reply(10, format!(r#""{}""#, tx().compute_txid())),
        (
            "500 Internal Server Error",
            r#"{"result":null,"error":{"code":-5,"message":"Block not found"},"id":11}"#.into(),
        ),
        (
            "500 Internal Server Error",
            r#"{"result":null,"error":{"code":-32601,"message":"Method not found"},"id":12}"#
                .into(),
        ),
    ]
}

fn close_delimited(status: &str, body: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n{body}\n").into_bytes()
}

fn sized(status: &str, body: &str) -> Vec<u8> {
    let body = format!("{body}\n");
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The body in three chunks (the second with an extension), then the last chunk.
fn chunked(status: &str, body: &str) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\nTransfer-Encoding: chunked\r\n\r\n").into_bytes();
    let bytes = body.as_bytes();
    let (a, b) = (bytes.len() / 3, 2 * bytes.len() / 3);
    for (i, chunk) in [&bytes[..a], &bytes[a..b], &bytes[b..]]
        .into_iter()
        .enumerate()
    {
        let extension = if i == 1 { ";name=value" } else { "" };
        out.extend(format!("{:x}{extension}\r\n", chunk.len()).into_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Replies that fail at the HTTP level: bad credentials, an overloaded bitcoind.
pub(super) fn http_failures() -> Vec<Vec<u8>> {
    vec![
        b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"jsonrpc\"\r\nContent-Length: 0\r\n\r\n".to_vec(),
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 25\r\n\r\nWork queue depth exceeded".to_vec(),
    ]
}

/// Pieces of HTTP and JSON worth inserting: framing, numbers at the edges, escapes.
pub(super) const HTTP_TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\r\n\r\n",
    b"HTTP/1.1 200 OK",
    b"Content-Length: ",
    b"Content-Length: 0",
    b"Transfer-Encoding: chunked",
    b"0\r\n\r\n",
    b"ffffffffffffffff\r\n",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"1e999",
    b"-0.0",
    b";",
    b":",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b"\\u0000",
    b"\\ud800",
    b"\xf0\x9f\x98",
    b"null",
    b"true",
    b"\"result\":",
    b"\"error\":",
    b"{\"code\":-1,\"message\":\"x\"}",
    b" 401 ",
    b" 500 ",
];
