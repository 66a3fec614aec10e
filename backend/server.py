"""posegpt-serve: the PoseGPT backend, ZeroMQ ROUTER in front of one or more model workers.

    posegpt-serve --checkpoint checkpoints/posegpt-demo              # loopback only, one worker
    posegpt-serve --checkpoint CKPT --workers 2                           # one worker process per GPU
    posegpt-keys --dir keys --clients artist                              # then, for remote use:
    posegpt-serve --checkpoint CKPT --bind tcp://0.0.0.0:5555 --curve --keys-dir keys

One worker runs as a thread of this process; several run as processes (``python -m backend.worker``),
each seeing one GPU, behind the load-balancing broker of backend/broker.py. The wire format is
posegpt_net/wire.py (docs/protocol.md). SIGINT/SIGTERM: held requests get a "server_shutdown" error,
workers stop, exit code 0.

Tests and scripts start it in-process with ``serve_in_thread(checkpoint, ...)``.
"""
from __future__ import annotations

import argparse
import glob
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

import posegpt_net
from posegpt_net import wire

from . import memory
from .broker import Broker, Quotas, WorkerSlot
from .worker import KVBudget, ModelWorker, runtime_loader

log = logging.getLogger("posegpt.server")

DEFAULT_BIND = "tcp://127.0.0.1:5555"
READY_TIMEOUT_S = 300.0       # a 13B checkpoint takes a while to load
WORKER_STOP_TIMEOUT_S = 15.0  # then worker processes are terminated
SEND_LINGER_MS = 1000         # time given to the last error replies to leave at shutdown
SWITCH_INTERVAL_S = 0.0005    # broker and worker threads hand frames over often: don't wait 5 ms for the GIL
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}
IPC_PREFIX = "posegpt-"                # the private folder of the workers' ipc:// endpoint
IO_THREADS = 3                         # libzmq I/O threads (see Server.__init__)
CLIENT_IO_THREADS = 0b011              # ZMQ_AFFINITY of the clients' socket; the decoders' gets 0b100


class ServerError(RuntimeError):
    """The server cannot start (keys missing, no worker could load the model, ...)."""


@dataclass
class ServerOptions:
    checkpoint: str
    bind: str = DEFAULT_BIND
    workers: int = 1
    worker_mode: str = "auto"            # auto: 1 → thread, more → one process each
    curve: bool = False
    keys_dir: str = "keys"
    allow_dir: str | None = None         # default: <keys_dir>/allowed
    limits: wire.Limits = field(default_factory=lambda: wire.DEFAULT_LIMITS)
    max_queue: int = 64
    quotas: Quotas = field(default_factory=Quotas)      # per client, and the images held for the queue
    kv: KVBudget = field(default_factory=KVBudget)      # per worker: the sessions' KV caches
    device: str = "auto"
    dtype: str = "auto"
    devices: list[str] | None = None     # CUDA_VISIBLE_DEVICES entry per worker process
    log_level: str = "INFO"
    ready_timeout_s: float = READY_TIMEOUT_S

    def __post_init__(self):
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.worker_mode not in ("auto", "thread", "process"):
            raise ValueError(f"worker_mode must be auto, thread or process, got {self.worker_mode!r}")


def is_loopback(endpoint: str) -> bool:
    """True for ipc://, inproc:// and tcp:// on a loopback address."""
    scheme = endpoint.split("://", 1)[0]
    if scheme in ("ipc", "inproc"):
        return True
    host = urlsplit(endpoint).hostname or endpoint.split("://", 1)[-1].rsplit(":", 1)[0]
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


def _gpu_slots() -> list[str]:
    """What to put in CUDA_VISIBLE_DEVICES for worker i (cycled); empty on a machine without GPUs."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d for d in visible.split(",") if d.strip()]
    return sorted((p.removeprefix("/dev/nvidia") for p in glob.glob("/dev/nvidia[0-9]*")), key=int)


class Server:
    """Binds the client socket, starts the workers and runs the broker; every call from one thread."""

    def __init__(self, options: ServerOptions, runtime_factory: Callable[[], Any] | None = None):
        self.options = options
        self.runtime_factory = runtime_factory or runtime_loader(options.checkpoint, options.device, options.dtype,
                                                                 options.kv)
        # Three I/O threads: the clients' connections share two, the image decoders' endpoint has its own,
        # so a client's small message never waits behind another's 16 MB photo being read or passed on.
        self.context = zmq.Context(io_threads=IO_THREADS)
        self.address: str | None = None
        self._threads: list[threading.Thread] = []
        self._workers: list[ModelWorker] = []
        self._processes: list[subprocess.Popen] = []
        self._auth: ThreadAuthenticator | None = None
        self._ipc_dir: str | None = None
        self.frontend = self.backend = self.broker = None

    # --- start ---------------------------------------------------------------------------------------

    def start(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        opts = self.options
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        memory.pin_mmap_threshold()          # large frames and tensors go back to the OS when freed
        self.frontend = self.context.socket(zmq.ROUTER)
        self.frontend.linger = SEND_LINGER_MS
        self.frontend.affinity = CLIENT_IO_THREADS
        # frames beyond the image limit are refused by libzmq itself, before Python sees them
        self.frontend.maxmsgsize = max(opts.limits.max_image_bytes, opts.limits.max_header_bytes) + 4096
        if opts.curve:
            self._secure(self.frontend)
        elif not is_loopback(opts.bind):
            warning = (f"WARNING: {opts.bind} is reachable from other machines and CURVE is off: anyone who "
                       f"can reach it can send prompts and images. Use --curve (keys from posegpt-keys).")
            log.warning(warning)
            print(warning, file=sys.stderr, flush=True)
        self.frontend.bind(opts.bind)
        self.address = self.frontend.getsockopt_string(zmq.LAST_ENDPOINT)
        self.backend = self.context.socket(zmq.ROUTER)
        self.backend.linger = 0
        self.backend.router_handover = 1      # a restarted worker takes its identity back at once
        slots = self._start_workers()
        self.broker = Broker(self.frontend, self.backend, slots, opts.limits, opts.max_queue, opts.quotas)
        if not self.broker.wait_ready(opts.ready_timeout_s, should_stop) and not should_stop():
            raise ServerError(f"no model worker became ready within {opts.ready_timeout_s:g} s "
                              f"(checkpoint {opts.checkpoint}); see the log above")
        log.info("listening on %s (workers=%d, curve=%s)", self.address, opts.workers, opts.curve)

    def _secure(self, sock: zmq.Socket) -> None:
        keys_dir = Path(self.options.keys_dir)
        allow_dir = Path(self.options.allow_dir or keys_dir / "allowed")
        secret_file = keys_dir / "server.key_secret"
        if not secret_file.is_file():
            raise ServerError(f"CURVE is on but {secret_file} does not exist; run posegpt-keys --dir {keys_dir}")
        if not allow_dir.is_dir():
            raise ServerError(f"CURVE is on but the allow-list directory {allow_dir} does not exist")
        if not list(allow_dir.glob("*.key")):
            log.warning("the allow-list directory %s holds no public keys: no client can connect", allow_dir)
        public, secret = zmq.auth.load_certificate(str(secret_file))
        self._auth = ThreadAuthenticator(self.context, log=logging.getLogger("posegpt.auth"))
        self._auth.start()
        self._auth.configure_curve(domain="*", location=str(allow_dir))
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_server = True       # plaintext (NULL) peers now fail the handshake

    def _start_workers(self) -> list[WorkerSlot]:
        opts = self.options
        in_threads = opts.worker_mode == "thread" or (opts.worker_mode == "auto" and opts.workers == 1)
        slots = []
        if in_threads:
            endpoint = f"inproc://posegpt-workers-{uuid.uuid4().hex}"
            self.backend.bind(endpoint)
            for i in range(opts.workers):
                worker = ModelWorker(self.runtime_factory, endpoint, f"worker-{i}".encode(), self.context)
                thread = threading.Thread(target=worker.run, name=f"posegpt-worker-{i}", daemon=True)
                thread.start()
                self._workers.append(worker)
                self._threads.append(thread)
                slots.append(WorkerSlot(worker.identity, thread.is_alive))
            return slots
        _remove_stale_ipc_dirs()
        self._ipc_dir = tempfile.mkdtemp(prefix=IPC_PREFIX)      # 0700: other users cannot pose as workers
        Path(self._ipc_dir, "server.pid").write_text(str(os.getpid()))
        endpoint = f"ipc://{self._ipc_dir}/workers.ipc"
        self.backend.bind(endpoint)
        gpus = opts.devices or _gpu_slots()
        env = dict(os.environ)
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")       # see main()
        root = str(Path(posegpt_net.__file__).resolve().parents[1])   # the workers import this tree
        env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])

        def spawn(i: int) -> Callable[[], bool]:
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
            command = [sys.executable, "-m", "backend.worker", "--connect", endpoint, "--identity",
                       f"worker-{i}", "--checkpoint", str(opts.checkpoint), "--device", opts.device,
                       "--dtype", opts.dtype, "--parent-pid", str(os.getpid()), "--log-level", opts.log_level,
                       *opts.kv.args()]
            process = subprocess.Popen(command, env=dict(env))
            if i < len(self._processes):
                self._processes[i].wait()            # reap the dead one
                self._processes[i] = process
            else:
                self._processes.append(process)
            return lambda: process.poll() is None

        for i in range(opts.workers):
            slots.append(WorkerSlot(f"worker-{i}".encode(), spawn(i), respawn=lambda i=i: spawn(i)))
        return slots

    @property
    def worker_pids(self) -> dict[str, int]:
        """Worker name → process id, for worker processes (thread workers share this process)."""
        return {f"worker-{i}": p.pid for i, p in enumerate(self._processes)}

    # --- run and stop --------------------------------------------------------------------------------

    def serve(self, should_stop: Callable[[], bool]) -> None:
        self.broker.run(should_stop)

    def close(self) -> None:
        """Reply to held requests, stop workers, release sockets. Safe after a failed start."""
        if self.broker is not None:
            self.broker.shutdown()
        for worker in self._workers:
            worker.stop()
        for thread in self._threads:
            thread.join(WORKER_STOP_TIMEOUT_S)
        for process in self._processes:
            try:
                process.wait(WORKER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("worker process %d did not stop; terminating it", process.pid)
                process.terminate()
                try:
                    process.wait(WORKER_STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        if self._auth is not None:
            self._auth.stop()
        for sock in (self.backend, self.frontend):
            if sock is not None:
                sock.close()
        if not any(t.is_alive() for t in self._threads):
            self.context.term()
        if self._ipc_dir:
            shutil.rmtree(self._ipc_dir, ignore_errors=True)


def _remove_stale_ipc_dirs() -> None:
    """Remove the worker folders of servers that were killed without cleaning up (SIGKILL, power loss);
    their workers normally do it, this catches the rest. Only this user's folders, of dead processes."""
    for folder in Path(tempfile.gettempdir()).glob(IPC_PREFIX + "*"):
        try:
            if folder.stat().st_uid != os.getuid():
                continue
            pid = int((folder / "server.pid").read_text())
        except (OSError, ValueError):
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            pass


class ServerHandle:
    """A server running in a background thread (tests, demos). ``address``: the bound endpoint."""

    def __init__(self, server: Server):
        self.server = server
        self.address: str | None = None
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="posegpt-server", daemon=True)

    def _run(self) -> None:
        try:
            self.server.start(self._stop.is_set)
            self.address = self.server.address
            self._started.set()
            self.server.serve(self._stop.is_set)
        except BaseException as exc:  # reported to the starting thread
            self.error = exc
        finally:
            self._started.set()
            self.server.close()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def serve_in_thread(checkpoint: str | os.PathLike, bind: str = "tcp://127.0.0.1:*", workers: int = 1, *,
                    runtime_factory: Callable[[], Any] | None = None, **options) -> ServerHandle:
    """Start a server in a background thread and return once its workers are ready.

    ``bind`` defaults to a free loopback port (``handle.address`` says which). ``options``: the other
    ``ServerOptions`` fields. ``runtime_factory``: serve an already built runtime (thread workers only)."""
    server = Server(ServerOptions(str(checkpoint), bind=bind, workers=workers, **options), runtime_factory)
    handle = ServerHandle(server)
    handle._thread.start()
    handle._started.wait()
    if handle.error is not None:
        handle.stop()
        raise handle.error
    return handle


# --- command line ----------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    d = wire.DEFAULT_LIMITS
    parser = argparse.ArgumentParser(
        prog="posegpt-serve", description="Serve a PoseGPT checkpoint over ZeroMQ (protocol: docs/protocol.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="project checkpoint directory")
    parser.add_argument("--bind", default=DEFAULT_BIND, help="endpoint to listen on (loopback by default)")
    parser.add_argument("--workers", type=int, default=1, help="model workers; more than one run as processes, "
                                                               "one per GPU")
    parser.add_argument("--devices", default=None, help="comma-separated CUDA device per worker process "
                                                        "(default: every visible GPU, cycled)")
    parser.add_argument("--device", default="auto", help="torch device inside each worker")
    parser.add_argument("--dtype", default="auto", help="model dtype (auto, float32, bfloat16, float16)")
    parser.add_argument("--curve", action=argparse.BooleanOptionalAction, default=False,
                        help="encrypt and authenticate with CURVE (keys from posegpt-keys)")
    parser.add_argument("--keys-dir", default="keys", help="directory holding server.key_secret")
    parser.add_argument("--allow-dir", default=None, help="public keys of allowed clients "
                                                          "(default: KEYS_DIR/allowed)")
    limits = parser.add_argument_group("limits (checked before anything is decoded)")
    limits.add_argument("--max-images", type=int, default=d.max_images)
    limits.add_argument("--max-image-bytes", type=int, default=d.max_image_bytes)
    limits.add_argument("--max-image-pixels", type=int, default=d.max_image_pixels)
    limits.add_argument("--max-image-side", type=int, default=d.max_image_side)
    limits.add_argument("--max-prompt-chars", type=int, default=d.max_prompt_chars)
    limits.add_argument("--max-header-bytes", type=int, default=d.max_header_bytes)
    limits.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    limits.add_argument("--max-queue", type=int, default=64, help="requests waiting for a worker, all clients")
    q = Quotas()
    fair = parser.add_argument_group("sharing (per client: its CURVE key, else its connection)")
    fair.add_argument("--client-queue", type=int, default=q.client_queued,
                      help="requests one client may have waiting; more are answered busy with a retry hint")
    fair.add_argument("--client-running", type=int, default=q.client_running,
                      help="requests of one client that run at once while another client waits")
    fair.add_argument("--max-queued-image-bytes", type=int, default=q.queued_image_bytes,
                      help="image bytes held for waiting requests, all clients (one client: half of it)")
    fair.add_argument("--decode-processes", type=int, default=q.decode_processes, help="processes decoding images (at low priority)")
    kv = parser.add_argument_group("KV cache (per worker; least recently used caches are evicted and rebuilt)")
    kv.add_argument("--kv-budget-tokens", type=int, default=None,
                    help="tokens of context all sessions' caches may hold (default: from --kv-budget-gb)")
    kv.add_argument("--kv-budget-gb", type=float, default=None,
                    help="GiB of KV cache (default: 40%% of the device memory free after the model loads)")
    kv.add_argument("--max-sessions", type=int, default=KVBudget.max_sessions,
                    help="sessions holding a KV cache at once")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def options_from_args(args: argparse.Namespace) -> ServerOptions:
    limits = wire.Limits(max_frames=4 + args.max_images, max_header_bytes=args.max_header_bytes,
                         max_images=args.max_images, max_image_bytes=args.max_image_bytes,
                         max_image_pixels=args.max_image_pixels, max_image_side=args.max_image_side,
                         max_prompt_chars=args.max_prompt_chars, max_new_tokens=args.max_new_tokens)
    devices = [d.strip() for d in args.devices.split(",")] if args.devices else None
    return ServerOptions(args.checkpoint, bind=args.bind, workers=args.workers, curve=args.curve,
                         keys_dir=args.keys_dir, allow_dir=args.allow_dir, limits=limits,
                         max_queue=args.max_queue, device=args.device, dtype=args.dtype, devices=devices,
                         log_level=args.log_level,
                         quotas=Quotas(args.client_queue, args.client_running, args.max_queued_image_bytes,
                                       decode_processes=args.decode_processes),
                         kv=KVBudget(args.kv_budget_tokens, args.kv_budget_gb, args.max_sessions))


def main(argv: list[str] | None = None) -> int:
    # Spinning OpenMP threads (torch's CPU pool) starve the broker and worker threads between model calls:
    # measured here, a 2 ms server-side overhead grew to 9-11 ms. Set before torch loads; users may override.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        options = options_from_args(args)
    except ValueError as exc:
        print(f"posegpt-serve: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: (log.info("signal %d: shutting down", signum), stop.set()))
    server = Server(options)
    try:
        server.start(stop.is_set)
        print(f"posegpt-serve: listening on {server.address}", flush=True)
        server.serve(stop.is_set)
    except ServerError as exc:
        log.error("%s", exc)
        return 1
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
