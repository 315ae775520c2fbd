"""Files, the bottom layer: atomic writes, JSON lines, and the cache root.

Every file obliviate writes goes through :func:`atomic_write_bytes` (a temporary file in the same
folder, then a rename), so an interrupted stage never leaves half a file and a reader never sees
one; the previous copy stays intact until the new one is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from obliviate.errors import UserError

HOME_ENV = "OBLIVIATE_HOME"


def obliviate_home() -> Path:
    """The cache root: ``$OBLIVIATE_HOME`` if set, else ``~/.cache/obliviate``."""
    env = os.environ.get(HOME_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "obliviate"


def _shared_mode() -> int:
    """The mode ``open()`` would give a new file (mkstemp makes 0600; outputs are meant to be shared)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_target(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` that becomes ``path`` when the block ends without error
    (for writers that want a file name, matplotlib's ``savefig`` say); removed on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _shared_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a temporary file and a rename."""
    with atomic_target(Path(path)) as tmp:
        tmp.write_bytes(payload)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def jsonl_text(rows: Iterable[dict[str, Any]]) -> str:
    """``rows`` as JSON lines (UTF-8 kept as is; values JSON cannot hold written with ``str``)."""
    return "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows)


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write ``rows`` as JSON lines atomically; returns the number of rows written."""
    rows = list(rows)
    atomic_write_text(path, jsonl_text(rows))
    return len(rows)


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one record to a JSON-lines log (logs grow line by line; a torn last line is the
    most an interruption can leave, and readers skip it)."""
    with Path(path).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, default=str) + "\n")


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSON-lines file; a line that is not a
    JSON object is a ``UserError`` naming the file and the line."""
    path = Path(path)
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{number}: not valid JSON ({err.msg})") from None
            except (ValueError, RecursionError) as err:  # a number past 4300 digits, nesting past the recursion limit
                reason = "nested too deeply" if isinstance(err, RecursionError) else str(err).split(";")[0]
                raise UserError(f"{path}:{number}: not readable JSON ({reason})") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            yield number, row


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every object of a JSON-lines file (see :func:`iter_jsonl`)."""
    return [row for _, row in iter_jsonl(path)]


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so large model files do not fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
