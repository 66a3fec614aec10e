"""Multipart send and receive for the client, the broker and the workers, without per-frame overhead.

pyzmq's ``send_multipart``/``recv_multipart`` spend about 5 µs a frame in Python (type checks, IntFlag
arithmetic for SNDMORE, the sugar layer's ``send``), and a result crosses three hops as 10-13 frames:
measured here, 66 µs against 21 µs for an 11-frame send and receive over inproc. These call the
Cython socket methods with plain-int flags; the frames on the wire are the same.
"""
from __future__ import annotations

import zmq
import zmq.backend

__all__ = ["send_frames", "recv_frames", "readable", "NOBLOCK"]

NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE)
_RCVMORE = int(zmq.RCVMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_send = zmq.backend.Socket.send          # the sugar Socket.send adds routing-id/group handling we never use
_recv = zmq.backend.Socket.recv


def send_frames(socket: zmq.Socket, frames: list, flags: int = 0, copy: bool = True) -> None:
    """``socket.send_multipart(frames, flags, copy)``; ``zmq.Again`` only before the first frame.

    ``copy=False`` passes a received ``zmq.Frame`` on without copying its bytes (libzmq shares them)."""
    more = flags | _SNDMORE
    for frame in frames[:-1]:
        _send(socket, frame, more, copy)
    _send(socket, frames[-1], flags, copy)


def recv_frames(socket: zmq.Socket, flags: int = 0, copy: bool = True) -> list:
    """``socket.recv_multipart(flags, copy)``: the frames of one message, as bytes or (``copy=False``)
    as ``zmq.Frame`` objects that still hold libzmq's buffer."""
    frames = [_recv(socket, flags, copy)]
    while socket.get(_RCVMORE):          # the rest of a multipart message has arrived with its first frame
        frames.append(_recv(socket, flags, copy))
    return frames


def readable(socket: zmq.Socket) -> bool:
    """True when a message is waiting (cheaper than catching ``zmq.Again`` from a non-blocking receive)."""
    return bool(socket.get(_EVENTS) & _POLLIN)
