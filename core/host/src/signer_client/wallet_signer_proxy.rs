//! The on-chain wallet's signer on the host: the watch-only wallet builds PSBTs, and the
//! node's signer signs them (or refuses, under its policy).

use flotilla_proto::{Handover, Request, Response};

use super::link::{SignerLink, SYNC_DEADLINE};
use crate::wallet::{WalletError, WalletSigner};

/// The wallet's stand-in for the node's signer: PSBTs go to it over the node's link.
pub struct WalletSignerProxy {
    link: SignerLink,
    descriptors: (String, String),
}

impl WalletSignerProxy {
    pub fn new(link: SignerLink, handover: &Handover) -> Self {
        WalletSignerProxy {
            link,
            descriptors: handover.wallet_descriptors.clone(),
        }
    }
}

impl WalletSigner for WalletSignerProxy {
    fn descriptors(&self) -> Result<(String, String), WalletError> {
        Ok(self.descriptors.clone())
    }

    fn sign_psbt(&self, psbt: &mut bitcoin::Psbt) -> Result<(), WalletError> {
        let request = Request::SignPsbt { psbt: psbt.clone() };
        match self.link.call_blocking(request, SYNC_DEADLINE) {
            Ok(Response::Psbt(signed)) => {
                *psbt = signed;
                Ok(())
            }
            Ok(other) => Err(WalletError::Signing(format!("unexpected answer {other:?}"))),
            Err(e) => Err(WalletError::Signing(e.to_string())),
        }
    }
}
