package org.flotilla

import org.json.JSONArray
import org.json.JSONObject
import org.junit.jupiter.api.AfterAll
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.BeforeAll
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.assertThrows
import org.junit.jupiter.api.io.TempDir
import java.io.File
import java.nio.file.Files
import java.security.MessageDigest
import java.util.Collections

/**
 * RemoteSigner end to end: the bindings' signer holds a hosted node's keys, dials a real
 * `flotilla host` over TLS (btcd regtest, a real channel, real payments) and asks the app's
 * PaymentApprover before each outgoing payment; declines and failing approvers refuse the
 * payment and leave the host consistent.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class RemoteSignerTest {
    private val payerSeed = sha256("flotilla kotlin payer".toByteArray())
    private val payeeSeed = sha256("flotilla kotlin payee".toByteArray())
    private val payMsat = 7_000_000L

    /** Answers with [decision] and records what it was shown, on which thread. */
    private class Approver : PaymentApprover {
        @Volatile var decision = "yes"
        val seen: MutableList<PaymentToApprove> = Collections.synchronizedList(mutableListOf())
        val threads: MutableSet<String> = Collections.synchronizedSet(mutableSetOf())

        override fun approve(payment: PaymentToApprove): Boolean {
            seen.add(payment)
            threads.add(Thread.currentThread().name)
            if (decision == "throw") throw IllegalStateException("the approval screen crashed")
            return decision == "yes"
        }
    }

    private lateinit var dir: File
    private lateinit var chain: Regtest
    private lateinit var host: Host
    private val approver = Approver()
    private val signers = mutableListOf<RemoteSigner>()

    @BeforeAll
    fun startHostAndSigners() {
        dir = Files.createTempDirectory("flotilla-kotlin-hosted").toFile()
        chain = Regtest(File(dir, "regtest"))
        chain.mine(101)
        host = Host(dir, chain.chainJson, mapOf("payer" to nodeIdFromSeed(payerSeed), "payee" to nodeIdFromSeed(payeeSeed)))
        for ((name, seed, hook) in listOf(Triple("payer", payerSeed, approver), Triple("payee", payeeSeed, null))) {
            SignerConfig(seed, host.hubUrl, PolicyLimits(maxPaymentMsat = 50_000_000L)).use { config ->
                signers += RemoteSigner.start(config, Network.REGTEST, host.caPem, File(dir, "$name-state").path, hook)
            }
        }
        host.ready()
        host.openChannel(chain, "payer", "payee", fundSat = 1_000_000L, channelSat = 500_000L)
    }

    @AfterAll
    fun stopAll() {
        signers.forEach { it.stop(); it.close() }
        if (::host.isInitialized) host.close()
        if (::chain.isInitialized) chain.down()
        dir.deleteRecursively()
    }

    private fun pay(msat: Long = payMsat): JSONObject {
        val invoice = host.call("invoice", "node" to "payee", "msat" to msat) as String
        return host.call("pay", "node" to "payer", "invoice" to invoice) as JSONObject
    }

    /** The payer's channel once no HTLC is in flight (a payment succeeds before its HTLC is gone). */
    private fun settled(): JSONObject = host.waitFor("settled channel") {
        host.channels("payer").getJSONObject(0).takeIf { it.getInt("pending_htlcs") == 0 }
    }

    @Test
    fun approvedPaymentIsSignedAndSettles() {
        approver.decision = "yes"
        val before = settled().getLong("outbound_msat")
        val paid = pay()
        val shown = approver.seen.last()
        // What the approver was shown is the payment that settled: its hash is the preimage's.
        assertEquals(hex(sha256(unhex(paid.getString("preimage")))), shown.paymentHash)
        assertEquals(payMsat, shown.amountMsat)
        assertEquals(host.nodes.getValue("payee").getString("node_id"), shown.destination)
        assertEquals(payMsat + paid.getLong("fee_msat"), before - settled().getLong("outbound_msat"))
        assertFalse(approver.threads.contains(Thread.currentThread().name), "approver ran on the caller's thread")
        val status = signers[0].status()
        assertTrue(status.running && status.attaches >= 1uL && status.answered > 0uL, status.toString())
    }

    @Test
    fun declinedAndThrowingApproversRefuseAndNothingMoves() {
        for (decision in listOf("no", "throw")) {
            approver.decision = decision
            val before = settled().getLong("outbound_msat")
            val asked = approver.seen.size
            val e = assertThrows<HostException>(decision) { pay() }
            assertTrue(e.message!!.contains("approval_declined"), e.message)
            assertEquals(asked + 1, approver.seen.size)
            val channel = host.channels("payer").getJSONObject(0)
            assertEquals(before, channel.getLong("outbound_msat"))
            assertEquals(0, channel.getInt("pending_htlcs"), "a refused payment must not add an HTLC")
            val payments = host.call("payments", "node" to "payer") as JSONArray
            assertTrue((0 until payments.length()).all { payments.getJSONObject(it).getString("status") == "succeeded" })
            // The signer carries on: the next approved payment goes through.
            assertTrue(signers[0].status().running)
            approver.decision = "yes"
            pay()
        }
    }

    @Test
    fun policyLimitRefusesBeforeTheApproverIsAsked() {
        approver.decision = "yes"
        val asked = approver.seen.size
        val e = assertThrows<HostException> { pay(60_000_000L) }
        assertTrue(e.message!!.contains("max_payment"), e.message)
        assertEquals(asked, approver.seen.size)
    }

    @Test
    fun secondSignerOnTheSameStateIsRefused() {
        SignerConfig(payerSeed, host.hubUrl, PolicyLimits()).use { config ->
            assertThrows<FlotillaException.StateUnavailable> {
                RemoteSigner.start(config, Network.REGTEST, host.caPem, File(dir, "payer-state").path, null)
            }
        }
    }

    @Test
    fun badCaIsRefused(@TempDir state: File) {
        SignerConfig(payerSeed, "https://127.0.0.1:1", PolicyLimits()).use { config ->
            assertThrows<FlotillaException.InvalidCa> {
                RemoteSigner.start(config, Network.REGTEST, "not a certificate", state.path, null)
            }
        }
    }

    @Test
    fun stopIsIdempotent(@TempDir state: File) {
        SignerConfig(sha256("unregistered".toByteArray()), host.hubUrl, PolicyLimits()).use { config ->
            RemoteSigner.start(config, Network.REGTEST, host.caPem, state.path, null).use { signer ->
                signer.stop()
                signer.stop()
                assertFalse(signer.status().running)
            }
        }
    }

    @Test
    fun marketFeerateReportsAreChecked(@TempDir state: File) {
        SignerConfig(sha256("market".toByteArray()), host.hubUrl, PolicyLimits()).use { config ->
            RemoteSigner.start(config, Network.REGTEST, host.caPem, state.path, null).use { signer ->
                signer.reportMarketFeerate(45.5)
                for (bad in listOf(Double.NaN, -1.0, 0.5, 1e7)) {
                    assertThrows<FlotillaException.InvalidFeerate> { signer.reportMarketFeerate(bad) }
                }
                signer.stop()
            }
        }
    }

    private companion object {
        fun sha256(data: ByteArray): ByteArray = MessageDigest.getInstance("SHA-256").digest(data)
        fun hex(bytes: ByteArray): String = bytes.joinToString("") { "%02x".format(it) }
        fun unhex(s: String): ByteArray = ByteArray(s.length / 2) { s.substring(2 * it, 2 * it + 2).toInt(16).toByte() }
    }
}
