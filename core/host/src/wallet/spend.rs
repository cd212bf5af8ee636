//! Building, signing and recording the wallet's own transactions.

use std::time::{SystemTime, UNIX_EPOCH};

use bdk_wallet::error::CreateTxError;
use bdk_wallet::SignOptions;
use bitcoin::{Address, Amount, FeeRate, OutPoint, Psbt, Script, ScriptBuf, Transaction};

use super::{OnchainWallet, WalletError};

impl OnchainWallet {
    /// Builds, unsigned, a transaction paying exactly `amount` to the P2WSH of `witness_script`
    /// (LDK channel funding: the 2-of-2 of both funding keys), change to the wallet. The PSBT
    /// names the witness script, so the signer can tell the output is a channel it approved.
    /// It is signed later ([`sign_built`](Self::sign_built)): the signer signs a channel's
    /// funding only once the peer signed the node's first commitment.
    ///
    /// The transaction's inputs are reserved (not chosen again) until it is passed to
    /// [`transaction_broadcast`](Self::transaction_broadcast) or
    /// [`release_reservation`](Self::release_reservation), or the process restarts.
    pub fn build_funding_psbt(
        &self,
        witness_script: &Script,
        amount: Amount,
        feerate: FeeRate,
    ) -> Result<Psbt, WalletError> {
        self.build_psbt(
            witness_script.to_p2wsh(),
            Some(witness_script),
            amount,
            feerate,
        )
    }

    /// Has the signer sign a PSBT this wallet built and finalizes it. On failure its inputs
    /// stay reserved: the caller releases them if it gives the transaction up.
    pub fn sign_built(&self, mut psbt: Psbt) -> Result<Transaction, WalletError> {
        self.sign_and_finalize(&mut psbt)
    }

    /// Reserves the inputs of a transaction built before a restart and still to be signed.
    pub fn reserve_inputs(&self, tx: &Transaction) -> Result<(), WalletError> {
        let mut inner = self.lock()?;
        for input in &tx.input {
            inner.reserved.insert(input.previous_output);
        }
        Ok(())
    }

    /// Builds and signs a transaction paying `amount` to `to`, change to the wallet. Inputs are
    /// reserved as for [`build_funding_tx`](Self::build_funding_tx).
    pub fn build_send(
        &self,
        to: &Address,
        amount: Amount,
        feerate: FeeRate,
    ) -> Result<Transaction, WalletError> {
        if !to.as_unchecked().is_valid_for_network(self.network) {
            return Err(WalletError::InvalidInput(format!(
                "address {to} is not for {}",
                self.network
            )));
        }
        self.build_signed(to.script_pubkey(), amount, feerate)
    }

    /// Tells the wallet about a transaction it made/received before it confirms (unconfirmed
    /// balance, no double spend of its inputs). Transactions unrelated to the wallet are ignored,
    /// so the host may pass every transaction the node broadcasts.
    pub fn transaction_broadcast(&self, tx: &Transaction) -> Result<(), WalletError> {
        let seen_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut inner = self.lock()?;
        inner.wallet.apply_unconfirmed_txs([(tx.clone(), seen_at)]);
        for input in &tx.input {
            inner.reserved.remove(&input.previous_output);
        }
        inner.persist()
    }

    /// Frees the inputs of a built transaction that will never be broadcast (e.g. a channel open
    /// that failed before funding).
    pub fn release_reservation(&self, tx: &Transaction) -> Result<(), WalletError> {
        let mut inner = self.lock()?;
        for input in &tx.input {
            inner.reserved.remove(&input.previous_output);
        }
        Ok(())
    }

    fn build_signed(
        &self,
        script: ScriptBuf,
        amount: Amount,
        feerate: FeeRate,
    ) -> Result<Transaction, WalletError> {
        let mut psbt = self.build_psbt(script.clone(), None, amount, feerate)?;
        let result = self.sign_and_finalize(&mut psbt).and_then(|tx| {
            if tx
                .output
                .iter()
                .any(|o| o.script_pubkey == script && o.value == amount)
            {
                Ok(tx)
            } else {
                Err(WalletError::Build(
                    "built transaction lacks the requested output".into(),
                ))
            }
        });
        if result.is_err() {
            self.release_reservation(&psbt.unsigned_tx)?;
        }
        result
    }

    /// Builds a PSBT paying `amount` to `script` (naming `witness_script` for it), change to
    /// the wallet, and reserves its inputs.
    fn build_psbt(
        &self,
        script: ScriptBuf,
        witness_script: Option<&Script>,
        amount: Amount,
        feerate: FeeRate,
    ) -> Result<Psbt, WalletError> {
        if amount == Amount::ZERO {
            return Err(WalletError::InvalidInput("amount is zero".into()));
        }
        if feerate < FeeRate::BROADCAST_MIN {
            return Err(WalletError::InvalidInput(format!(
                "fee rate {} sat/kwu is below the relay minimum",
                feerate.to_sat_per_kwu()
            )));
        }
        // Built and reserved under the lock; signed later without it: a remote signer may be
        // slow and the chain observer must not wait on it.
        let mut inner = self.lock()?;
        let inner = &mut *inner;
        let wallet = &inner.wallet;
        // Reservations of coins that are gone (spent or reorged away) are dropped.
        inner.reserved.retain(|op| wallet.get_utxo(*op).is_some());
        let unspendable: Vec<OutPoint> = inner.reserved.iter().copied().collect();
        let mut builder = inner.wallet.build_tx();
        builder
            .add_recipient(script.clone(), amount)
            .fee_rate(feerate)
            .unspendable(unspendable);
        let mut psbt = builder.finish().map_err(create_error)?;
        for (txout, output) in psbt.unsigned_tx.output.iter().zip(&mut psbt.outputs) {
            if txout.script_pubkey == script {
                output.witness_script = witness_script.map(Script::to_owned);
            }
        }
        // The change address revealed by the builder is durable before the tx can exist.
        inner.persist()?;
        for input in &psbt.unsigned_tx.input {
            inner.reserved.insert(input.previous_output);
        }
        Ok(psbt)
    }

    fn sign_and_finalize(&self, psbt: &mut bitcoin::Psbt) -> Result<Transaction, WalletError> {
        let unsigned = psbt.unsigned_tx.clone();
        self.signer.sign_psbt(psbt)?;
        if psbt.unsigned_tx != unsigned {
            return Err(WalletError::Signing(
                "signer altered the transaction it was asked to sign".into(),
            ));
        }
        let finalized = self
            .lock()?
            .wallet
            .finalize_psbt(psbt, SignOptions::default())
            .map_err(|e| WalletError::Signing(e.to_string()))?;
        if !finalized {
            return Err(WalletError::Signing(
                "signer left inputs of the wallet unsigned".into(),
            ));
        }
        psbt.clone()
            .extract_tx()
            .map_err(|e| WalletError::Build(e.to_string()))
    }
}

fn create_error(e: CreateTxError) -> WalletError {
    match e {
        CreateTxError::CoinSelection(e) => WalletError::InsufficientFunds {
            needed: e.needed,
            available: e.available,
        },
        CreateTxError::OutputBelowDustLimit(_) => {
            WalletError::InvalidInput("amount is below the dust limit".into())
        }
        CreateTxError::Descriptor(e) => WalletError::Descriptor(e.to_string()),
        other => WalletError::Build(other.to_string()),
    }
}
