"""A gRPC peer for the gateway's tests, on grpcio (Python), with raw-bytes
methods so no protobuf code is generated.

  grpc_peer.py serve PORT        serve test.Echo on 127.0.0.1:PORT (h2c),
                                 with grpc.health.v1 (grpcio-health-checking)
                                 reporting SERVING for "" and "test.Echo"
                                 until a line "not_serving" on standard input
                                 ("serving" turns it back); a line
                                 "unavailable" makes Unary fail with
                                 UNAVAILABLE ("available" turns it back);
                                 prints "ready" once listening
  grpc_peer.py call TARGET JSON  run the calls JSON lists (each
                                 {"method", "kind", "requests", "timeout"})
                                 through TARGET, print one JSON result each

Methods of test.Echo: Unary (echo), ServerStream (request "N": N
replies), ClientStream (joins the requests), Bidi (echoes each), Slow
(sleeps 2 s), Remaining (replies with the deadline left, in seconds, as
the server saw it). Every reply carries trailing metadata
x-trace-bin = 00 01 02 ff.
"""
import json
import sys
import time
from concurrent import futures

import threading

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

TRAILER = (("x-trace-bin", b"\x00\x01\x02\xff"),)
STATE = {"unavailable": False}


def unary(request, context):
    if STATE["unavailable"]:
        context.abort(grpc.StatusCode.UNAVAILABLE, "backend unavailable")
    context.set_trailing_metadata(TRAILER)
    return request


def server_stream(request, context):
    context.set_trailing_metadata(TRAILER)
    for i in range(int(request.decode())):
        yield f"m{i}".encode()


def client_stream(requests, context):
    context.set_trailing_metadata(TRAILER)
    return b"".join(requests)


def bidi(requests, context):
    context.set_trailing_metadata(TRAILER)
    for r in requests:
        yield r


def slow(request, context):
    time.sleep(2)
    return request


def remaining(request, context):
    left = context.time_remaining()
    return ("none" if left is None else f"{left:.3f}").encode()


def serve(port):
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
        "Remaining": grpc.unary_unary_rpc_method_handler(remaining),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
    checks = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    serving = health_pb2.HealthCheckResponse.SERVING
    for name in ("", "test.Echo"):
        checks.set(name, serving)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)

    def control():
        for line in sys.stdin:
            if line.strip() in ("unavailable", "available"):
                STATE["unavailable"] = line.strip() == "unavailable"
                continue
            status = {
                "serving": serving,
                "not_serving": health_pb2.HealthCheckResponse.NOT_SERVING,
            }.get(line.strip())
            if status is not None:
                for name in ("", "test.Echo"):
                    checks.set(name, status)

    threading.Thread(target=control, daemon=True).start()
    server.wait_for_termination()


def call(target, calls):
    channel = grpc.insecure_channel(target)
    for c in calls:
        kind, method = c["kind"], c["method"]
        requests = [r.encode() for r in c.get("requests", [""])]
        timeout = c.get("timeout")
        result = {"method": method}
        try:
            if kind == "unary":
                fn = channel.unary_unary(method)
                reply, rpc = fn.with_call(requests[0], timeout=timeout)
                replies = [reply]
            elif kind == "server_stream":
                rpc = channel.unary_stream(method)(requests[0], timeout=timeout)
                replies = list(rpc)
            elif kind == "client_stream":
                fn = channel.stream_unary(method)
                reply, rpc = fn.with_call(iter(requests), timeout=timeout)
                replies = [reply]
            else:
                rpc = channel.stream_stream(method)(iter(requests), timeout=timeout)
                replies = list(rpc)
            result["code"] = "OK"
            result["replies"] = [r.decode("latin-1") for r in replies]
            result["trailers"] = {
                k: (v.hex() if isinstance(v, bytes) else v) for k, v in rpc.trailing_metadata()
            }
        except grpc.RpcError as e:
            result["code"] = e.code().name
            result["details"] = e.details()
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        call(sys.argv[2], json.loads(sys.argv[3]))
