"""Mask personal data (PII) in a text or JSONL file with typed placeholders, and report counts.

    lmjax scrub --in=notes.txt --out=notes.scrubbed.txt
    lmjax scrub --in=chats.jsonl --out=chats.scrubbed.jsonl --text_key=text
    lmjax scrub --in=notes.txt --out=notes.scrubbed.txt --types=EMAIL,PHONE

E-mail addresses, phone numbers, card numbers (Luhn-valid), IBANs, IP addresses, URLs,
national IDs and person names become <EMAIL>, <PHONE>, <CARD>, <IBAN>, <IP>, <URL>, <ID> and
<PERSON>. A .jsonl input keeps its records and scrubs the --text_key field of each (every
string field with --text_key=''). The counts per type are printed and written as JSON beside
the output (<out>.pii.json). Training does the same with --config.data.scrub_pii=True.
How: lmjax/data/pii.py (Presidio's recognizers plus our own; docs/privacy.md).
"""

from __future__ import annotations

import collections
import json
import os

from absl import flags

from lmjax.cli.common import fail, require
from lmjax.data import pii

_IN = flags.DEFINE_string("in", None, "The text (.txt, or any non-.jsonl file) or JSONL file.")
_OUT = flags.DEFINE_string("out", None, "Where to write the scrubbed copy.")
_TEXT_KEY = flags.DEFINE_string("text_key", "text", "With JSONL: the field to scrub ('': every "
                                "string field).")
_TYPES = flags.DEFINE_list("types", list(pii.TYPES), "PII types to mask.")


def _scrub_record(record, key: str, scrubber: pii.Scrubber, counts, where: str):
    if not isinstance(record, dict):
        fail(f"{where}: a JSONL line must be an object, e.g. {{\"text\": \"...\"}}.")
    if key:
        if not isinstance(record.get(key), str):
            fail(f"{where}: no string field {key!r}: give --text_key=<the field with the text> "
                 "(or --text_key='' for every string field).")
        keys = [key]
    else:
        keys = [k for k, v in record.items() if isinstance(v, str)]
    for k in keys:
        record[k], c = scrubber.scrub(record[k])
        counts.update(c)
    return record


def main(args: list[str]) -> None:
    src = require(flags.FLAGS["in"].value, "give --in: the text or JSONL file to scrub.")
    out = require(_OUT.value, "give --out: where to write the scrubbed copy.")
    if not os.path.isfile(src):
        fail(f"--in={src!r} is not a file.")
    if os.path.abspath(src) == os.path.abspath(out):
        fail("--out must differ from --in: the scrubbed copy never overwrites the source.")
    scrubber = pii.Scrubber([t.strip().upper() for t in _TYPES.value])
    counts: collections.Counter = collections.Counter()
    try:
        with open(src, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        fail(f"cannot read {src} as UTF-8 text: {e}")
    if src.endswith(".jsonl"):
        lines = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                fail(f"{src}:{i}: not JSON ({e.msg}).")
            record = _scrub_record(record, _TEXT_KEY.value, scrubber, counts, f"{src}:{i}")
            lines.append(json.dumps(record, ensure_ascii=False))
        scrubbed = "\n".join(lines) + "\n"
    else:
        scrubbed, counts = scrubber.scrub(text)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        f.write(scrubbed)
    report = {"source": os.path.abspath(src), "characters": len(text),
              "masked": {t: counts.get(t, 0) for t in scrubber.types}}
    with open(out + ".pii.json", "w") as f:
        json.dump(report, f, indent=1)
    print(f"{out}: {pii.report(counts, len(text))}; report in {out}.pii.json")
