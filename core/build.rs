//! Compiles the signer protocol (proto/signer.proto) with the vendored protoc, so building
//! needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto/signer.proto");
    tonic_prost_build::configure().compile_protos(&["proto/signer.proto"], &["proto"])?;
    Ok(())
}
