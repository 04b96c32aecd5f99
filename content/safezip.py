"""Reading an uploaded zip without trusting it: every member is checked before anything is read.

Refused: absolute paths, `..`, backslashes and drive letters, links (symlink mode bits), encrypted
members, duplicate names, more than MAX_MEMBERS members, more than MAX_TOTAL_BYTES uncompressed,
and members that expand more than MAX_RATIO times (zip bombs). Members are then read into memory
one at a time, never past the size they declare. CPU work: call from a thread.
"""

from __future__ import annotations

import posixpath
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from domain.catalogue import PACK, say

MAX_MEMBERS = 2000
MAX_TOTAL_BYTES = 200 * 1024 * 1024
MAX_RATIO = 100
RATIO_FLOOR_BYTES = 1024 * 1024  # small members may compress as well as they like
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class ZipProblem:
    member: str
    message: str


class UnsafeZip(Exception):
    def __init__(self, problems: list[ZipProblem]):
        super().__init__("; ".join(f"{p.member}: {p.message}" for p in problems))
        self.problems = problems


def member_problems(infos: list[zipfile.ZipInfo]) -> list[ZipProblem]:
    """Everything wrong with the members' names, kinds and sizes, from the central directory alone."""
    problems: list[ZipProblem] = []
    if len(infos) > MAX_MEMBERS:
        problems.append(ZipProblem("(zip)", say(PACK, "zip_too_many", n=len(infos), most=MAX_MEMBERS)))
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        shown = name[:200]
        mode = info.external_attr >> 16
        if "\\" in name or _DRIVE.match(name):
            problems.append(ZipProblem(shown, say(PACK, "zip_backslash")))
        elif name.startswith("/"):
            problems.append(ZipProblem(shown, say(PACK, "zip_absolute")))
        elif ".." in name.split("/"):
            problems.append(ZipProblem(shown, say(PACK, "zip_traversal")))
        if stat.S_ISLNK(mode):
            problems.append(ZipProblem(shown, say(PACK, "zip_symlink")))
        elif stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: the tool recorded no type
            problems.append(ZipProblem(shown, say(PACK, "zip_not_regular")))
        if info.flag_bits & 0x1:
            problems.append(ZipProblem(shown, say(PACK, "zip_encrypted")))
        if name in seen:
            problems.append(ZipProblem(shown, say(PACK, "zip_twice")))
        seen.add(name)
        total += info.file_size
        if info.file_size > RATIO_FLOOR_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            problems.append(ZipProblem(shown, say(PACK, "zip_bomb", ratio=info.file_size // max(info.compress_size, 1),
                                                  most=MAX_RATIO)))
    if total > MAX_TOTAL_BYTES:
        problems.append(ZipProblem("(zip)", say(PACK, "zip_total", mib=total / 1048576,
                                                most=MAX_TOTAL_BYTES // 1048576)))
    return problems


class SafeZip:
    """A checked zip: names normalised, members read on demand within their declared size."""

    def __init__(self, path: str | Path):
        try:
            self._zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError):
            raise UnsafeZip([ZipProblem("(zip)", say(PACK, "zip_unreadable"))]) from None
        infos = self._zf.infolist()
        problems = member_problems(infos)
        if problems:
            self._zf.close()
            raise UnsafeZip(problems)
        self._files = {posixpath.normpath(i.filename): i for i in infos if not i.is_dir()}

    def __enter__(self) -> SafeZip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._zf.close()

    @property
    def names(self) -> list[str]:
        return list(self._files)

    def has(self, path: str) -> bool:
        return path in self._files

    def size(self, path: str) -> int:
        return self._files[path].file_size

    def read(self, path: str) -> bytes:
        """A member's bytes; ValueError with a sentence when it is damaged or lies about its size."""
        info = self._files[path]
        try:
            with self._zf.open(info) as f:
                data = f.read(info.file_size + 1)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
            raise ValueError(say(PACK, "zip_damaged", error=e)) from None
        except (NotImplementedError, RuntimeError):
            raise ValueError(say(PACK, "zip_method")) from None
        if len(data) != info.file_size:
            raise ValueError(say(PACK, "zip_size_lies"))
        return data


def normalise(path: str) -> str | None:
    """A manifest path as a member name, or None when it tries to leave the zip root."""
    if not path or "\\" in path or path.startswith("/") or _DRIVE.match(path):
        return None
    norm = posixpath.normpath(path)
    if norm == "." or norm.startswith("../") or norm == "..":
        return None
    return norm
