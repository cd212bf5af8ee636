//! The token on every call: `authorization: Bearer <token>`.

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::ClientError;

/// Adds the client's token to each request.
#[derive(Clone)]
pub struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl Bearer {
    pub fn new(token: &str) -> Result<Bearer, ClientError> {
        let mut value: MetadataValue<_> = format!("Bearer {}", token.trim())
            .parse()
            .map_err(|_| ClientError::Token)?;
        value.set_sensitive(true);
        Ok(Bearer(value))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}
