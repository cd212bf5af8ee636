//! Errors of the on-chain wallet.

use bitcoin::Amount;

/// Everything that can go wrong in the on-chain wallet or its signer.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    /// The spendable coins (confirmed or our own unconfirmed change, minus coins already reserved
    /// by a transaction built but not yet broadcast) do not cover amount plus fee.
    #[error("insufficient funds: {needed} needed, {available} available")]
    InsufficientFunds { needed: Amount, available: Amount },
    /// A descriptor is malformed, holds private keys where public ones are required, or does not
    /// match the wallet stored for this node.
    #[error("descriptor: {0}")]
    Descriptor(String),
    /// The signer could not (or would not) sign every input that belongs to the wallet.
    #[error("signing: {0}")]
    Signing(String),
    /// The key-value store failed to read, write or remove wallet data.
    #[error("persistence: {0}")]
    Persist(#[from] std::io::Error),
    /// Stored wallet data could not be decoded or does not form a loadable wallet.
    #[error("stored wallet data is corrupt: {0}")]
    Corrupt(String),
    /// A block or birthday does not fit the wallet's chain (gap, wrong network, bad reorg).
    #[error("chain: {0}")]
    Chain(String),
    /// The caller's request is invalid (zero or dust amount, address of another network, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The transaction could not be built for a reason other than funds.
    #[error("building transaction: {0}")]
    Build(String),
    /// A thread panicked while holding the wallet lock; the in-memory state is not trusted.
    #[error("wallet lock poisoned by a panic")]
    Poisoned,
}

/// LDK's key-value stores report `bitcoin::io` errors.
impl From<bitcoin::io::Error> for WalletError {
    fn from(e: bitcoin::io::Error) -> Self {
        WalletError::Persist(e.into())
    }
}
