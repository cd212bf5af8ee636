//! The node API's access control: tokens scoped to one node (or to the operator), issued and
//! checked against the host's database. The gRPC service is built on it (issue 25).

pub mod token;
pub mod tokens;
