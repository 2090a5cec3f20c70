"""A small HTTP CONNECT proxy for tests, on 127.0.0.1 only.

It serves CONNECT tunnels to 127.0.0.1 and nothing else (any other method is
answered 405, any other target 403), counts the tunnels it opened, and, when
given a user and password, requires them as Proxy-Authorization: Basic
(answered 407 otherwise).  Given a certificate and key (tls=), it is an https
proxy: the client speaks TLS to it, and the tunnel's own TLS inside that.
Standard library only; runs in a thread of the test.

    proxy = ConnectProxy(user="user", password="secret")
    proxy.port, proxy.stats()  # {"tunnels": n, "unauthorized": n, "refused": n, "bytes": n}

bytes counts what the tunnels carried from their clients (TLS records: never readable).
    proxy.stop()
"""
import base64
import select
import socket
import socketserver
import ssl
import threading


class _Handler(socketserver.StreamRequestHandler):
    def handle(self):
        proxy = self.server.proxy
        head = self.rfile.readline(8192).decode("latin-1").split()
        headers = {}
        while True:
            line = self.rfile.readline(8192).decode("latin-1")
            if line in ("\r\n", "\n", ""):
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if len(head) != 3 or head[0] != "CONNECT":
            proxy.count("refused")
            return self.answer("405 Method Not Allowed")
        if proxy.expected_auth is not None and headers.get("proxy-authorization") != proxy.expected_auth:
            proxy.count("unauthorized")
            return self.answer("407 Proxy Authentication Required",
                               'Proxy-Authenticate: Basic realm="test"\r\n')
        host, _, port = head[1].rpartition(":")
        if host != "127.0.0.1" or not port.isdigit():
            proxy.count("refused")
            return self.answer("403 Forbidden")
        try:
            upstream = socket.create_connection((host, int(port)), timeout=10)
        except OSError:
            proxy.count("refused")
            return self.answer("502 Bad Gateway")
        proxy.count("tunnels")
        self.answer("200 Connection established")
        self.relay(upstream)

    def answer(self, status, extra=""):
        self.wfile.write(f"HTTP/1.1 {status}\r\n{extra}Content-Length: 0\r\n\r\n".encode())
        self.wfile.flush()

    def relay(self, upstream):
        """Pass bytes both ways until one side closes"""
        client = self.connection
        client.settimeout(None)
        upstream.settimeout(None)
        try:
            while True:
                # TLS may hold bytes already read from the socket, which select cannot see
                if isinstance(client, ssl.SSLSocket) and client.pending():
                    ready = [client]
                else:
                    ready, _, _ = select.select([client, upstream], [], [], 60)
                if not ready:
                    return
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    if s is client:
                        self.server.proxy.count("bytes", len(data))
                    (upstream if s is client else client).sendall(data)
        except OSError:
            pass
        finally:
            upstream.close()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    tls = None

    # an https proxy: each connection's handshake is done by its own thread, on its first read
    def get_request(self):
        sock, addr = self.socket.accept()
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request, client_address):
        pass  # a client hanging up mid-tunnel is normal


class ConnectProxy:
    def __init__(self, user=None, password=None, tls=None):
        self.expected_auth = None
        if user is not None:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self.expected_auth = f"Basic {token}"
        self._counts = {"tunnels": 0, "unauthorized": 0, "refused": 0, "bytes": 0}
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        if tls is not None:
            self._server.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._server.tls.load_cert_chain(*tls)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True)
        self._thread.start()

    def count(self, what, n=1):
        with self._lock:
            self._counts[what] += n

    def stats(self):
        with self._lock:
            return dict(self._counts)

    def stop(self):
        self._server.shutdown()
        self._server.server_close()
