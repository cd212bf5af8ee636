//! How the host's errors reach an API client: a gRPC status whose code says what the client
//! can do about it and whose message names the field or the reason.

use flotilla_proto::SignerError;
use tonic::Status;

use crate::error::HostError;
use crate::wallet::WalletError;

impl From<HostError> for Status {
    fn from(e: HostError) -> Status {
        let message = e.to_string();
        match e {
            HostError::InvalidInput(m) => Status::invalid_argument(m),
            HostError::Wallet(WalletError::InvalidInput(m)) => Status::invalid_argument(m),
            HostError::Wallet(WalletError::InsufficientFunds { .. })
            | HostError::Wallet(WalletError::Signing(_))
            | HostError::Lightning(_)
            | HostError::PaymentFailed(_)
            | HostError::Signer(SignerError::Refused(_)) => Status::failed_precondition(message),
            HostError::NotFound(m) => Status::not_found(m),
            HostError::UnknownNode(_) => Status::not_found(message),
            HostError::AlreadyRunning(_) => Status::already_exists(message),
            HostError::PeerUnreachable { .. }
            | HostError::Halted { .. }
            | HostError::SignerNeverAttached(_)
            | HostError::NoChainTip
            | HostError::Signer(SignerError::Unavailable) => Status::unavailable(message),
            HostError::Timeout(_) | HostError::Signer(SignerError::Timeout) => {
                Status::deadline_exceeded(message)
            }
            other => {
                tracing::error!(error = %other, "node API call failed inside the host");
                Status::internal(message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn a_client_learns_what_it_can_do_about_an_error() {
        let code = |e: HostError| Status::from(e).code();
        assert_eq!(
            code(HostError::InvalidInput("amount_msat: zero".into())),
            Code::InvalidArgument
        );
        assert_eq!(
            code(HostError::Signer(SignerError::Refused("limit".into()))),
            Code::FailedPrecondition
        );
        assert_eq!(
            code(HostError::Signer(SignerError::Unavailable)),
            Code::Unavailable
        );
        assert_eq!(
            code(HostError::Timeout("payment".into())),
            Code::DeadlineExceeded
        );
        assert_eq!(code(HostError::NotFound("invoice".into())), Code::NotFound);
        assert_eq!(code(HostError::Corrupt("row".into())), Code::Internal);
        let status = Status::from(HostError::InvalidInput("invoice: bad checksum".into()));
        assert_eq!(status.message(), "invoice: bad checksum");
    }
}
