"""posegpt_net.transport: the same multipart messages as pyzmq's send_multipart/recv_multipart."""
import os

import pytest
import zmq

from posegpt_net.transport import NOBLOCK, readable, recv_frames, send_frames


@pytest.fixture
def pair():
    context = zmq.Context()
    a, b = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    a.bind("inproc://transport-test")
    b.connect("inproc://transport-test")
    yield a, b
    a.close(0)
    b.close(0)
    context.term()


FRAMES = [b"POSEGPT/1", b"", b"x" * 100, os.urandom(300_000)]    # empty, small, and a zero-copy-sized frame


def test_frames_interoperate_with_pyzmq_multipart(pair):
    a, b = pair
    send_frames(a, FRAMES)
    assert b.recv_multipart() == FRAMES
    a.send_multipart(FRAMES)
    assert recv_frames(b) == FRAMES
    send_frames(a, [b"one"])
    assert recv_frames(b) == [b"one"]


def test_received_frames_are_passed_on_without_copy_and_keep_their_bytes(pair):
    a, b = pair
    send_frames(a, FRAMES)
    frames = recv_frames(b, copy=False)
    assert all(isinstance(f, zmq.Frame) for f in frames) and [f.bytes for f in frames] == FRAMES
    send_frames(b, frames, copy=False)          # back the other way, the same frame objects
    assert recv_frames(a) == FRAMES
    assert frames[-1].bytes == FRAMES[-1]       # still readable after being sent on


def test_readable_and_non_blocking_receive(pair):
    a, b = pair
    assert not readable(b)
    with pytest.raises(zmq.Again):
        recv_frames(b, NOBLOCK)
    send_frames(a, FRAMES)
    send_frames(a, [b"second"])
    assert readable(b)
    assert recv_frames(b, NOBLOCK) == FRAMES     # a whole message at a time
    assert recv_frames(b, NOBLOCK) == [b"second"]
    assert not readable(b)


def test_non_blocking_send_without_a_peer_raises_again():
    context = zmq.Context()
    lonely = context.socket(zmq.DEALER)          # no peer: nothing can be queued
    try:
        with pytest.raises(zmq.Again):
            send_frames(lonely, [b"a", b"b"], NOBLOCK)
    finally:
        lonely.close(0)
        context.term()
