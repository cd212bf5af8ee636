//! Compiles the signer protocol (signer.proto) with the vendored protoc, so building
//! needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=signer.proto");
    tonic_prost_build::configure().compile_protos(&["signer.proto"], &["."])?;
    Ok(())
}
