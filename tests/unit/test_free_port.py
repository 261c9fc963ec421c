"""Ports for test and bench servers come from outside the range outgoing connections draw on."""

from __future__ import annotations

import socket

import pytest

from devstack.loopback import _ephemeral_start, free_port


def test_a_free_port_is_below_the_ephemeral_range_so_no_outgoing_connection_takes_it() -> None:
    if _ephemeral_start() < 21_000:
        pytest.skip("this machine's ephemeral range leaves too few ports below it")
    ports = [free_port() for _ in range(50)]
    assert all(20_000 <= port < _ephemeral_start() for port in ports)


def test_a_port_is_handed_out_once() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)


def test_a_free_port_can_be_bound() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))
