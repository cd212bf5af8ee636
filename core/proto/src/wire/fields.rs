//! Codecs of the fields every message shares: keys, signatures, LDK values, consensus values.
//! Whatever does not decode becomes [`SignerError::Malformed`].

use bitcoin::consensus::encode;
use bitcoin::secp256k1::ecdsa::Signature;
use bitcoin::secp256k1::PublicKey;
use lightning::io::Cursor;
use lightning::ln::chan_utils::ChannelTransactionParameters;
use lightning::types::payment::PaymentPreimage;
use lightning::util::ser::{Readable, ReadableArgs};

use crate::SignerError;

pub(super) fn malformed(what: &str, error: impl std::fmt::Display) -> SignerError {
    SignerError::Malformed(format!("{what}: {error}"))
}

pub(super) fn bytes32(bytes: &[u8], what: &str) -> Result<[u8; 32], SignerError> {
    bytes
        .try_into()
        .map_err(|_| SignerError::Malformed(format!("{what}: {} bytes, not 32", bytes.len())))
}

/// A public key, compressed form only (33 bytes).
pub(super) fn key(bytes: &[u8], what: &str) -> Result<PublicKey, SignerError> {
    if bytes.len() != 33 {
        return Err(SignerError::Malformed(format!(
            "{what}: {} bytes, not a 33-byte compressed key",
            bytes.len()
        )));
    }
    PublicKey::from_slice(bytes).map_err(|e| malformed(what, e))
}

pub(super) fn signature(bytes: &[u8]) -> Result<Signature, SignerError> {
    Signature::from_compact(bytes).map_err(|e| malformed("signature", e))
}

pub(super) fn preimages(preimages: &[PaymentPreimage]) -> Vec<Vec<u8>> {
    preimages.iter().map(|p| p.0.to_vec()).collect()
}

pub(super) fn decode_preimages(preimages: &[Vec<u8>]) -> Result<Vec<PaymentPreimage>, SignerError> {
    preimages
        .iter()
        .map(|p| bytes32(p, "preimage").map(PaymentPreimage))
        .collect()
}

/// An LDK value that must fill `bytes` exactly (trailing bytes mean a different value was meant).
pub(super) fn ldk<T: Readable>(bytes: &[u8], what: &str) -> Result<T, SignerError> {
    let mut cursor = Cursor::new(bytes);
    let value = T::read(&mut cursor).map_err(|e| malformed(what, e))?;
    whole(&cursor, bytes.len(), what)?;
    Ok(value)
}

pub(super) fn params(bytes: &[u8]) -> Result<ChannelTransactionParameters, SignerError> {
    const WHAT: &str = "channel parameters";
    let mut cursor = Cursor::new(bytes);
    // `None`: the channel value must be in the encoding itself (LDK always writes it).
    let value =
        ChannelTransactionParameters::read(&mut cursor, None).map_err(|e| malformed(WHAT, e))?;
    whole(&cursor, bytes.len(), WHAT)?;
    Ok(value)
}

pub(super) fn whole(cursor: &Cursor<&[u8]>, len: usize, what: &str) -> Result<(), SignerError> {
    if cursor.position() == len as u64 {
        Ok(())
    } else {
        Err(SignerError::Malformed(format!(
            "{what}: {} trailing bytes",
            (len as u64).saturating_sub(cursor.position())
        )))
    }
}

pub(super) fn consensus<T: encode::Decodable>(bytes: &[u8], what: &str) -> Result<T, SignerError> {
    encode::deserialize(bytes).map_err(|e| malformed(what, e))
}
