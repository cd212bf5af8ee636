//! Chain access shared by every node of a host: RPC, block source, observer, fees, broadcast.

pub mod rpc;
