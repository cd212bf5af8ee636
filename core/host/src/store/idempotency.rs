//! The `api_idempotency` table: the first answer to each API call made with an idempotency key,
//! so the same key again gets that answer and never does the work (a payment) twice.

use rusqlite::{params, OptionalExtension};

use super::{validate, Store, StoreError};

/// What the first call with a key asked and answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirstAnswer {
    /// The API method, e.g. `PayInvoice`.
    pub method: String,
    /// SHA-256 (hex) of the encoded request.
    pub request_sha256: String,
    /// The encoded answer.
    pub response: Vec<u8>,
}

impl Store {
    /// The first answer to `node_id`'s call with `key`, if any.
    pub fn first_answer(
        &self,
        node_id: &str,
        key: &str,
    ) -> Result<Option<FirstAnswer>, StoreError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT method, request_sha256, response FROM api_idempotency
                     WHERE node_id = ?1 AND key = ?2",
                )?
                .query_row(params![node_id, key], |r| {
                    Ok(FirstAnswer {
                        method: r.get(0)?,
                        request_sha256: r.get(1)?,
                        response: r.get(2)?,
                    })
                })
                .optional()?)
        })
    }

    /// Keeps `answer` as the first to `node_id`'s call with `key`; a key already kept keeps
    /// its first answer.
    pub fn keep_first_answer(
        &self,
        node_id: &str,
        key: &str,
        answer: FirstAnswer,
        now: i64,
    ) -> Result<(), StoreError> {
        validate::node_id("node_id", node_id)?;
        validate::hash32("request_sha256", &answer.request_sha256)?;
        let (node_id, key) = (node_id.to_owned(), key.to_owned());
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO api_idempotency
                     (node_id, key, method, request_sha256, response, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                node_id,
                key,
                answer.method,
                answer.request_sha256,
                answer.response,
                now
            ])?;
            Ok(())
        })
    }
}
