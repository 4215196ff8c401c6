"""What many commands share: how they name the gateway's store, secrets and the operator's
signing keys, and print JSON for scripts."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from microfang.config import DEFAULT_DB


def add_secret(p: argparse.ArgumentParser, name: str, env: str, what: str) -> None:
    """A secret option: the first line of a file, or an environment variable; never a value on the
    command line, where `ps` shows it to every user of the machine."""
    dest = name.replace("-", "_")
    p.add_argument(f"--{name}-file", type=Path, metavar="FILE", dest=f"{dest}_file",
                   help=f"{what}: the first line of FILE (default: environment variable {env})")
    p.set_defaults(**{f"{dest}_env": env})


def secret(args: argparse.Namespace, name: str) -> str | None:
    """The value of a secret option declared with add_secret."""
    from microfang.config import read_secret_file

    dest = name.replace("-", "_")
    path = getattr(args, f"{dest}_file")
    return read_secret_file(path, f"--{name}-file") if path else os.environ.get(getattr(args, f"{dest}_env")) or None


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the data as JSON (for scripts) instead of a table")


def print_json(data: object) -> None:
    """JSON for scripts: plain print, never wrapped or coloured to the terminal's width."""
    print(json.dumps(data, indent=2, default=str), flush=True)


def show_rows(rows: list[dict[str, Any]], as_json: bool, title: str, columns: tuple[str, ...],
              cells: Callable[[dict[str, Any]], list[str]]) -> None:
    """Rows as JSON (for scripts) or as a table of `columns`, `cells(row)` giving each row's cells,
    printed as text: wrapped in their columns (never cut mid-sentence), no markup, no escapes."""
    if as_json:
        print_json(rows)
        return
    from rich.table import Table
    from rich.text import Text

    from microfang import console

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(Text(console.printable(cell)) for cell in cells(row)))
    console.out.print(table)


def add_store(p: argparse.ArgumentParser, default: Path = DEFAULT_DB) -> None:
    """The gateway's store, named one way for every command that reads or writes it: `--store
    URL|FILE` (alias `--db`) or the `--config` file's `[gateway] store` (or `db`); see store_of."""
    p.add_argument("--store", "--db", dest="store", metavar="URL|FILE",
                   help=f"the gateway's store: a postgresql:// URL or a SQLite file (default: --config's [gateway] "
                        f"store or db, else MICROFANG_STORE, else {default})")
    if not any(action.dest == "config" for action in p._actions):
        p.add_argument("--config", type=Path, help="the gateway's TOML configuration, to take the store from")
    p.set_defaults(store_default=default)


def store_of(args: argparse.Namespace) -> str:
    """Where the command's store is (add_store's options)."""
    from microfang.config import store_setting

    return store_setting(args.config, args.store, args.store_default)


def display(where: str) -> str:
    """A store's location as shown: a URL without its password."""
    from microfang.gateway.db import is_url

    if not is_url(where) or "@" not in where:
        return where
    scheme, rest = where.split("://", 1)
    user, host = rest.rsplit("@", 1)
    return f"{scheme}://{user.split(':', 1)[0]}@{host}"



def add_signing_keys(p: argparse.ArgumentParser) -> None:
    p.add_argument("--signing-keys", type=Path, metavar="FILE", dest="signing_keys",
                   help="the operator's Ed25519 keyring (default: MICROFANG_SIGNING_KEY, else the file "
                        "MICROFANG_SIGNING_KEYS, else ./signing.keys)")
