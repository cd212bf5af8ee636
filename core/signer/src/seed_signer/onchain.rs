//! On-chain requests: sweeps of outputs LDK hands the node, and the wallet's PSBTs, which
//! may pay only the wallet, allowed scripts or an approved channel's funding.

use bitcoin::hashes::Hash;
use bitcoin::{absolute::LockTime, psbt, Psbt, ScriptBuf, TxIn, TxOut};
use flotilla_proto::{Request, Response, SignerError};
use lightning::sign::{OutputSpender, SpendableOutputDescriptor};

use super::{lock, SeedSigner};
use crate::policy::{WalletInput, WalletOutput};

impl SeedSigner {
    /// Answers a request to spend coins on chain.
    pub(super) fn onchain_request(
        &self,
        kind: &str,
        request: Request,
    ) -> Result<Response, SignerError> {
        match request {
            Request::SpendOutputs {
                descriptors,
                outputs,
                change_script,
                feerate_sat_per_1000_weight,
                locktime,
            } => self.spend_outputs(
                kind,
                descriptors,
                outputs,
                change_script,
                feerate_sat_per_1000_weight,
                locktime,
            ),
            Request::SignPsbt { psbt } => self.sign_psbt(kind, psbt),
            other => {
                Err(self.malformed(kind, format!("{} is not an on-chain request", other.kind())))
            }
        }
    }

    fn spend_outputs(
        &self,
        kind: &str,
        descriptors: Vec<SpendableOutputDescriptor>,
        outputs: Vec<TxOut>,
        change_script: ScriptBuf,
        feerate: u32,
        locktime: Option<u32>,
    ) -> Result<Response, SignerError> {
        self.check_outputs(kind, &outputs)?;
        self.policy
            .check_destinations(&self.own_scripts, [change_script.as_script()])
            .map_err(|r| self.refuse(kind, r))?;
        let input_sat = descriptors
            .iter()
            .map(|d| match d {
                SpendableOutputDescriptor::StaticOutput { output, .. } => output.value,
                SpendableOutputDescriptor::DelayedPaymentOutput(d) => d.output.value,
                SpendableOutputDescriptor::StaticPaymentOutput(d) => d.output.value,
            })
            .try_fold(bitcoin::Amount::ZERO, |a, b| a.checked_add(b))
            .ok_or_else(|| self.malformed(kind, "input values overflow"))?;
        let refs: Vec<&SpendableOutputDescriptor> = descriptors.iter().collect();
        let tx = self
            .keys
            .spend_spendable_outputs(
                &refs,
                outputs,
                change_script,
                feerate,
                locktime.map(LockTime::from_consensus),
                &self.secp,
            )
            .map_err(|()| self.malformed(kind, "LDK could not spend these outputs"))?;
        self.check_outputs(kind, &tx.output)?;
        let output_sat = tx
            .output
            .iter()
            .map(|o| o.value)
            .try_fold(bitcoin::Amount::ZERO, |a, b| a.checked_add(b))
            .ok_or_else(|| self.malformed(kind, "output values overflow"))?;
        let fee = input_sat
            .checked_sub(output_sat)
            .ok_or_else(|| self.malformed(kind, "outputs exceed inputs"))?;
        self.fee_cap()
            .check(fee.to_sat(), "sweep")
            .map_err(|r| self.refuse(kind, r))?;
        Ok(Response::Transaction(tx))
    }

    /// Signs the wallet's inputs once every output is allowed (see
    /// `Policy::check_wallet_spend`) and the fee within the cap.
    fn sign_psbt(&self, kind: &str, mut psbt: Psbt) -> Result<Response, SignerError> {
        if psbt.outputs.len() != psbt.unsigned_tx.output.len()
            || psbt.inputs.len() != psbt.unsigned_tx.input.len()
        {
            return Err(self.malformed(kind, "PSBT inputs or outputs do not match its transaction"));
        }
        let inputs: Vec<WalletInput> = psbt
            .unsigned_tx
            .input
            .iter()
            .zip(&psbt.inputs)
            .map(|(txin, input)| WalletInput {
                ours: self.wallet.signs_input(input),
                sighash: input.sighash_type,
                unproven: unproven_amount(txin, input),
                segwit: spent_output(txin, input)
                    .is_some_and(|spent| spent.script_pubkey.is_witness_program()),
            })
            .collect();
        self.policy
            .check_wallet_inputs(&inputs)
            .map_err(|r| self.refuse(kind, r))?;
        if self.policy.limits.max_fee_sat.is_some() {
            let fee = psbt
                .fee()
                .map_err(|e| self.malformed(kind, format!("fee unknown: {e}")))?;
            self.fee_cap()
                .check(fee.to_sat(), "wallet transaction")
                .map_err(|r| self.refuse(kind, r))?;
        }
        let txid = psbt.unsigned_tx.compute_txid().to_byte_array();
        let outputs: Vec<WalletOutput> = psbt
            .unsigned_tx
            .output
            .iter()
            .zip(&psbt.outputs)
            .map(|(txout, output)| WalletOutput {
                script: &txout.script_pubkey,
                value_sat: txout.value.to_sat(),
                own: self.own_scripts.contains(&txout.script_pubkey)
                    || self.wallet.owns_output(output, &txout.script_pubkey),
                witness_script: output.witness_script.as_deref(),
            })
            .collect();
        self.policy
            .check_wallet_spend(
                &lock(&self.kept).state,
                txid,
                &inputs,
                &outputs,
                |keys_id| self.channel_keys(keys_id).pubkeys.funding_pubkey,
            )
            .map_err(|r| self.refuse(kind, r))?;
        drop(outputs);
        self.wallet
            .sign_psbt(&mut psbt)
            .map_err(|e| self.malformed(kind, e.to_string()))?;
        Ok(Response::Psbt(psbt))
    }
}

/// The output `txin` spends, as its previous transaction in the PSBT holds it.
fn spent_output<'a>(txin: &TxIn, input: &'a psbt::Input) -> Option<&'a TxOut> {
    let previous = input.non_witness_utxo.as_ref()?;
    (previous.compute_txid() == txin.previous_output.txid)
        .then(|| previous.output.get(txin.previous_output.vout as usize))
        .flatten()
}

/// Why the amount `input` claims is not proven, if it is not: the previous transaction must be
/// there, be the one the input spends, have the output, and agree with `witness_utxo`.
fn unproven_amount(txin: &TxIn, input: &psbt::Input) -> Option<String> {
    let Some(previous) = &input.non_witness_utxo else {
        return Some("no previous transaction (non_witness_utxo)".into());
    };
    let spent = txin.previous_output;
    if previous.compute_txid() != spent.txid {
        return Some(format!("the previous transaction is not {}", spent.txid));
    }
    let Some(output) = previous.output.get(spent.vout as usize) else {
        return Some(format!("{} has no output {}", spent.txid, spent.vout));
    };
    match &input.witness_utxo {
        Some(claimed) if claimed != output => Some(format!(
            "witness_utxo claims {} but {spent} holds {}",
            claimed.value, output.value
        )),
        _ => None,
    }
}
