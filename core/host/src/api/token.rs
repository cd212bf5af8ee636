//! Access tokens of the node API: what a client presents, what the host keeps of it, and what
//! it allows.
//!
//! A token is `flt_<id>_<secret>`: the id (8 random bytes, hex) names the row, the secret (32
//! random bytes, hex) proves possession. The host stores only the secret's SHA-256, so a
//! leaked database grants nothing, and shows a token once, when it is made. A node token is
//! bound to one node and carries scopes; an operator token (scope `admin`) is bound to none
//! and manages nodes and tokens, never a node's money.

use std::fmt;
use std::str::FromStr;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::hex::{DisplayHex, FromHex};
use bitcoin::secp256k1::rand::{thread_rng, RngCore};

/// What a token may do. Each RPC names the one scope it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Read the node: info, balances, channels, payments, events.
    Read,
    /// Be paid: invoices, offers, addresses.
    Receive,
    /// Move money out: payments, on-chain sends.
    Send,
    /// Open and close channels.
    Channels,
    /// Connect and disconnect peers.
    Peers,
    /// The operator's: add and remove nodes, make and revoke tokens. Never with a node.
    Admin,
}

impl Scope {
    pub const ALL_NODE: [Scope; 5] = [
        Scope::Read,
        Scope::Receive,
        Scope::Send,
        Scope::Channels,
        Scope::Peers,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Receive => "receive",
            Scope::Send => "send",
            Scope::Channels => "channels",
            Scope::Peers => "peers",
            Scope::Admin => "admin",
        }
    }
}

impl FromStr for Scope {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Scope::Admin]
            .into_iter()
            .chain(Scope::ALL_NODE)
            .find(|scope| scope.name() == s)
            .ok_or_else(|| TokenError::UnknownScope(s.to_owned()))
    }
}

/// A set of scopes, kept sorted and without repeats.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    pub fn new(scopes: impl IntoIterator<Item = Scope>) -> Scopes {
        let mut scopes: Vec<Scope> = scopes.into_iter().collect();
        scopes.sort();
        scopes.dedup();
        Scopes(scopes)
    }

    pub fn contains(&self, scope: Scope) -> bool {
        self.0.contains(&scope)
    }
}

/// Comma-separated names, as the CLI takes them and the table keeps them.
impl FromStr for Scopes {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let scopes = s
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(Scope::from_str)
            .collect::<Result<Vec<_>, _>>()?;
        if scopes.is_empty() {
            return Err(TokenError::NoScope);
        }
        Ok(Scopes::new(scopes))
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|s| s.name()).collect();
        f.write_str(&names.join(","))
    }
}

/// Why a token could not be made or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("unknown scope {0:?} (read, receive, send, channels, peers, admin)")]
    UnknownScope(String),
    #[error("a token needs at least one scope")]
    NoScope,
    #[error("scope admin is the operator's: it goes on no node token, and with no other scope")]
    AdminOnNode,
    #[error("a node token needs a node")]
    NoNode,
    #[error("not a Flotilla token")]
    Malformed,
}

/// What a token is for: one node and some of its scopes, or the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grant {
    Node { node_id: String, scopes: Scopes },
    Operator,
}

impl Grant {
    /// Checks the combination: admin alone and without a node, node scopes with one.
    pub fn new(node_id: Option<String>, scopes: Scopes) -> Result<Grant, TokenError> {
        let admin = scopes.contains(Scope::Admin);
        match (node_id, admin) {
            (None, true) if scopes.0.len() == 1 => Ok(Grant::Operator),
            (_, true) => Err(TokenError::AdminOnNode),
            (Some(node_id), false) => Ok(Grant::Node { node_id, scopes }),
            (None, false) => Err(TokenError::NoNode),
        }
    }

    pub fn node_id(&self) -> Option<&str> {
        match self {
            Grant::Node { node_id, .. } => Some(node_id),
            Grant::Operator => None,
        }
    }

    pub fn scopes(&self) -> Scopes {
        match self {
            Grant::Node { scopes, .. } => scopes.clone(),
            Grant::Operator => Scopes::new([Scope::Admin]),
        }
    }
}

const PREFIX: &str = "flt_";
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;

/// A token as presented: its id and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub id: String,
    secret: [u8; SECRET_BYTES],
}

impl Token {
    /// A fresh token from the system's randomness.
    pub fn generate() -> Token {
        let mut id = [0u8; ID_BYTES];
        let mut secret = [0u8; SECRET_BYTES];
        thread_rng().fill_bytes(&mut id);
        thread_rng().fill_bytes(&mut secret);
        Token {
            id: id.to_lower_hex_string(),
            secret,
        }
    }

    /// What the host keeps: the secret's SHA-256, hex.
    pub fn hash(&self) -> String {
        secret_hash(&self.secret)
    }
}

/// The hash the host keeps of a secret.
fn secret_hash(secret: &[u8]) -> String {
    sha256::Hash::hash(secret)
        .to_byte_array()
        .to_lower_hex_string()
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}{}_{}",
            self.id,
            self.secret.to_lower_hex_string()
        )
    }
}

/// Never prints the secret.
impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({PREFIX}{}_…)", self.id)
    }
}

impl FromStr for Token {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
        let (id, secret) = rest.split_once('_').ok_or(TokenError::Malformed)?;
        let id_ok = id.len() == 2 * ID_BYTES && <Vec<u8>>::from_hex(id).is_ok();
        let secret = <[u8; SECRET_BYTES]>::from_hex(secret).map_err(|_| TokenError::Malformed)?;
        // One spelling per token: lowercase, as it was printed.
        if !id_ok || rest.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(TokenError::Malformed);
        }
        Ok(Token {
            id: id.to_owned(),
            secret,
        })
    }
}

/// Whether `token`'s secret is the one whose hash the host kept: both hashes are compared in
/// full whatever they hold, so the time taken says nothing of where they differ.
pub fn matches(token: &Token, kept_hash: &str) -> bool {
    let presented = token.hash();
    presented.len() == kept_hash.len()
        && presented
            .bytes()
            .zip(kept_hash.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_back_as_itself_and_only_its_hash_matches() {
        let token = Token::generate();
        let text = token.to_string();
        assert!(text.starts_with("flt_"));
        assert_eq!(text.parse::<Token>(), Ok(token.clone()));
        assert!(matches(&token, &token.hash()));
        assert!(!matches(&Token::generate(), &token.hash()));
        assert!(
            !format!("{token:?}").contains(&text[21..]),
            "Debug hides the secret"
        );
        for bad in [
            "",
            "flt_",
            "flt_00_11",
            &text.replace("flt_", "xyz_"),
            &text[..text.len() - 1],
            &text.to_uppercase().replace("FLT_", "flt_"),
        ] {
            assert_eq!(bad.parse::<Token>(), Err(TokenError::Malformed), "{bad}");
        }
    }

    #[test]
    fn scopes_read_from_names_and_admin_stays_the_operators() {
        let scopes: Scopes = "send, read,read".parse().expect("scopes");
        assert_eq!(scopes.to_string(), "read,send");
        assert_eq!(
            "read,spend".parse::<Scopes>(),
            Err(TokenError::UnknownScope("spend".into()))
        );
        assert_eq!(" , ".parse::<Scopes>(), Err(TokenError::NoScope));
        let node = || Some("02aa".to_owned());
        assert!(matches!(
            Grant::new(node(), scopes.clone()),
            Ok(Grant::Node { .. })
        ));
        assert_eq!(Grant::new(None, scopes), Err(TokenError::NoNode));
        let admin = Scopes::new([Scope::Admin]);
        assert_eq!(Grant::new(None, admin.clone()), Ok(Grant::Operator));
        assert_eq!(Grant::new(node(), admin), Err(TokenError::AdminOnNode));
        let both = Scopes::new([Scope::Admin, Scope::Read]);
        assert_eq!(Grant::new(None, both), Err(TokenError::AdminOnNode));
    }
}
