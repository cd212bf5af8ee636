//! Checks on identifiers before they are written, so lookups by string never miss because a
//! caller used upper case or a truncated id.

use super::StoreError;

/// Node ids are compressed public keys: 33 bytes.
pub fn node_id(field: &str, value: &str) -> Result<(), StoreError> {
    lower_hex(field, value, 66)
}

/// Channel ids, payment hashes, preimages and txids: 32 bytes.
pub fn hash32(field: &str, value: &str) -> Result<(), StoreError> {
    lower_hex(field, value, 64)
}

/// LDK's user channel id is a u128, written in decimal.
pub fn decimal_u128(field: &str, value: &str) -> Result<(), StoreError> {
    let canonical = value.parse::<u128>().is_ok_and(|n| n.to_string() == value);
    if canonical {
        Ok(())
    } else {
        Err(StoreError::InvalidValue(format!(
            "{field} must be a decimal u128, got {value:?}"
        )))
    }
}

fn lower_hex(field: &str, value: &str, len: usize) -> Result<(), StoreError> {
    let ok = value.len() == len
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidValue(format!(
            "{field} must be {len} lowercase hex characters, got {value:?}"
        )))
    }
}
