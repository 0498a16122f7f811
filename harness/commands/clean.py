"""``pagerace clean``: remove what dead pagerace runs left behind.

Shared-memory segments and stray worker processes of parallel runs whose parent died
(the parallel engine's own ``clean_leftovers`` knows its naming and its workers), and
temporary files of interrupted artifact writes in the output directory.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from .run import _parallel_entry

NAME = "clean"
HELP = "remove shared-memory segments, stray workers and temp files left by dead pagerace runs"
EXAMPLES = [
    ("pagerace clean --dry-run", "say what would be removed, remove nothing"),
    ("pagerace clean", "remove it"),
    ("pagerace clean --out /tmp/out", "also look for interrupted artifact writes in /tmp/out"),
]

SHM_DIR = Path("/dev/shm")
_SHM_NAME = re.compile(r"pagerace_(\d+)_\w+")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        default="pagerace-out",
        metavar="DIR",
        help="output directory to check for temporary files (default: ./pagerace-out)",
    )
    p.add_argument("--dry-run", action="store_true", help="only say what would be removed")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def clean_shm_fallback(dry_run: bool, shm_dir: Path = SHM_DIR) -> list[str]:
    """``pagerace_<pid>_<nonce>`` segments whose creating process is gone."""
    done: list[str] = []
    if not shm_dir.is_dir():
        return done
    for entry in sorted(shm_dir.iterdir()):
        m = _SHM_NAME.fullmatch(entry.name)
        if not m or pid_alive(int(m.group(1))):
            continue
        if not dry_run:
            try:
                entry.unlink()
            except FileNotFoundError:
                continue  # someone else cleaned it meanwhile
        done.append(f"{'would remove' if dry_run else 'removed'} shared memory {entry} "
                    f"(its run, pid {m.group(1)}, is gone)")
    return done


def clean_temp_files(out: Path, dry_run: bool) -> list[str]:
    """Temporary files of artifact writes that never reached ``os.replace``."""
    done: list[str] = []
    verb = "would remove" if dry_run else "removed"
    for d in (out, out / "artifacts"):
        if not d.is_dir():
            continue
        for f in sorted(d.glob(".*.tmp")):
            if not dry_run:
                f.unlink(missing_ok=True)
            done.append(f"{verb} temporary file {f}")
    return done


def run(args: argparse.Namespace) -> int:
    leftovers = _parallel_entry("clean_leftovers")
    if leftovers is not None:
        done = list(leftovers(args.dry_run))
    else:
        done = clean_shm_fallback(args.dry_run)
    done += clean_temp_files(Path(args.out), args.dry_run)
    if not done:
        print("nothing to clean")
    for what in done:  # each line says what was (or would be) done: removed, killed...
        print(what)
    return 0
