//! uniffi-bindgen, built from the same uniffi version as the library it reads.
//! Usage: `flotilla-bindgen generate --library target/release/libflotilla.so --language kotlin --out-dir DIR`.

fn main() {
    uniffi::uniffi_bindgen_main()
}
