"""A gRPC server and client for the edge's end-to-end tests: grpcio (Debian's python3-grpcio),
an implementation that is not the edge's, on both sides of it.

  grpc_peer.py serve DIR            serves test.Echo and grpc.health.v1.Health on an ephemeral
                                    port of 127.0.0.1 (h2c) and prints the port; the health
                                    check says NOT_SERVING while DIR/not_serving exists
  grpc_peer.py call TARGET SCENARIO [--ca PEM --name NAME] [--method M] [--timeout S]
                                    runs one scenario through TARGET and prints its outcome
                                    as JSON

Messages are raw bytes (no protobuf schema): the tests are about how calls travel.
"""
import argparse
import json
import os
import queue
import sys
import time
from concurrent import futures

import grpc

OPTIONS = [("grpc.enable_http_proxy", 0)]


def serve(directory):
    def unary(request, context):
        context.set_trailing_metadata((("x-trailer", "kept"), ("x-bin-bin", b"\x00\x01")))
        return b"echo:" + request

    def server_stream(request, context):
        for i in range(500):
            yield b"%05d" % i

    def bidi(requests, context):
        for message in requests:
            yield b"re:" + message

    def fail(request, context):
        context.abort(grpc.StatusCode.NOT_FOUND, "no such article: 42 (caf\u00e9)")

    def slow(request, context):
        time.sleep(3)
        return request

    def check(request, context):
        serving = not os.path.exists(os.path.join(directory, "not_serving"))
        return b"\x08\x01" if serving else b"\x08\x02"

    echo = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
    }
    health = {"Check": grpc.unary_unary_rpc_method_handler(check)}
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler("test.Echo", echo),
            grpc.method_handlers_generic_handler("grpc.health.v1.Health", health),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


def channel(args):
    if args.ca:
        with open(args.ca, "rb") as f:
            credentials = grpc.ssl_channel_credentials(f.read())
        options = OPTIONS + [("grpc.ssl_target_name_override", args.name)]
        return grpc.secure_channel(args.target, credentials, options=options)
    return grpc.insecure_channel(args.target, options=OPTIONS)


def failure(e):
    return {"code": e.code().name, "details": e.details()}


def call(args):
    ch = channel(args)
    timeout = args.timeout
    try:
        if args.scenario == "unary":
            response, c = ch.unary_unary("/test.Echo/Unary").with_call(b"hello", timeout=timeout)
            trailing = {k: (v if isinstance(v, str) else v.hex()) for k, v in c.trailing_metadata()}
            return {"code": c.code().name, "body": response.decode(), "trailing": trailing}
        if args.scenario == "server_stream":
            messages = list(ch.unary_stream("/test.Echo/ServerStream")(b"go", timeout=timeout))
            return {"code": "OK", "count": len(messages), "last": messages[-1].decode()}
        if args.scenario == "bidi":
            # Each message waits for the answer to the one before: only a call whose two
            # directions flow at once gets past the first.
            outgoing = queue.Queue()

            def requests():
                while True:
                    message = outgoing.get()
                    if message is None:
                        return
                    yield message

            responses = ch.stream_stream("/test.Echo/Bidi")(requests(), timeout=timeout)
            got = []
            for i in range(20):
                outgoing.put(b"m%d" % i)
                got.append(next(responses).decode())
            outgoing.put(None)
            rest = list(responses)
            return {"code": "OK", "got": got, "rest": len(rest)}
        if args.scenario == "method":
            response = ch.unary_unary(args.method)(b"x", timeout=timeout)
            return {"code": "OK", "body": response.decode(errors="replace")}
        if args.scenario == "many":
            # Concurrent unary calls on one channel (one HTTP/2 connection to the edge).
            unary = ch.unary_unary("/test.Echo/Unary")
            pending = [unary.future(b"%d" % i, timeout=timeout) for i in range(200)]
            bodies = [p.result().decode() for p in pending]
            wrong = [b for i, b in enumerate(bodies) if b != "echo:%d" % i]
            return {"code": "OK", "count": len(bodies), "wrong": len(wrong)}
        raise SystemExit("unknown scenario " + args.scenario)
    except grpc.RpcError as e:
        return failure(e)


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("serve")
    s.add_argument("directory")
    c = sub.add_parser("call")
    c.add_argument("target")
    c.add_argument("scenario")
    c.add_argument("--ca")
    c.add_argument("--name", default="localhost")
    c.add_argument("--method", default="/test.Echo/Unary")
    c.add_argument("--timeout", type=float, default=20.0)
    args = parser.parse_args()
    if args.what == "serve":
        serve(args.directory)
    else:
        print(json.dumps(call(args)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
