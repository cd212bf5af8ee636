//! Serving the host's API: the node API and the operator API, gRPC over TLS on one port for
//! every node of the host, with gRPC reflection (so `grpcurl` needs no .proto) and the
//! standard health service.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_proto::node::node_server::NodeServer;
use flotilla_proto::operator::operator_server::OperatorServer;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};

use super::auth::Gate;
use super::node_service::NodeService;
use super::operator_service::OperatorService;
use super::tokens::Tokens;
use crate::host::Host;
use crate::signer_client::hub::SignerHub;
use crate::signer_client::tls::HubTls;

/// Largest request a client may send: every call's request is small (an invoice is at most
/// a few kilobytes), so anything larger is refused before it is decoded.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// A TLS handshake that takes longer than this is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the API's TLS: {0}")]
    Tls(#[source] tonic::transport::Error),
    #[error("cannot set up gRPC reflection: {0}")]
    Reflection(String),
}

/// The node API of one host, listening.
pub struct ApiServer {
    local_addr: SocketAddr,
    /// Ends the event streams, which would otherwise keep the server from stopping.
    streams: watch::Sender<bool>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    server: Mutex<Option<JoinHandle<Result<(), tonic::transport::Error>>>>,
}

impl ApiServer {
    /// Listens on `listen` with the certificate of `tls`, serving `host`'s nodes to the
    /// holders of its tokens, and the host to its operator. Nodes the operator adds find
    /// their signers on `hub` (without one, the operator adds none).
    pub async fn start(
        listen: SocketAddr,
        tls: &HubTls,
        host: Arc<Host>,
        hub: Option<Arc<SignerHub>>,
    ) -> Result<ApiServer, ApiError> {
        let bind = |source| ApiError::Bind {
            addr: listen,
            source,
        };
        let listener = TcpListener::bind(listen).await.map_err(bind)?;
        let local_addr = listener.local_addr().map_err(bind)?;
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let gate = Gate {
            tokens: Tokens::new(host.store().clone()),
            host,
        };
        let (streams, stop_streams) = watch::channel(false);
        let node = NodeServer::new(NodeService {
            gate: gate.clone(),
            idempotency: Default::default(),
            stop: stop_streams,
        })
        .max_decoding_message_size(MAX_REQUEST_BYTES);
        let operator = OperatorServer::new(OperatorService {
            gate,
            hub,
            starting: Default::default(),
        })
        .max_decoding_message_size(MAX_REQUEST_BYTES);
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(flotilla_proto::API_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| ApiError::Reflection(e.to_string()))?;
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<NodeServer<NodeService>>().await;
        let router = Server::builder()
            .tls_config(
                ServerTlsConfig::new()
                    .identity(tls.identity())
                    .timeout(TLS_HANDSHAKE_TIMEOUT),
            )
            .map_err(ApiError::Tls)?
            .add_service(node)
            .add_service(operator)
            .add_service(reflection)
            .add_service(health_service);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
            let _ = stop_rx.await;
        }));
        tracing::info!(%local_addr, "node API listening");
        Ok(ApiServer {
            local_addr,
            streams,
            stop: Mutex::new(Some(stop_tx)),
            server: Mutex::new(Some(server)),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops taking calls and waits for the server to end.
    pub async fn shutdown(&self) {
        self.streams.send_replace(true);
        if let Some(stop) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = stop.send(());
        }
        let server = self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(server) = server {
            if let Ok(Err(e)) = server.await {
                tracing::warn!(error = %e, "node API server ended with an error");
            }
        }
    }
}
