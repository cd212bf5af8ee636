//! Compiles the signer protocol (signer.proto) and the host's API (node.proto, operator.proto)
//! with the vendored protoc, so building needs no system protoc. The API's descriptors are kept
//! for gRPC reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=signer.proto");
    println!("cargo:rerun-if-changed=node.proto");
    println!("cargo:rerun-if-changed=operator.proto");
    tonic_prost_build::configure().compile_protos(&["signer.proto"], &["."])?;
    let descriptors =
        std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("api_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(descriptors)
        .compile_protos(&["node.proto", "operator.proto"], &["."])?;
    Ok(())
}
