"""ReloadingContext with real certificates and real handshakes (in memory): a rotated pair is
served to new handshakes, a half-written one keeps the loaded context and is logged once."""

from __future__ import annotations

import logging
import os
import shutil
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from service_kit.tls import ReloadingContext

from tests.toy_redis.certs import Authority, Pair


class LoadError(Exception):
    pass


def load(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise LoadError(str(exc)) from None
    return context


def served_serial(context: ssl.SSLContext) -> int:
    """The serial number of the certificate a handshake with ``context`` presents."""
    client = ssl.create_default_context()
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_end = context.wrap_bio(to_server, server_out := ssl.MemoryBIO(), server_side=True)
    client_end = client.wrap_bio(to_client, client_out := ssl.MemoryBIO())
    done = set()
    for _ in range(20):  # a handshake takes a few round trips
        for end in (client_end, server_end):
            if end not in done:
                try:
                    end.do_handshake()
                    done.add(end)
                except ssl.SSLWantReadError:
                    pass
        to_server.write(client_out.read())
        to_client.write(server_out.read())
        if len(done) == 2:
            break
    return x509.load_der_x509_certificate(client_end.getpeercert(binary_form=True)).serial_number


def serial(pair: Pair) -> int:
    return x509.load_pem_x509_certificate(pair.cert.read_bytes()).serial_number


def replace(source: Path, target: Path) -> None:
    """As the deploy writes a file: a whole new file renamed into place."""
    staged = target.with_suffix(".staged")
    shutil.copy(source, staged)
    os.replace(staged, target)


@pytest.fixture
def live(tmp_path):
    authority = Authority(tmp_path / "pki")
    first = authority.issue("first", "node", server=True)
    live = Pair(tmp_path / "node.crt", tmp_path / "node.key")
    shutil.copy(first.cert, live.cert)
    shutil.copy(first.key, live.key)
    return authority, first, live


def test_a_rotated_pair_is_served_after_a_half_written_one_kept_the_old(live, caplog):
    authority, first, files = live
    reloading = ReloadingContext(str(files.cert), str(files.key), lambda: load(files.cert, files.key), LoadError,
                                 logging.getLogger("service_kit_test"))
    caplog.set_level(logging.INFO, "service_kit_test")
    assert served_serial(reloading.current()) == serial(first)
    second = authority.issue("second", "node", server=True)
    replace(second.key, files.key)  # the new key, its certificate not yet in place
    for _ in range(3):
        assert served_serial(reloading.current()) == serial(first)
    replace(second.cert, files.cert)
    assert served_serial(reloading.current()) == serial(second)
    events = [(record.levelno, record.getMessage(), record.fields) for record in caplog.records]
    assert [event[:2] for event in events] == [(logging.WARNING, "tls_reload_failed"), (logging.INFO, "tls_reloaded")]
    assert "LoadError" not in events[0][2]["error"] and events[1][2] == {"cert_file": str(files.cert)}


def test_an_unchanged_pair_is_not_loaded_again(live):
    _, _, files = live
    loads = []
    reloading = ReloadingContext(str(files.cert), str(files.key),
                                 lambda: loads.append(1) or load(files.cert, files.key), LoadError,
                                 logging.getLogger("service_kit_test"))
    first = reloading.current()
    assert reloading.current() is first and len(loads) == 1


def test_a_pair_unusable_at_start_raises_the_callers_error(tmp_path):
    with pytest.raises(LoadError):
        ReloadingContext(str(tmp_path / "none.crt"), str(tmp_path / "none.key"),
                         lambda: load(tmp_path / "none.crt", tmp_path / "none.key"), LoadError,
                         logging.getLogger("service_kit_test"))
