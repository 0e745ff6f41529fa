"""Imports go one way: ingest -> shared <- worker."""

import subprocess
import sys


def test_receiver_does_not_import_the_worker() -> None:
    code = (
        "import sys, ingest.app, ingest.server\n"
        "leaked = sorted(m for m in sys.modules if m == 'worker' or m.startswith('worker.'))\n"
        "assert not leaked, leaked\n"
        "assert 'sqlalchemy.orm' not in sys.modules, 'the receiver must not need the database'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_shared_imports_neither_side() -> None:
    code = (
        "import pkgutil, importlib, sys, shared\n"
        "for m in pkgutil.walk_packages(shared.__path__, 'shared.'):\n"
        "    if '.migrations' not in m.name: importlib.import_module(m.name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ingest', 'worker', 'cli'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
