"""Files an engine makes once from an exported graph (an int8 graph, an OpenVINO IR).

Each is a folder named after the engine and the graph's size and time, so a re-exported graph
gets new ones. It goes beside the graph, or into the cache folder when the graph's folder is
read-only. A folder that no longer loads (a disk fault, a killed copy) is made again, with a
warning, instead of failing every start.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from inference.spec import ModelLoadError, default_cache_dir
from inference.staging import fresh_staging_dir

log = logging.getLogger(__name__)

T = TypeVar("T")
DERIVED_FOLDER = "engines"


def graph_stamp(graph: Path) -> str:
    stat = graph.stat()
    return f"{stat.st_size}-{stat.st_mtime_ns}"


def places(graph: Path) -> list[Path]:
    """Where files derived from `graph` may go, in order of preference."""
    digest = hashlib.sha256(str(graph.resolve()).encode()).hexdigest()[:16]
    return [graph.parent / DERIVED_FOLDER, default_cache_dir() / DERIVED_FOLDER / digest]


def load_derived(
    graph: Path, name: str, make: Callable[[Path], None], load: Callable[[Path], T]
) -> T:
    """`load(folder)` of the folder `make(folder)` wrote for this graph, made on first use.

    A folder that exists but does not load is removed and made again once, with a warning.
    """
    folder = _existing(graph, name)
    if folder is not None:
        try:
            return load(folder)
        except Exception as error:  # any runtime's error: the files are not what was written
            log.warning(
                "the %s files in %s do not load (%s); making them again", name, folder, error
            )
            shutil.rmtree(folder, ignore_errors=True)
    return load(_make(graph, name, make))


def _existing(graph: Path, name: str) -> Path | None:
    wanted = f"{name}.{graph_stamp(graph)}"
    for place in places(graph):
        if (place / wanted).is_dir():
            return place / wanted
    return None


def _make(graph: Path, name: str, make: Callable[[Path], None]) -> Path:
    wanted = f"{name}.{graph_stamp(graph)}"
    for place in places(graph):
        target = place / wanted
        try:
            staging = fresh_staging_dir(target)
        except OSError as error:
            log.info("cannot write the %s files into %s (%s)", name, place, error)
            continue
        try:
            log.info("making the %s files for %s (once) in %s", name, graph, place)
            make(staging)
            staging.rename(target)
            for older in place.glob(f"{name}.*"):  # made for an earlier export of this graph
                if older != target and not older.name.startswith("."):
                    shutil.rmtree(older, ignore_errors=True)
            return target
        except OSError as error:
            if target.is_dir():  # another process made it at the same moment
                return target
            log.info("cannot write the %s files into %s (%s)", name, place, error)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    raise ModelLoadError(f"no writable place for the {name} version of {graph}")
