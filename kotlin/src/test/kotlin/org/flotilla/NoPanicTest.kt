package org.flotilla

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test

/**
 * The worst input a JVM caller can produce: a malformed argument buffer handed straight to the
 * C entry point, bypassing the generated wrapper (which would never build one). Rust must refuse
 * it through the call status instead of aborting the JVM. Uses internals of the generated code.
 */
class NoPanicTest {
    private val payloads = listOf(
        byteArrayOf(0x00, 0xA0.toByte(), 0x00, 0x00, 1, 2, 3, 4), // claims 10 MiB, holds 4 bytes
        byteArrayOf(-1, -1, -1, -1) + ByteArray(32), // negative length
        byteArrayOf(0, 0, 0, 32) + ByteArray(40), // a 32-byte seed plus trailing garbage
        byteArrayOf(0, 0), // not even a length prefix
    )

    @Test
    fun corruptArgumentBufferIsAnErrorNotACrash() {
        for (payload in payloads) {
            val buf = RustBuffer.alloc(payload.size.toULong())
            buf.data!!.write(0, payload, 0, payload.size)
            buf.len = payload.size.toLong()
            val status = UniffiRustCallStatus()
            UniffiLib.uniffi_flotilla_fn_func_node_id_from_seed(buf, status)
            assertTrue(status.isPanic(), "call status ${status.code} for ${payload.size}-byte payload")
            val message = FfiConverterString.lift(status.error_buf)
            assertTrue(message.contains("seed"), message)
        }
        // The library is still usable afterwards.
        assertEquals(66, nodeIdFromSeed(ByteArray(32)).length)
    }

    @Test
    fun rustPanicBecomesInternalException() {
        // A null buffer that claims 8 bytes trips an assertion inside Rust: a real panic.
        val status = UniffiRustCallStatus()
        UniffiLib.uniffi_flotilla_fn_func_node_id_from_seed(RustBuffer.create(8UL, 8UL, null), status)
        assertTrue(status.isPanic(), "call status ${status.code}")
        val message = FfiConverterString.lift(status.error_buf)
        assertTrue(message.contains("null RustBuffer"), message)
        assertEquals(66, nodeIdFromSeed(ByteArray(32)).length)
    }
}
