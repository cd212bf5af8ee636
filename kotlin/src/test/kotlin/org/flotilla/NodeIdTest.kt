package org.flotilla

import java.io.File
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

/** The shared vectors (computed outside Flotilla with a BIP32 library), loaded through JNA. */
class NodeIdTest {
    private fun vectors(): List<Pair<ByteArray, String>> {
        val path = System.getProperty("flotilla.vectors") ?: error("flotilla.vectors is not set")
        return File(path).readLines()
            .map { it.trim() }
            .filter { it.isNotEmpty() && !it.startsWith("#") }
            .map { line ->
                val (seed, id) = line.split(Regex("\\s+"))
                seed.chunked(2).map { it.toInt(16).toByte() }.toByteArray() to id
            }
    }

    @Test
    fun zeroSeedKnownValue() {
        assertEquals(
            "027f921585f2ac0c7c70e36110adecfd8fd14b8a99bfb3d000a283fcac358fce88",
            nodeIdFromSeed(ByteArray(32)),
        )
    }

    @Test
    fun sharedVectors() {
        val vectors = vectors()
        assertTrue(vectors.size >= 5, "too few vectors")
        for ((seed, expected) in vectors) {
            assertEquals(expected, nodeIdFromSeed(seed))
        }
    }

    @Test
    fun wrongLengthsRaiseInvalidSeed() {
        for (len in listOf(0, 1, 31, 33, 64)) {
            val e = assertThrows<FlotillaException.InvalidSeed> { nodeIdFromSeed(ByteArray(len)) }
            assertTrue(e.message!!.contains("got $len"), e.message)
        }
    }
}
