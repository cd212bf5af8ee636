"""Drives a real host for binding tests: btcd regtest and `flotilla host` as OS processes, the
host's JSON-lines console over pipes. The signers are the tests' own (the bindings)."""

import json
import os
import queue
import socket
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ANSWER_TIMEOUT_S = 120


def flotilla_bin() -> Path:
    """The `flotilla` binary: $FLOTILLA_BIN (scripts/bindings.sh sets it), else the release build."""
    path = Path(os.environ.get("FLOTILLA_BIN", ROOT / "target" / "release" / "flotilla"))
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: cargo build --release -p flotilla")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Regtest:
    """`flotilla regtest up` in `dir` (btcd in the background) until `down`."""

    def __init__(self, dir: Path):
        self.dir = dir
        self._run("up")

    def _run(self, *args: str) -> str:
        done = subprocess.run(
            [str(flotilla_bin()), "regtest", *args, "--dir", str(self.dir)],
            capture_output=True, text=True, timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(f"regtest {args}: {done.stderr.strip()}")
        return done.stdout

    @property
    def chain_json(self) -> Path:
        return self.dir / "regtest.json"

    def mine(self, blocks: int) -> None:
        self._run("mine", str(blocks))

    def fund(self, address: str, sat: int) -> None:
        """Pays `sat` to `address` and confirms it in one block."""
        self._run("fund", address, str(sat))

    def down(self) -> None:
        self._run("down")


class HostError(Exception):
    """The host answered a console request with an error."""


class Host:
    """`flotilla host --config` for `nodes` ({alias: node id}); its hub listens on loopback."""

    def __init__(self, dir: Path, chain_json: Path, nodes: dict[str, str]):
        config = dir / "host.json"
        config.write_text(json.dumps({
            "db": str(dir / "host.db"),
            "chain": str(chain_json),
            "hub_listen": f"127.0.0.1:{free_port()}",
            "tls_dir": str(dir / "hub-tls"),
            "nodes": [{"alias": a, "node_id": n} for a, n in nodes.items()],
        }))
        self._proc = subprocess.Popen(
            [str(flotilla_bin()), "host", "--config", str(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self._lines: "queue.Queue[str | None]" = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        hello = self._next("hub listening")["ok"]
        self.hub_url: str = hello["hub"]
        self.ca_pem: str = Path(hello["ca_file"]).read_text()
        self.nodes: dict[str, dict] = {}

    def _read(self) -> None:
        for line in self._proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _next(self, what: str) -> dict:
        try:
            line = self._lines.get(timeout=ANSWER_TIMEOUT_S)
        except queue.Empty:
            raise TimeoutError(f"host: no {what} within {ANSWER_TIMEOUT_S} s") from None
        if line is None:
            raise RuntimeError(f"host exited (code {self._proc.wait()}) before {what}")
        return json.loads(line)

    def ready(self) -> None:
        """Waits until every node is up (each waits for its signer's first attach)."""
        up = self._next("nodes up")
        if "ok" not in up:
            raise HostError(f"host failed to start: {up}")
        self.nodes = {n["alias"]: n for n in up["ok"]["nodes"]}

    def call(self, cmd: str, **args):
        """One console request; its `ok` value, or HostError with the host's message."""
        self._proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self._proc.stdin.flush()
        answer = self._next(f"answer to {cmd}")
        if "ok" not in answer:
            raise HostError(answer.get("error", "unknown error"))
        return answer["ok"]

    def wait_for(self, what: str, cmd: str, ok, within_s: float = 60, **args):
        """Polls `cmd` until `ok(answer)` holds."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            try:
                answer = self.call(cmd, **args)
                if ok(answer):
                    return answer
            except HostError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"timed out waiting for {what}")

    def open_channel(self, chain: Regtest, payer: str, payee: str, fund_sat: int, channel_sat: int):
        """Funds `payer`'s wallet, opens a channel to `payee`, confirms it, waits until usable."""
        chain.fund(self.call("address", node=payer), fund_sat)
        self.wait_for("funded wallet", "balance",
                      lambda b: b["wallet"]["confirmed_sat"] == fund_sat, node=payer)
        peer = self.nodes[payee]
        self.call("connect", node=payer, peer=peer["node_id"], addr=peer["addr"])
        self.call("open", node=payer, peer=peer["node_id"], sat=channel_sat)
        self.wait_for("funding transaction", "channels", lambda c: c and c[0]["funded"], node=payer)
        # The broadcast may trail "funded" a little: mine until the channel is usable.
        for _ in range(20):
            chain.mine(6)
            try:
                self.wait_for("usable channel", "channels", lambda c: c[0]["usable"], node=payer,
                              within_s=3)
                return
            except TimeoutError:
                pass
        raise TimeoutError(f"channel {payer} -> {payee} never became usable")

    def close(self) -> None:
        """Closes the console (clean shutdown) and waits for the process."""
        try:
            self._proc.stdin.close()
            self._proc.wait(timeout=30)
        except Exception:
            self._proc.kill()
            self._proc.wait()
