//! u64 in SQLite, whose INTEGER is an i64: stored as INTEGER when it fits, as decimal TEXT
//! otherwise (the columns are `ANY`, so SQLite keeps either exactly). Never wraps.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, Value, ValueRef};

/// A u64 column value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct U64(pub u64);

impl ToSql for U64 {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Owned(match i64::try_from(self.0) {
            Ok(small) => Value::Integer(small),
            Err(_) => Value::Text(self.0.to_string()),
        }))
    }
}

impl FromSql for U64 {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value {
            ValueRef::Integer(i) => u64::try_from(i)
                .map(U64)
                .map_err(|_| FromSqlError::OutOfRange(i)),
            ValueRef::Text(text) => std::str::from_utf8(text)
                .ok()
                .and_then(|s| s.parse().ok())
                .map(U64)
                .ok_or_else(|| FromSqlError::Other("not a decimal u64".into())),
            _ => Err(FromSqlError::InvalidType),
        }
    }
}

/// Reads an optional u64 column.
pub fn opt(value: Option<U64>) -> Option<u64> {
    value.map(|v| v.0)
}
