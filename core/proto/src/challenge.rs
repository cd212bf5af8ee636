//! The attach challenge: how a signer proves to the hub that it holds the node key.

/// Domain prefix of the hub's attach challenge, so a signature made for it can never be
/// replayed as any other message the node key signs.
pub const CHALLENGE_TAG: &[u8] = b"flotilla/signer-attach/v1";

/// The message a signer signs to attach: `sha256(CHALLENGE_TAG || challenge)`.
pub fn challenge_digest(challenge: &[u8; 32]) -> bitcoin::secp256k1::Message {
    use bitcoin::hashes::{sha256, Hash, HashEngine};
    let mut engine = sha256::Hash::engine();
    engine.input(CHALLENGE_TAG);
    engine.input(challenge);
    bitcoin::secp256k1::Message::from_digest(sha256::Hash::from_engine(engine).to_byte_array())
}
