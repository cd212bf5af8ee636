//! The operator's side of the API against a real `flotilla host` process on btcd, with a real
//! `flotilla signer` process: nodes added and removed at run time (and added ones started again
//! after a restart), tokens made with `flotilla token create` and used with `flotilla node`,
//! each refused beyond its scope, its node, or its life.

use std::path::Path;
use std::time::Duration;

use flotilla_client::{op, pb, OperatorClient};
use flotilla_tests::{flotilla_bin, free_port, fresh_chain, node_id_of, write_seed};
use flotilla_tests::{HostProcess, SignerProcess};
use serde_json::{json, Value};
use tonic::Code;

async fn operator(host: &HostProcess) -> OperatorClient {
    let token = std::fs::read_to_string(&host.operator_token_file).expect("operator token file");
    let ca = std::fs::read(&host.ca_file).expect("ca");
    flotilla_client::connect_operator(&host.api_url, &ca, token.trim())
        .await
        .expect("operator client")
}

/// Runs `flotilla <args> --json` against `host` with `token`: its JSON answer, or its stderr.
async fn cli(host: &HostProcess, token: &str, args: &[&str]) -> Result<Value, String> {
    let out = tokio::process::Command::new(flotilla_bin())
        .args(args)
        .arg("--json")
        .env("FLOTILLA_HOST", &host.api_url)
        .env("FLOTILLA_CA", &host.ca_file)
        .env("FLOTILLA_TOKEN", token)
        .output()
        .await
        .expect("run flotilla");
    if out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim()).map_err(|e| format!("{text}: {e}"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Waits until the operator lists `node_id` with `status`.
async fn node_becomes(operator: &mut OperatorClient, node_id: &str, status: &str) {
    for _ in 0..600 {
        let nodes = operator
            .list_nodes(op::ListNodesRequest {})
            .await
            .expect("list")
            .into_inner()
            .nodes;
        if nodes
            .iter()
            .any(|n| n.node_id == node_id && n.status == status)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{node_id} never became {status}");
}

async fn add(operator: &mut OperatorClient, alias: &str, seed: &Path) -> String {
    let id = node_id_of(seed);
    let added = operator
        .add_node(op::AddNodeRequest {
            alias: alias.into(),
            node_id: id.clone(),
        })
        .await
        .expect("add")
        .into_inner();
    assert_eq!(
        (added.node_id.as_str(), added.status.as_str()),
        (id.as_str(), "starting")
    );
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_adds_nodes_and_hands_out_tokens_the_cli_uses() {
    let (dir, _chain, chain_json) = fresh_chain("operator-api").await;
    let port = free_port();
    let (alice, bob) = (write_seed(&dir, "alice"), write_seed(&dir, "bob"));
    let mut host = HostProcess::start(&dir, "h", &chain_json, port, &[])
        .await
        .expect("host");
    host.ready().await.expect("no nodes to wait for");
    let mut op = operator(&host).await;

    // Nodes added at run time start once their signer attaches.
    let alice_id = add(&mut op, "alice", &alice).await;
    let bob_id = add(&mut op, "bob", &bob).await;
    let status = op
        .add_node(op::AddNodeRequest {
            alias: "again".into(),
            node_id: alice_id.clone(),
        })
        .await
        .expect_err("twice");
    assert_eq!(status.code(), Code::AlreadyExists);
    let mut signer =
        SignerProcess::start(&dir, "s", &host, &[&alice, &bob], json!({})).expect("signer");
    node_becomes(&mut op, &alice_id, "running").await;
    node_becomes(&mut op, &bob_id, "running").await;

    // The operator's CLI makes a token; the node's CLI uses it.
    let operator_token = std::fs::read_to_string(&host.operator_token_file).unwrap();
    let made = cli(
        &host,
        operator_token.trim(),
        &[
            "token",
            "create",
            "--node",
            &alice_id,
            "--scope",
            "read,receive",
            "--label",
            "shop",
        ],
    )
    .await
    .expect("token create");
    let alice_token = made["token"].as_str().expect("token").to_owned();
    assert_eq!(made["scopes"], "read,receive");
    let info = cli(&host, &alice_token, &["node", "info"])
        .await
        .expect("info");
    assert_eq!(info["node_id"], alice_id.as_str());
    assert_eq!(info["alias"], "alice");
    let invoice = cli(&host, &alice_token, &["node", "invoice", "--msat", "5000"])
        .await
        .expect("invoice");
    assert!(invoice["bolt11"].as_str().unwrap().starts_with("lnbcrt"));
    let refused = cli(
        &host,
        &alice_token,
        &["node", "pay", invoice["bolt11"].as_str().unwrap()],
    )
    .await
    .expect_err("no send scope");
    assert!(refused.contains("PermissionDenied"), "{refused}");
    let listed = cli(
        &host,
        operator_token.trim(),
        &["token", "list", "--node", &alice_id],
    )
    .await
    .expect("list");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert!(
        !listed
            .to_string()
            .contains(alice_token.split('_').nth(2).unwrap()),
        "no secret is listed"
    );

    // A node token is no operator token, and an operator token drives no node.
    let denied = cli(&host, &alice_token, &["token", "list"])
        .await
        .expect_err("not operator");
    assert!(denied.contains("PermissionDenied"), "{denied}");
    let denied = cli(&host, operator_token.trim(), &["node", "info"])
        .await
        .expect_err("drives no node");
    assert!(denied.contains("PermissionDenied"), "{denied}");

    // Revoked: refused at the next call.
    let id = made["id"].as_str().unwrap();
    cli(&host, operator_token.trim(), &["token", "revoke", id])
        .await
        .expect("revoke");
    let refused = cli(&host, &alice_token, &["node", "info"])
        .await
        .expect_err("revoked");
    assert!(refused.contains("Unauthenticated"), "{refused}");

    // Bob removed: stopped, and his token reaches nothing.
    let bob_token = op
        .create_token(op::CreateTokenRequest {
            node_id: bob_id.clone(),
            scopes: "read".into(),
            ..Default::default()
        })
        .await
        .expect("bob's token")
        .into_inner()
        .token;
    op.remove_node(op::RemoveNodeRequest {
        node_id: bob_id.clone(),
    })
    .await
    .expect("remove");
    node_becomes(&mut op, &bob_id, "stopped").await;
    let ca = std::fs::read(&host.ca_file).unwrap();
    let mut bob_client = flotilla_client::connect(&host.api_url, &ca, &bob_token)
        .await
        .expect("connect");
    let status = bob_client
        .get_node_info(pb::GetNodeInfoRequest {})
        .await
        .expect_err("bob is stopped");
    assert_eq!(status.code(), Code::Unavailable);

    // After a restart, alice (added at run time) runs again; bob (removed) does not.
    host.stop().await;
    let mut host = HostProcess::start(&dir, "h", &chain_json, port, &[])
        .await
        .expect("host again");
    host.ready().await.expect("alice starts again");
    assert!(!host.node_id("alice").is_empty(), "{}", host.nodes);
    assert!(host.node_id("bob").is_empty(), "{}", host.nodes);
    let mut op = operator(&host).await;
    node_becomes(&mut op, &alice_id, "running").await;
    node_becomes(&mut op, &bob_id, "stopped").await;

    host.stop().await;
    signer.kill9().await;
    let _ = std::fs::remove_dir_all(&dir);
}
