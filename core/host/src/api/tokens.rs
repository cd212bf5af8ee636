//! Issuing, checking and revoking the node API's tokens, kept in the host's database.

use crate::store::{Store, StoreError, TokenRow};

use super::token::{matches, Grant, Scopes, Token, TokenError};

/// Why a presented token grants nothing. A wrong secret and an unknown id read the same, so a
/// caller learns nothing of which ids exist.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid token")]
    Invalid,
    #[error("token {0} was revoked")]
    Revoked(String),
    #[error("token {0} expired")]
    Expired(String),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The tokens of one host.
#[derive(Clone)]
pub struct Tokens {
    store: Store,
}

impl Tokens {
    pub fn new(store: Store) -> Tokens {
        Tokens { store }
    }

    /// Makes a token for `grant`, valid until `expires_at` (unix seconds) if given. The
    /// returned token is the only time its secret exists outside the caller's hands.
    pub fn create(
        &self,
        grant: &Grant,
        label: Option<String>,
        expires_at: Option<i64>,
        now: i64,
    ) -> Result<(Token, TokenRow), AuthError> {
        let token = Token::generate();
        let row = TokenRow {
            id: token.id.clone(),
            node_id: grant.node_id().map(str::to_owned),
            scopes: grant.scopes().to_string(),
            label,
            created_at: now,
            expires_at,
            revoked_at: None,
        };
        self.store.insert_token(&row, &token.hash())?;
        Ok((token, row))
    }

    /// What `presented` grants at `now` (unix seconds).
    pub fn authenticate(&self, presented: &str, now: i64) -> Result<Grant, AuthError> {
        let token: Token = presented.parse().map_err(|_| AuthError::Invalid)?;
        let Some((row, hash)) = self.store.token(&token.id)? else {
            return Err(AuthError::Invalid);
        };
        if !matches(&token, &hash) {
            return Err(AuthError::Invalid);
        }
        if row.revoked_at.is_some() {
            return Err(AuthError::Revoked(row.id));
        }
        if row.expires_at.is_some_and(|at| at <= now) {
            return Err(AuthError::Expired(row.id));
        }
        let scopes: Scopes = row.scopes.parse()?;
        Ok(Grant::new(row.node_id, scopes)?)
    }

    /// Revokes the token `id`; whether a live one existed.
    pub fn revoke(&self, id: &str, now: i64) -> Result<bool, AuthError> {
        Ok(self.store.revoke_token(id, now)?)
    }

    /// The tokens of `node_id` (`None`: the operator's), without their secrets.
    pub fn list(&self, node_id: Option<&str>) -> Result<Vec<TokenRow>, AuthError> {
        Ok(self.store.tokens(node_id)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::token::Scope;
    use crate::store::NodeRow;

    fn store(dir: &tempfile::TempDir) -> Store {
        let store = Store::open(&dir.path().join("host.sqlite")).expect("store");
        for byte in ["aa", "bb"] {
            store
                .upsert_node(&NodeRow {
                    node_id: format!("02{}", byte.repeat(32)),
                    alias: byte.into(),
                    listen_addr: None,
                    status: "running".into(),
                    created_at: 1,
                })
                .expect("node");
        }
        store
    }

    #[test]
    fn a_token_grants_its_node_and_scopes_until_revoked_or_expired() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store(&dir);
        let tokens = Tokens::new(store.clone());
        let a = format!("02{}", "aa".repeat(32));
        let grant =
            Grant::new(Some(a.clone()), Scopes::new([Scope::Read, Scope::Receive])).expect("grant");
        let (token, row) = tokens
            .create(&grant, Some("shop".into()), Some(1_000), 10)
            .expect("created");
        assert_eq!(row.scopes, "read,receive");
        assert_eq!(
            tokens.authenticate(&token.to_string(), 500).expect("valid"),
            grant
        );
        // Only the hash is kept: the secret appears in no column of the row.
        let (_, kept) = store.token(&token.id).expect("read").expect("row");
        assert_eq!(kept, token.hash());
        let secret = token.to_string()[21..].to_owned();
        let raw = rusqlite::Connection::open(dir.path().join("host.sqlite")).expect("open");
        let row: String = raw
            .query_row(
                "SELECT id || node_id || scopes || label || secret_sha256 FROM api_tokens
                 WHERE id = ?1",
                [&token.id],
                |r| r.get(0),
            )
            .expect("row");
        assert!(row.contains(&token.id) && !row.contains(&secret), "{row}");

        let mut forged = token.to_string();
        let last = forged.pop().expect("a character");
        forged.push(if last == '0' { '1' } else { '0' });
        assert!(matches!(
            tokens.authenticate(&forged, 500),
            Err(AuthError::Invalid)
        ));
        let unknown = Token::generate().to_string();
        assert!(matches!(
            tokens.authenticate(&unknown, 500),
            Err(AuthError::Invalid)
        ));
        assert!(matches!(
            tokens.authenticate("Bearer x", 500),
            Err(AuthError::Invalid)
        ));
        assert!(matches!(
            tokens.authenticate(&token.to_string(), 1_000),
            Err(AuthError::Expired(_))
        ));

        let (other, _) = tokens.create(&grant, None, None, 20).expect("second");
        assert_eq!(tokens.list(Some(&a)).expect("list").len(), 2);
        assert!(tokens.list(None).expect("operator's").is_empty());
        assert!(tokens.revoke(&other.id, 30).expect("revoked"));
        assert!(!tokens.revoke(&other.id, 31).expect("once"));
        assert!(matches!(
            tokens.authenticate(&other.to_string(), 40),
            Err(AuthError::Revoked(_))
        ));

        let (operator, row) = tokens
            .create(&Grant::Operator, None, None, 50)
            .expect("operator");
        assert_eq!(row.node_id, None);
        assert_eq!(
            tokens
                .authenticate(&operator.to_string(), 60)
                .expect("valid"),
            Grant::Operator
        );
        assert_eq!(tokens.list(None).expect("operator's").len(), 1);
    }

    #[test]
    fn a_token_for_an_unknown_node_is_not_made() {
        let dir = tempfile::tempdir().expect("dir");
        let tokens = Tokens::new(store(&dir));
        let stranger = Grant::new(
            Some(format!("03{}", "cc".repeat(32))),
            Scopes::new([Scope::Read]),
        )
        .expect("grant");
        assert!(matches!(
            tokens.create(&stranger, None, None, 1),
            Err(AuthError::Store(_))
        ));
    }
}
