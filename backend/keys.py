"""posegpt-keys: CURVE key pairs for a server reachable from other machines.

    posegpt-keys --dir keys --clients artist laptop2

writes
    keys/server.key, keys/server.key_secret        the server's pair (give server.key to every client)
    keys/clients/<name>.key, <name>.key_secret     one pair per client (give both files to that client)
    keys/allowed/<name>.key                        the public keys posegpt-serve --curve lets in

Revoke a client by deleting its file from keys/allowed/ and restarting the server. Secret files are
written readable by their owner only.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import zmq.auth

__all__ = ["generate_keys", "main"]


def _pair(directory: Path, name: str, force: bool) -> tuple[Path, Path]:
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    if (public.exists() or secret.exists()) and not force:
        raise FileExistsError(f"{public} already exists (pass --force to replace it)")
    public_file, secret_file = zmq.auth.create_certificates(str(directory), name)
    os.chmod(secret_file, 0o600)
    return Path(public_file), Path(secret_file)


def generate_keys(directory: str | os.PathLike, clients: list[str] = ("client",), *, force: bool = False,
                  server: bool = True) -> dict[str, Path]:
    """Create the server pair (unless ``server=False``) and one pair per client name, and allow-list
    every client. Returns the written paths by role ("server", "server_secret", "client:<name>", ...)."""
    root = Path(directory)
    for sub in ("", "clients", "allowed"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    written: dict[str, Path] = {}
    if server:
        written["server"], written["server_secret"] = _pair(root, "server", force)
    for name in clients:
        if not name or "/" in name or name.startswith(".") or name == "server":
            raise ValueError(f"bad client name {name!r}")
        public, secret = _pair(root / "clients", name, force)
        allowed = root / "allowed" / f"{name}.key"
        shutil.copyfile(public, allowed)
        written[f"client:{name}"], written[f"client_secret:{name}"], written[f"allowed:{name}"] = public, secret, allowed
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="posegpt-keys", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--dir", default="keys", help="where to write the keys")
    parser.add_argument("--clients", nargs="+", default=["client"], help="client names, one key pair each")
    parser.add_argument("--no-server", action="store_true", help="only add clients to an existing key dir")
    parser.add_argument("--force", action="store_true", help="overwrite existing key files")
    args = parser.parse_args(argv)
    try:
        written = generate_keys(args.dir, args.clients, force=args.force, server=not args.no_server)
    except (FileExistsError, ValueError) as exc:
        print(f"posegpt-keys: {exc}", file=sys.stderr)
        return 1
    for role, path in written.items():
        print(f"{role}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
