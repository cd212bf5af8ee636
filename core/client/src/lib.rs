//! A client of the Flotilla node API: one hosted node, driven over gRPC/TLS with a token the
//! host's operator issued for it. The token names the node and what the client may do.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let ca = std::fs::read("tls/signer-ca.pem")?;
//! let mut node = flotilla_client::connect("https://127.0.0.1:7002", &ca, "flt_...").await?;
//! let info = node.get_node_info(flotilla_client::pb::GetNodeInfoRequest {}).await?;
//! println!("{}", info.into_inner().node_id);
//! # Ok(()) }
//! ```

mod bearer;

pub use bearer::Bearer;
/// The node API's messages and generated client.
pub use flotilla_proto::node as pb;
/// The operator API's messages and generated client.
pub use flotilla_proto::operator as op;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// A connected client of one node.
pub type NodeClient = pb::node_client::NodeClient<InterceptedService<Channel, Bearer>>;

/// A connected client of the host's operator API.
pub type OperatorClient = op::operator_client::OperatorClient<InterceptedService<Channel, Bearer>>;

/// Why a client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("not an API address: {0}")]
    Url(String),
    #[error("the token cannot be sent as a header")]
    Token,
    #[error("cannot reach the node API: {0}")]
    Connect(#[from] tonic::transport::Error),
}

/// Connects to the node API at `url` (`https://host:port`), trusting the CA certificate
/// `ca_pem`, presenting `token` (a node token) on every call.
pub async fn connect(url: &str, ca_pem: &[u8], token: &str) -> Result<NodeClient, ClientError> {
    let bearer = Bearer::new(token)?;
    Ok(pb::node_client::NodeClient::with_interceptor(
        channel(url, ca_pem).await?,
        bearer,
    ))
}

/// Connects to the operator API at `url` with the operator's `token`; as [`connect`].
pub async fn connect_operator(
    url: &str,
    ca_pem: &[u8],
    token: &str,
) -> Result<OperatorClient, ClientError> {
    let bearer = Bearer::new(token)?;
    Ok(op::operator_client::OperatorClient::with_interceptor(
        channel(url, ca_pem).await?,
        bearer,
    ))
}

/// A TLS connection to the host's API that trusts `ca_pem` alone.
async fn channel(url: &str, ca_pem: &[u8]) -> Result<Channel, ClientError> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|_| ClientError::Url(url.to_owned()))?
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)))?;
    Ok(endpoint.connect().await?)
}
