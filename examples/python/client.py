#!/usr/bin/python3
"""A Python client of esd built from the repository's .proto files alone.

It generates the Python stubs into a temporary directory first (with
protoc and grpc_python_plugin, see generate_stubs), then appends with
expected revisions, provokes a conflict and decodes the error details,
reads the stream back and subscribes (history, then a live event). It
prints each step and exits 1 when anything differs from what esd documents.

    /usr/bin/python3 client.py [host:port]   (default $ESD_ADDR or 127.0.0.1:7400)

On Debian 12: apt-get install python3-grpcio protobuf-compiler-grpc.
"""

import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

try:
    import grpc
except ImportError:
    sys.exit("client.py: the grpc module is missing (Debian: apt-get install python3-grpcio; run with /usr/bin/python3)")

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
INCLUDE = [os.path.join(ROOT, "proto"), os.path.join(ROOT, "third_party", "proto")]
PROTOS = [
    "esd/v1/events.proto",
    "esd/v1/errors.proto",
    "esd/v1/stream_service.proto",
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
]
CALL_TIMEOUT = 10  # seconds, each call


class Mismatch(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise Mismatch(msg)


def generate_stubs(out):
    """Runs protoc on the published protos into out.

    Debian 12's python3-grpc-tools bundles protoc 3.5.1, older than proto3
    `optional` (protoc 3.15), so the stubs come from Debian's protoc 3.21
    and its gRPC plugin; `python3 -m grpc_tools.protoc` from a recent pip
    grpcio-tools takes the same arguments without --plugin. The
    google/protobuf well-known types come with protoc and python3-protobuf.
    """
    protoc = os.environ.get("PROTOC") or shutil.which("protoc")
    plugin = os.environ.get("GRPC_PYTHON_PLUGIN") or shutil.which("grpc_python_plugin")
    if not protoc or not plugin:
        raise SystemExit(
            "client.py: protoc and grpc_python_plugin are needed to generate the stubs "
            "(Debian: apt-get install protobuf-compiler-grpc; or set PROTOC and GRPC_PYTHON_PLUGIN)"
        )
    args = [protoc, f"--plugin=protoc-gen-grpc_python={plugin}", f"--python_out={out}", f"--grpc_python_out={out}"]
    args += [f"-I{d}" for d in INCLUDE] + PROTOS
    subprocess.run(args, check=True)


def event(pb, typ, body):
    return pb.ProposedEvent(type=typ, data=json.dumps(body).encode(), content_type="application/json")


def status_details(err, modules):
    """Decodes the google.rpc.Status of a failed call (the
    grpc-status-details-bin trailer) and each of its details, by type name."""
    status_pb2, error_details_pb2, errors_pb2 = modules
    bins = [v for k, v in (err.trailing_metadata() or ()) if k == "grpc-status-details-bin"]
    if not bins:
        return None
    st = status_pb2.Status.FromString(bins[0])
    known = {
        m.DESCRIPTOR.full_name: m
        for m in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest, errors_pb2.WrongExpectedRevision)
    }
    details = {}
    for any_ in st.details:
        name = any_.TypeName()
        if name in known:
            msg = known[name]()
            any_.Unpack(msg)
            details[name] = msg
    return details


def run(addr):
    events_pb2 = importlib.import_module("esd.v1.events_pb2")
    errors_pb2 = importlib.import_module("esd.v1.errors_pb2")
    pb = importlib.import_module("esd.v1.stream_service_pb2")
    pb_grpc = importlib.import_module("esd.v1.stream_service_pb2_grpc")
    status_pb2 = importlib.import_module("google.rpc.status_pb2")
    error_details_pb2 = importlib.import_module("google.rpc.error_details_pb2")
    from google.protobuf import empty_pb2

    stream = f"order-python-{time.time_ns()}-{os.getpid()}"
    print(f"esd {addr}, stream {stream}", flush=True)
    with grpc.insecure_channel(addr) as channel:
        client = pb_grpc.StreamServiceStub(channel)

        # 1. Create the stream: it must not exist yet.
        res = client.Append(
            pb.AppendRequest(stream=stream, no_stream=empty_pb2.Empty(), events=[event(events_pb2, "OrderPlaced", {"total": 42})]),
            timeout=CALL_TIMEOUT,
        )
        expect(res.first_revision == 0 and res.last_revision == 0, f"first append: revision {res.last_revision}, want 0")
        print(f"appended OrderPlaced at revision {res.last_revision} (expected no_stream)", flush=True)

        # 2. Append at the head we know.
        res = client.Append(
            pb.AppendRequest(stream=stream, exact=0, events=[event(events_pb2, "OrderPaid", {"amount": 42})]),
            timeout=CALL_TIMEOUT,
        )
        expect(res.last_revision == 1, f"second append: revision {res.last_revision}, want 1")
        print(f"appended OrderPaid at revision {res.last_revision} (expected revision 0)", flush=True)

        # 3. A stale writer: still expects revision 0.
        try:
            client.Append(
                pb.AppendRequest(stream=stream, exact=0, events=[event(events_pb2, "OrderCancelled", {})]),
                timeout=CALL_TIMEOUT,
            )
            raise Mismatch("an append expecting revision 0 at head 1 succeeded")
        except grpc.RpcError as err:
            expect(err.code() == grpc.StatusCode.ABORTED, f"conflict: {err.code()} ({err.details()}), want ABORTED")
            details = status_details(err, (status_pb2, error_details_pb2, errors_pb2))
            expect(details is not None, "conflict: no grpc-status-details-bin trailer")
            info = details.get("google.rpc.ErrorInfo")
            wrong = details.get("esd.v1.WrongExpectedRevision")
            expect(info is not None and info.domain == "esd" and info.reason == "WRONG_EXPECTED_REVISION", f"conflict: ErrorInfo {info}")
            expect(info.metadata.get("stream") == stream, f"conflict: ErrorInfo metadata {dict(info.metadata)}")
            expect(wrong is not None, f"conflict: no esd.v1.WrongExpectedRevision among {list(details)}")
            expect(wrong.actual_head == 1 and wrong.stream_exists, f"conflict: actual_head {wrong.actual_head}, want 1")
            expect(
                wrong.expected.WhichOneof("kind") == "exact" and wrong.expected.exact == 0,
                f"conflict: expected {wrong.expected}",
            )
            since = [f"{e.revision} {e.type}" for e in wrong.events_since]
            expect(since == ["1 OrderPaid"], f"conflict: events_since {since}, want ['1 OrderPaid']")
            print(
                f"conflict: ABORTED reason {info.reason} actual_head {wrong.actual_head} "
                f"expected exact {wrong.expected.exact} events_since [{', '.join(since)}]",
                flush=True,
            )

        # 4. Read the stream back.
        read = [
            e
            for chunk in client.ReadStream(
                pb.ReadStreamRequest(stream=stream, direction=events_pb2.READ_DIRECTION_FORWARD), timeout=CALL_TIMEOUT
            )
            for e in chunk.events
        ]
        got = [f"{e.revision} {e.type} {e.data.decode()}" for e in read]
        expect(got == ['0 OrderPlaced {"total": 42}', '1 OrderPaid {"amount": 42}'], f"read: {got}")
        print(f"read {len(read)} events: {', '.join(f'{e.revision} {e.type}' for e in read)}", flush=True)

        # 5. Subscribe from the start: the history, caught_up, then a live event.
        call = client.Subscribe(pb.SubscribeRequest(stream=stream, start=empty_pb2.Empty()), timeout=CALL_TIMEOUT)
        history, live, caught_up = [], [], False
        try:
            for msg in call:
                kind = msg.WhichOneof("content")
                if kind == "events":
                    (live if caught_up else history).extend(f"{e.revision} {e.type}" for e in msg.events.events)
                    if live:
                        break
                elif kind == "caught_up":
                    caught_up = True
                    expect(history == ["0 OrderPlaced", "1 OrderPaid"], f"subscribe: history {history}")
                    print(f"subscribe: caught up after {len(history)} events", flush=True)
                    client.Append(
                        pb.AppendRequest(stream=stream, exact=1, events=[event(events_pb2, "OrderShipped", {})]),
                        timeout=CALL_TIMEOUT,
                    )
                elif kind == "ended":
                    raise Mismatch(f"subscribe: ended early ({msg.ended.reason})")
        finally:
            call.cancel()
        expect(live == ["2 OrderShipped"], f"subscribe: live {live}, want ['2 OrderShipped']")
        print(f"subscribe: live event {live[0].split()[1]} at revision {live[0].split()[0]}", flush=True)
    print("ok", flush=True)


def main():
    addr = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("ESD_ADDR", "127.0.0.1:7400")
    out = tempfile.mkdtemp(prefix="esd-python-stubs-")
    try:
        generate_stubs(out)
        sys.path.insert(0, out)
        run(addr)
    except Mismatch as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
