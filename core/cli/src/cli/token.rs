//! `flotilla token create|list|revoke`: the node API's tokens, through the host's operator API
//! (the running host holds its database, so tokens are made where it is).

use clap::{Args, Subcommand};
use flotilla_client::op;
use serde_json::{json, Value};

use super::api::{ApiArgs, ApiCallError};

#[derive(Args)]
pub struct TokenArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a token for one node (printed once; the host keeps only its hash).
    Create {
        /// The node it drives (its id); omit with `--scope admin` for an operator token.
        #[arg(long)]
        node: Option<String>,
        /// Comma-separated: read, receive, send, channels, peers (or admin).
        #[arg(long = "scope", value_name = "SCOPES")]
        scopes: String,
        /// Valid for this many seconds (default: until revoked).
        #[arg(long, value_name = "SECS")]
        expires: Option<u64>,
        /// A note for whoever lists tokens later.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List a node's tokens (or, without --node, the operator's), without their secrets.
    List {
        #[arg(long)]
        node: Option<String>,
    },
    /// Revoke a token by its id (the part after `flt_`, before the next `_`).
    Revoke { id: String },
}

fn info(t: &op::TokenInfo) -> Value {
    json!({
        "id": t.id,
        "node_id": t.node_id,
        "scopes": t.scopes,
        "label": t.label,
        "created_at": t.created_at,
        "expires_at": t.expires_at,
        "revoked_at": t.revoked_at,
    })
}

pub async fn run(args: TokenArgs) -> Result<(), ApiCallError> {
    let mut operator = args.api.operator().await?;
    let answer = match args.command {
        TokenCommand::Create {
            node,
            scopes,
            expires,
            label,
        } => {
            let made = operator
                .create_token(op::CreateTokenRequest {
                    node_id: node.unwrap_or_default(),
                    scopes,
                    label,
                    expires_in_secs: expires,
                })
                .await?
                .into_inner();
            let mut answer = made.info.as_ref().map(info).unwrap_or_else(|| json!({}));
            answer["token"] = json!(made.token);
            answer
        }
        TokenCommand::List { node } => {
            let tokens = operator
                .list_tokens(op::ListTokensRequest {
                    node_id: node.unwrap_or_default(),
                })
                .await?
                .into_inner()
                .tokens;
            Value::Array(tokens.iter().map(info).collect())
        }
        TokenCommand::Revoke { id } => {
            operator
                .revoke_token(op::RevokeTokenRequest { id: id.clone() })
                .await?;
            json!({ "revoked": id })
        }
    };
    args.api.show(&answer);
    Ok(())
}
