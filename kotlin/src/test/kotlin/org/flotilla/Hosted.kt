package org.flotilla

import org.json.JSONArray
import org.json.JSONObject
import java.io.File
import java.net.ServerSocket
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit
import kotlin.concurrent.thread

/** The `flotilla` binary: -Dflotilla.bin (scripts/bindings.sh passes it). */
fun flotillaBin(): File {
    val bin = File(System.getProperty("flotilla.bin") ?: "../target/release/flotilla")
    check(bin.canExecute()) { "$bin is missing: cargo build --release -p flotilla" }
    return bin
}

fun freePort(): Int = ServerSocket(0).use { it.localPort }

/** `flotilla regtest up` in [dir] (btcd in the background) until [down]. */
class Regtest(val dir: File) {
    init { run("up") }

    val chainJson: File get() = File(dir, "regtest.json")

    private fun run(vararg args: String): String {
        val cmd = listOf(flotillaBin().path, "regtest") + args + listOf("--dir", dir.path)
        val proc = ProcessBuilder(cmd).redirectError(ProcessBuilder.Redirect.INHERIT).start()
        val out = proc.inputStream.bufferedReader().readText()
        check(proc.waitFor(300, TimeUnit.SECONDS) && proc.exitValue() == 0) { "regtest ${args.toList()} failed" }
        return out
    }

    fun mine(blocks: Int) { run("mine", blocks.toString()) }

    /** Pays [sat] to [address] and confirms it in one block. */
    fun fund(address: String, sat: Long) { run("fund", address, sat.toString()) }

    fun down() { run("down") }
}

/** The host answered a console request with an error. */
class HostException(message: String) : Exception(message)

/** `flotilla host --config` for [nodes] (alias to node id); its JSON-lines console over pipes. */
class Host(dir: File, chainJson: File, nodes: Map<String, String>) : AutoCloseable {
    private val proc: Process
    private val lines = LinkedBlockingQueue<String>()
    val hubUrl: String
    val caPem: String
    var nodes: Map<String, JSONObject> = emptyMap()
        private set

    init {
        val config = File(dir, "host.json")
        config.writeText(JSONObject(mapOf(
            "db" to File(dir, "host.db").path,
            "chain" to chainJson.path,
            "hub_listen" to "127.0.0.1:${freePort()}",
            "tls_dir" to File(dir, "hub-tls").path,
            "nodes" to nodes.map { (alias, id) -> mapOf("alias" to alias, "node_id" to id) },
        )).toString())
        proc = ProcessBuilder(flotillaBin().path, "host", "--config", config.path)
            .redirectError(ProcessBuilder.Redirect.INHERIT)
            .start()
        thread(isDaemon = true, name = "host-stdout") {
            proc.inputStream.bufferedReader().forEachLine { lines.put(it) }
            lines.put(EOF)
        }
        val hello = next("hub listening").getJSONObject("ok")
        hubUrl = hello.getString("hub")
        caPem = File(hello.getString("ca_file")).readText()
    }

    private fun next(what: String): JSONObject {
        val line = lines.poll(120, TimeUnit.SECONDS) ?: error("host: no $what within 120 s")
        check(line != EOF) { "host exited before $what" }
        return JSONObject(line)
    }

    /** Waits until every node is up (each waits for its signer's first attach). */
    fun ready() {
        val up = next("nodes up")
        check(up.has("ok")) { "host failed to start: $up" }
        val list = up.getJSONObject("ok").getJSONArray("nodes")
        nodes = (0 until list.length()).map { list.getJSONObject(it) }.associateBy { it.getString("alias") }
    }

    /** One console request: its `ok` value, or [HostException] with the host's message. */
    fun call(cmd: String, vararg args: Pair<String, Any>): Any {
        val request = JSONObject(mapOf("cmd" to cmd) + args)
        proc.outputStream.write("$request\n".toByteArray())
        proc.outputStream.flush()
        val answer = next("answer to $cmd")
        if (!answer.has("ok")) throw HostException(answer.optString("error", "unknown error"))
        return answer.get("ok")
    }

    fun channels(node: String): JSONArray = call("channels", "node" to node) as JSONArray

    /** Polls [probe] until it returns non-null. */
    fun <T> waitFor(what: String, withinMs: Long = 60_000, probe: () -> T?): T {
        val deadline = System.currentTimeMillis() + withinMs
        while (System.currentTimeMillis() < deadline) {
            try {
                probe()?.let { return it }
            } catch (_: HostException) {
            }
            Thread.sleep(100)
        }
        throw IllegalStateException("timed out waiting for $what")
    }

    /** Funds [payer]'s wallet, opens a channel to [payee], confirms it, waits until usable. */
    fun openChannel(chain: Regtest, payer: String, payee: String, fundSat: Long, channelSat: Long) {
        chain.fund(call("address", "node" to payer) as String, fundSat)
        waitFor("funded wallet") {
            val wallet = (call("balance", "node" to payer) as JSONObject).getJSONObject("wallet")
            wallet.takeIf { it.getLong("confirmed_sat") == fundSat }
        }
        val peer = nodes.getValue(payee)
        call("connect", "node" to payer, "peer" to peer.getString("node_id"), "addr" to peer.getString("addr"))
        call("open", "node" to payer, "peer" to peer.getString("node_id"), "sat" to channelSat)
        waitFor("funding transaction") { channels(payer).optJSONObject(0)?.takeIf { it.getBoolean("funded") } }
        // The broadcast may trail "funded" a little: mine until the channel is usable.
        repeat(20) {
            chain.mine(6)
            try {
                waitFor("usable channel", 3_000) { channels(payer).getJSONObject(0).takeIf { it.getBoolean("usable") } }
                return
            } catch (_: IllegalStateException) {
            }
        }
        error("channel $payer -> $payee never became usable")
    }

    /** Closes the console (clean shutdown) and waits for the process. */
    override fun close() {
        runCatching { proc.outputStream.close() }
        if (!proc.waitFor(30, TimeUnit.SECONDS)) {
            proc.destroyForcibly().waitFor()
        }
    }

    private companion object {
        const val EOF = "\u0000eof"
    }
}
