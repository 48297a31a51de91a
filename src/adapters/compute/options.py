"""Options every compute adapter may receive: the job user (``CONTAINER_USER``)."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class IdSpec:
    """One side of CONTAINER_USER: a fixed id or an inclusive range."""

    low: int
    high: int

    def pick(self) -> int:
        return self.low if self.low == self.high else random.randint(self.low, self.high)  # noqa: S311 (not a secret)


@dataclass(frozen=True, slots=True)
class ContainerUser:
    uid: IdSpec | None
    gid: IdSpec | None

    def pick(self) -> tuple[int | None, int | None]:
        return (
            self.uid.pick() if self.uid else None,
            self.gid.pick() if self.gid else None,
        )


def parse_container_user(value: str | None) -> ContainerUser | None:
    """``UID:GID`` where each side is empty, an int or a range ``lo-hi``."""
    if value is None or value in ("", ":"):
        return None
    if value.count(":") != 1:
        raise ValueError(f'"{value}" does not match format UID:GID')
    uid_s, gid_s = value.split(":")

    def side(text: str) -> IdSpec | None:
        if text == "":
            return None
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", text)
        if not m:
            raise ValueError(f'"{text}" is not an id or a range lo-hi')
        low = int(m.group(1))
        high = int(m.group(2)) if m.group(2) else low
        if high < low or high > 2**31 - 1:
            raise ValueError(f'"{text}" is not a valid id range')
        return IdSpec(low, high)

    user = ContainerUser(side(uid_s), side(gid_s))
    return None if user.uid is None and user.gid is None else user
