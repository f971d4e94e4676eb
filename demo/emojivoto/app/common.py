"""Shared pieces of the emojivoto demo services: the emoji catalogue, the gRPC API built
at run time from proto/emojivoto.proto, addresses, logging, signals and readiness.

How the gRPC code is made: there is no generated code. `protoc --descriptor_set_out`
(Debian's protobuf-compiler) compiles the .proto once per process start into a temporary
file; message classes come from a protobuf DescriptorPool, servers register
grpc.method_handlers_generic_handler() and clients call channel.unary_unary() with the
method paths read from the service descriptors. This needs only protoc and the runtime
libraries (python3-grpcio, python3-protobuf), keeps the .proto the single source of truth,
and avoids Debian's python3-grpc-tools, whose bundled 2018 code generator emits a legacy
style of module that newer protobuf runtimes refuse.

Runs on Debian's /usr/bin/python3.
"""

import argparse
import datetime
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Callable, Dict, NamedTuple, Optional, Tuple

# gRPC's default c-ares resolver does not always honour /etc/hosts; the pods of the local
# cluster resolve each other's names through a bind-mounted /etc/hosts, so use the
# system resolver. Must be set before grpc is imported.
os.environ.setdefault("GRPC_DNS_RESOLVER", "native")

import grpc  # noqa: E402  (after the environment above)
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # noqa: E402

DEFAULT_PROTO = Path(__file__).resolve().parent.parent / "proto" / "emojivoto.proto"
PACKAGE = "emojivoto.v1"
EMOJI_SERVICE = PACKAGE + ".EmojiService"
VOTING_SERVICE = PACKAGE + ".VotingService"

# Every RPC the services make carries a deadline; this is the default.
DEFAULT_RPC_TIMEOUT_S = 2.0
# After a GOAWAY, how long a connection may still finish the calls it has in flight.
CONNECTION_AGE_GRACE_S = 5.0


class StartupError(Exception):
    """A configuration or start-up failure: reported in one line, exit code 2."""


# --- the catalogue -------------------------------------------------------------------


class Emoji(NamedTuple):
    shortcode: str  # ":doughnut:"
    unicode: str  # the character


# A selection of the original emojivoto's catalogue, in display order. VotingService in
# the .proto has exactly one Vote<Name> method per entry (see vote_method_name).
CATALOG: Tuple[Emoji, ...] = (
    Emoji(":joy:", "\U0001F602"),
    Emoji(":sunglasses:", "\U0001F60E"),
    Emoji(":doughnut:", "\U0001F369"),
    Emoji(":stuck_out_tongue_winking_eye:", "\U0001F61C"),
    Emoji(":money_mouth_face:", "\U0001F911"),
    Emoji(":flushed:", "\U0001F633"),
    Emoji(":nerd_face:", "\U0001F913"),
    Emoji(":ghost:", "\U0001F47B"),
    Emoji(":poop:", "\U0001F4A9"),
    Emoji(":see_no_evil:", "\U0001F648"),
    Emoji(":thumbsup:", "\U0001F44D"),
    Emoji(":clap:", "\U0001F44F"),
    Emoji(":pray:", "\U0001F64F"),
    Emoji(":rainbow:", "\U0001F308"),
    Emoji(":pizza:", "\U0001F355"),
    Emoji(":beer:", "\U0001F37A"),
    Emoji(":rocket:", "\U0001F680"),
    Emoji(":fire:", "\U0001F525"),
    Emoji(":tada:", "\U0001F389"),
    Emoji(":100:", "\U0001F4AF"),
)
CATALOG_BY_SHORTCODE: Dict[str, Emoji] = {e.shortcode: e for e in CATALOG}
DOUGHNUT = ":doughnut:"


def vote_method_name(shortcode: str) -> str:
    """":money_mouth_face:" -> "VoteMoneyMouthFace", ":100:" -> "Vote100"."""
    words = shortcode.strip(":").split("_")
    return "Vote" + "".join(word[:1].upper() + word[1:] for word in words)


# --- the gRPC API, from the .proto ---------------------------------------------------


def _compile_proto(proto: Path) -> bytes:
    """The serialized FileDescriptorSet of `proto` (with its imports), made by protoc."""
    protoc = os.environ.get("PROTOC") or shutil.which("protoc") or "/usr/bin/protoc"
    if not os.access(protoc, os.X_OK):
        raise StartupError("protoc not found (install Debian's protobuf-compiler, "
                           "or set PROTOC)")
    if not proto.is_file():
        raise StartupError(f"no such proto file: {proto}")
    with tempfile.TemporaryDirectory(prefix="emojivoto-proto-") as scratch:
        output = Path(scratch) / "descriptors.pb"
        try:
            result = subprocess.run(
                [protoc, f"--proto_path={proto.parent}", f"--descriptor_set_out={output}",
                 "--include_imports", proto.name],
                capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise StartupError(f"cannot run {protoc}: {error}") from error
        if result.returncode != 0:
            raise StartupError(f"protoc failed on {proto}: {result.stderr.strip()}")
        return output.read_bytes()


def _message_class(descriptor, pool):
    # GetMessageClass replaced MessageFactory.GetPrototype in newer protobuf releases;
    # Debian 12 ships the older API.
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(descriptor)
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)


class Api:
    """Message classes, stubs and server handlers for the services of one .proto."""

    def __init__(self, proto: Path = DEFAULT_PROTO):
        descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(_compile_proto(proto))
        self._pool = descriptor_pool.DescriptorPool()
        for file_proto in descriptor_set.file:
            self._pool.AddSerializedFile(file_proto.SerializeToString())
        self._classes: Dict[str, type] = {}
        for name in (EMOJI_SERVICE, VOTING_SERVICE):
            for method in self.service(name).methods:
                if method.client_streaming or method.server_streaming:
                    raise StartupError(f"{name}/{method.name}: only unary methods are served")

    def service(self, full_name: str):
        try:
            return self._pool.FindServiceByName(full_name)
        except KeyError as error:
            raise StartupError(f"the proto defines no service {full_name}") from error

    def message(self, name: str) -> type:
        """The class of message `name` (short, e.g. "Emoji", or fully qualified)."""
        full_name = name if "." in name else f"{PACKAGE}.{name}"
        if full_name not in self._classes:
            self._classes[full_name] = _message_class(
                self._pool.FindMessageTypeByName(full_name), self._pool)
        return self._classes[full_name]

    def stub(self, channel: grpc.Channel, service_name: str) -> "Stub":
        return Stub(self, channel, service_name)

    def generic_handler(self, service_name: str,
                        implementations: Dict[str, Callable]) -> grpc.GenericRpcHandler:
        """Serves `implementations` (method name -> fn(request, context) -> response).

        They must cover the service's methods exactly: a method of the .proto without an
        implementation would answer UNIMPLEMENTED at run time, so it fails start-up.
        """
        service = self.service(service_name)
        declared = {method.name for method in service.methods}
        missing = sorted(declared - implementations.keys())
        unknown = sorted(implementations.keys() - declared)
        if missing or unknown:
            raise StartupError(f"{service_name}: methods in the proto but not implemented: "
                               f"{missing or 'none'}; implemented but not in the proto: "
                               f"{unknown or 'none'}")
        handlers = {}
        for method in service.methods:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                implementations[method.name],
                request_deserializer=self.message(method.input_type.full_name).FromString,
                response_serializer=self.message(
                    method.output_type.full_name).SerializeToString)
        return grpc.method_handlers_generic_handler(service.full_name, handlers)


class Stub:
    """A client of one service: one callable attribute per method, as generated stubs
    have (stub.ListAll(request, timeout=2.0))."""

    def __init__(self, api: Api, channel: grpc.Channel, service_name: str):
        service = api.service(service_name)
        self.method_names = frozenset(method.name for method in service.methods)
        for method in service.methods:
            setattr(self, method.name, channel.unary_unary(
                f"/{service.full_name}/{method.name}",
                request_serializer=api.message(method.input_type.full_name).SerializeToString,
                response_deserializer=api.message(method.output_type.full_name).FromString))


# Clients ignore http_proxy/https_proxy (the services talk pod to pod, never through a
# proxy), and reconnect quickly after a peer restarts or a connection is replaced:
# gRPC's default reconnect backoff grows to two minutes.
CHANNEL_OPTIONS = [
    ("grpc.enable_http_proxy", 0),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


def insecure_channel(address: str) -> grpc.Channel:
    return grpc.insecure_channel(address, options=CHANNEL_OPTIONS)


class GrpcServer:
    """A started gRPC server with its worker pool; stop() ends both."""

    def __init__(self, listen: str, handlers, *, workers: int, max_concurrent_rpcs: int,
                 max_connection_age_s: float):
        host, _ = parse_hostport(listen)
        # SO_REUSEPORT is on by default in gRPC: a second server on a busy port would then
        # start "successfully" and share the port. Binding must fail loudly instead.
        options = [("grpc.so_reuseport", 0)]
        if max_connection_age_s > 0:
            # Clients get a GOAWAY after this age and reconnect. Long-lived HTTP/2
            # connections would otherwise keep whatever path they were opened on forever,
            # e.g. stay unmeshed after the mesh is turned on for running pods.
            options += [
                ("grpc.max_connection_age_ms", int(max_connection_age_s * 1000)),
                ("grpc.max_connection_age_grace_ms", int(CONNECTION_AGE_GRACE_S * 1000)),
            ]
        self._executor = futures.ThreadPoolExecutor(max_workers=workers,
                                                    thread_name_prefix="rpc")
        self._server = grpc.server(self._executor, handlers=handlers, options=options,
                                   maximum_concurrent_rpcs=max_concurrent_rpcs)
        try:
            port = self._server.add_insecure_port(listen)
        except RuntimeError:  # newer grpcio raises; older returns 0
            port = 0
        if port == 0:
            self._server.stop(grace=None)
            self._executor.shutdown(wait=True)
            raise StartupError(f"cannot listen on {listen} (address in use or invalid?)")
        self.address = format_hostport(host, port)
        self._server.start()

    def stop(self, grace_s: float = CONNECTION_AGE_GRACE_S) -> None:
        """Refuses new calls, lets calls in flight finish for up to `grace_s`, then
        cancels the rest and joins the worker threads."""
        self._server.stop(grace=grace_s).wait(timeout=grace_s + 5)
        self._executor.shutdown(wait=True)


# --- addresses -----------------------------------------------------------------------


def parse_hostport(text: str) -> Tuple[str, int]:
    """"10.77.0.12:8080" -> ("10.77.0.12", 8080); IPv6 as "[::1]:8080". Port 0 means any
    free port. Raises StartupError."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise StartupError(f"bad address {text!r}: expected HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise StartupError(f"bad address {text!r}: write IPv6 hosts as [ADDR]:PORT")
    return host, int(port_text)


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def address_arg(text: str) -> str:
    """argparse type: validates HOST:PORT and keeps the text."""
    try:
        parse_hostport(text)
    except StartupError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return text


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def add_grpc_server_flags(parser: argparse.ArgumentParser) -> None:
    """The flags emoji and voting share."""
    parser.add_argument("--listen", type=address_arg, default="0.0.0.0:8080",
                        help="HOST:PORT to serve gRPC on; port 0 picks a free one "
                             "(default 0.0.0.0:8080)")
    parser.add_argument("--ready-file", metavar="PATH",
                        help="once serving, write the bound HOST:PORT here (atomically); "
                             "removed again at exit")
    parser.add_argument("--max-connection-age", type=positive_float, default=10.0,
                        metavar="SECONDS",
                        help="send clients GOAWAY after this long so they reconnect; "
                             "0 keeps connections forever (default 10)")
    parser.add_argument("--workers", type=positive_int, default=8,
                        help="threads serving calls (default 8)")
    parser.add_argument("--proto", type=Path, default=DEFAULT_PROTO,
                        help=f"the API definition (default {DEFAULT_PROTO})")
    add_logging_flag(parser)


# --- logging, signals, readiness, exit -----------------------------------------------


class _UtcFormatter(logging.Formatter):
    def formatTime(self, record, datefmt=None):  # noqa: N802 (logging's API)
        moment = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def setup_logging(service: str, level: str) -> logging.Logger:
    """One line per record on stdout: "<UTC time> <service> <LEVEL> <message>"."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_UtcFormatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    return logging.getLogger(service)


def add_logging_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "info"),
                        choices=("debug", "info", "warning", "error"),
                        help="default: $LOG_LEVEL or info")


class StopEvent(threading.Event):
    """Set by SIGTERM or SIGINT; signal_name says which came first."""

    signal_name: Optional[str] = None


def stop_on_signals() -> StopEvent:
    """Installs the handlers. The handler only records the signal (logging from it could
    re-enter a log call the main thread is in the middle of); the main thread polls the
    event (Event.wait with a timeout, so the handler always gets to run) and logs."""
    stop = StopEvent()

    def on_signal(signum, _frame):
        if stop.signal_name is None:
            stop.signal_name = signal.Signals(signum).name
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def wait_until_stopped(stop: StopEvent, log: logging.Logger) -> None:
    while not stop.wait(timeout=0.5):
        pass
    log.info("received %s, stopping", stop.signal_name or "a stop request")


def write_ready_file(path: Optional[str], address: str) -> None:
    """Writes "<address>\\n" to `path` atomically (temp file + rename), so a reader that
    sees the file sees all of it."""
    if not path:
        return
    temporary = f"{path}.tmp.{os.getpid()}"
    with open(temporary, "w", encoding="ascii") as out:
        out.write(address + "\n")
    os.replace(temporary, path)


def remove_ready_file(path: Optional[str]) -> None:
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def check_threads_finished(log: logging.Logger, timeout_s: float = 3.0) -> bool:
    """Waits briefly for every thread but this one to end and says which did not.
    gRPC's own helper threads take a moment to notice their server or channel closed."""
    deadline = time.monotonic() + timeout_s
    while True:
        others = [thread for thread in threading.enumerate()
                  if thread is not threading.current_thread() and thread.is_alive()]
        if not others or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    if others:
        log.warning("threads still running at exit: %s",
                    ", ".join(sorted(thread.name for thread in others)))
        return False
    return True


def run_main(service: str, main: Callable[[], None]) -> None:
    """Runs a service's main; a StartupError becomes one line on stderr and exit code 2."""
    try:
        main()
    except StartupError as error:
        print(f"{service}: {error}", file=sys.stderr, flush=True)
        sys.exit(2)
