"""Certificates made by a test with openssl, offline: a CA, and server
certificates it signs (`openssl ca`, whose -startdate/-enddate make an
expired one without faking the clock).  Every file is readable by the
server, which may run as another user.

    certs = Certificates()
    certs.ca                                    # the CA's PEM (a ca_file)
    cert, key = certs.server("IP:127.0.0.1")    # valid from an hour ago for two days
    cert, key = certs.server("IP:127.0.0.1", expired=True)
"""
import atexit
import datetime
import os
import shutil
import subprocess
import tempfile

UTC = datetime.timezone.utc


def _stamp(t):
    return t.strftime("%Y%m%d%H%M%SZ")


class Certificates:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="tt-certs-")
        os.chmod(self.dir, 0o755)
        atexit.register(shutil.rmtree, self.dir, True)
        os.mkdir(os.path.join(self.dir, "issued"))
        open(os.path.join(self.dir, "index.txt"), "w").close()
        with open(os.path.join(self.dir, "serial"), "w") as f:
            f.write("1000\n")
        self.ca = os.path.join(self.dir, "ca.pem")
        self.ca_key = os.path.join(self.dir, "ca.key")
        self.config = os.path.join(self.dir, "ca.cnf")
        with open(self.config, "w") as f:
            f.write(f"""[ ca ]
default_ca = test_ca
[ test_ca ]
database = {self.dir}/index.txt
new_certs_dir = {self.dir}/issued
certificate = {self.ca}
private_key = {self.ca_key}
serial = {self.dir}/serial
default_md = sha256
policy = any_name
unique_subject = no
[ any_name ]
commonName = supplied
""")
        self._openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                      "-nodes", "-keyout", self.ca_key, "-out", self.ca, "-days", "3",
                      "-subj", "/CN=tiktok_capi test CA",
                      "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        self.n = 0

    def _openssl(self, *args):
        r = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"openssl {args[0]} failed: {r.stderr.strip()}")

    def server(self, san, expired=False):
        """A server certificate for san (IP:... or DNS:...) signed by the CA: (cert, key)"""
        self.n += 1
        base = os.path.join(self.dir, f"server{self.n}")
        ext = base + ".ext"
        with open(ext, "w") as f:
            f.write(f"""[ server ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = {san}
""")
        self._openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                      "-nodes", "-keyout", base + ".key", "-out", base + ".csr",
                      "-subj", f"/CN={san.split(':', 1)[1]}")
        now = datetime.datetime.now(UTC)
        if expired:
            start, end = now - datetime.timedelta(days=2), now - datetime.timedelta(days=1)
        else:
            start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)
        self._openssl("ca", "-batch", "-config", self.config, "-in", base + ".csr",
                      "-out", base + ".pem", "-notext", "-startdate", _stamp(start),
                      "-enddate", _stamp(end), "-extfile", ext, "-extensions", "server")
        for path in (base + ".pem", base + ".key", self.ca):
            os.chmod(path, 0o644)
        return base + ".pem", base + ".key"
