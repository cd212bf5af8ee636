//! What every command that calls the host's API shares: where the API is, which CA to trust,
//! which token to present (flags, or FLOTILLA_HOST, FLOTILLA_CA, FLOTILLA_TOKEN), and how an
//! answer is shown: readable lines by default, one JSON value with `--json`.

use std::path::PathBuf;

use clap::Args;
use flotilla_client::{NodeClient, OperatorClient};
use serde_json::Value;

#[derive(Args, Clone)]
pub struct ApiArgs {
    /// The host's API, e.g. https://127.0.0.1:7002.
    #[arg(long = "host", env = "FLOTILLA_HOST", value_name = "URL")]
    pub url: String,
    /// The CA certificate the API's certificate is checked against.
    #[arg(long, env = "FLOTILLA_CA", value_name = "FILE")]
    pub ca: PathBuf,
    /// The token (a node's for `flotilla node`, the operator's for `flotilla token`).
    #[arg(
        long,
        env = "FLOTILLA_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: String,
    /// Print the answer as JSON, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Why a command against the API failed: the gRPC status is shown as the host gave it.
#[derive(Debug, thiserror::Error)]
pub enum ApiCallError {
    #[error("{}: {source}", path.display())]
    Ca {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Client(#[from] flotilla_client::ClientError),
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(#[from] tonic::Status),
    #[error("{0}")]
    Input(String),
}

fn code_name(code: tonic::Code) -> String {
    format!("{code:?}")
}

impl ApiArgs {
    fn ca_pem(&self) -> Result<Vec<u8>, ApiCallError> {
        std::fs::read(&self.ca).map_err(|source| ApiCallError::Ca {
            path: self.ca.clone(),
            source,
        })
    }

    pub async fn node(&self) -> Result<NodeClient, ApiCallError> {
        Ok(flotilla_client::connect(&self.url, &self.ca_pem()?, &self.token).await?)
    }

    pub async fn operator(&self) -> Result<OperatorClient, ApiCallError> {
        Ok(flotilla_client::connect_operator(&self.url, &self.ca_pem()?, &self.token).await?)
    }

    /// Prints `answer`: as JSON with `--json`, else one `key: value` line per field.
    pub fn show(&self, answer: &Value) {
        if self.json {
            println!("{answer}");
        } else {
            print_readable(answer, 0);
        }
    }
}

fn print_readable(value: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(fields) => {
            for (key, value) in fields {
                match value {
                    Value::Object(_) | Value::Array(_) => {
                        println!("{pad}{key}:");
                        print_readable(value, indent + 2);
                    }
                    Value::Null => {}
                    Value::String(s) => println!("{pad}{key}: {s}"),
                    other => println!("{pad}{key}: {other}"),
                }
            }
        }
        Value::Array(items) if items.is_empty() => println!("{pad}(none)"),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print_readable(item, indent);
            }
        }
        Value::String(s) => println!("{pad}{s}"),
        other => println!("{pad}{other}"),
    }
}
