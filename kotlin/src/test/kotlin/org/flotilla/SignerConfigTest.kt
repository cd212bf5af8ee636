package org.flotilla

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

class SignerConfigTest {
    private val seed = ByteArray(32) { it.toByte() }
    private val url = "https://host.example:9735"
    private val maxMsat = 21_000_000L * 100_000_000L * 1000L
    private val maxSat = 21_000_000L * 100_000_000L

    @Test
    fun validConfig() {
        val limits = PolicyLimits(maxPaymentMsat = 1_000L, maxOutgoingMsatPerHour = maxMsat, maxFeeSat = 0L)
        SignerConfig(seed, url, limits).use { cfg ->
            assertEquals("0377318f8dba630b25a65856315807baed4cf56f26ea0117cd68945285dcdecc8f", cfg.nodeId())
            assertEquals(url, cfg.hostUrl())
            assertEquals(limits, cfg.limits())
        }
    }

    @Test
    fun limitsDefaultToAPhoneWalletsAndNullMeansNone() {
        val limits = PolicyLimits()
        assertEquals(1_000_000_000L, limits.maxPaymentMsat)
        assertEquals(5_000_000_000L, limits.maxOutgoingMsatPerHour)
        assertEquals(20_000L, limits.maxFeeSat)
        SignerConfig(seed, url, limits).use { assertEquals(limits, it.limits()) }
        val none = PolicyLimits(maxPaymentMsat = null, maxOutgoingMsatPerHour = null, maxFeeSat = null)
        SignerConfig(seed, url, none).use { assertNull(it.limits().maxPaymentMsat) }
    }

    @Test
    fun badSeed() {
        assertThrows<FlotillaException.InvalidSeed> { SignerConfig(ByteArray(31), url, PolicyLimits()) }
    }

    @Test
    fun badUrls() {
        for (bad in listOf("", "host.example", "ftp://host.example", "https://", "https://u:p@host.example",
                           "https://host.example:99999", " https://host.example", "https://host.example\n")) {
            assertThrows<FlotillaException.InvalidHostUrl>(bad) { SignerConfig(seed, bad, PolicyLimits()) }
        }
    }

    @Test
    fun negativeAndAbsurdLimits() {
        val bad = listOf(
            PolicyLimits(maxPaymentMsat = -1L),
            PolicyLimits(maxOutgoingMsatPerHour = Long.MIN_VALUE),
            PolicyLimits(maxFeeSat = -5L),
            PolicyLimits(maxPaymentMsat = maxMsat + 1),
            PolicyLimits(maxOutgoingMsatPerHour = Long.MAX_VALUE),
            PolicyLimits(maxFeeSat = maxSat + 1),
        )
        for (limits in bad) {
            val e = assertThrows<FlotillaException> { SignerConfig(seed, url, limits) }
            assertEquals(FlotillaException.InvalidLimit::class, e::class, limits.toString())
        }
    }

    @Test
    fun worstInputsAreExceptionsNotCrashes() {
        assertThrows<FlotillaException.InvalidSeed> { nodeIdFromSeed(ByteArray(64 shl 20)) }
        val hugeUrl = "https://" + "x".repeat(1 shl 20) + ".example/\u0000"
        assertThrows<FlotillaException.InvalidHostUrl> { SignerConfig(seed, hugeUrl, PolicyLimits()) }
        // A lone surrogate cannot be UTF-8: the generated converter refuses it before the call.
        assertThrows<java.nio.charset.CharacterCodingException> {
            SignerConfig(seed, "https://\uD800.example", PolicyLimits())
        }
    }
}
