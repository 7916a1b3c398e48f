"""The floor we compare against: stock nameko, default settings, nothing of ours.

- ``bench_hello``: an HTTP entrypoint that answers a constant.
- ``bench_echo_gateway`` + ``bench_echo``: HTTP -> one RPC echo -> HTTP.
"""

from nameko.rpc import RpcProxy, rpc
from nameko.web.handlers import http


class Hello:
    name = "bench_hello"

    @http("GET", "/hello")
    def hello(self, request):
        return "hello"


class Echo:
    name = "bench_echo"

    @rpc
    def echo(self, value):
        return value


class EchoGateway:
    name = "bench_echo_gateway"
    echo = RpcProxy("bench_echo")

    @http("GET", "/echo")
    def relay(self, request):
        return self.echo.echo("hello")
