"""Recall of the PII scrubber (lmjax/data/pii.py) per type, and its false redactions on clean text.

    python benchmarks/pii_recall.py                   # 2,000 sentences, seed 0, whole corpus
    python benchmarks/pii_recall.py --sentences=200 --clean_chars=200000   # quicker

Sentences come from the Shakespeare corpus (lmjax/data/shakespeare.py); each gets one synthetic
PII item made by Faker (seeded, en_US; phones half en_GB), inserted at a random word boundary,
the types taken in turn. An item counts as found when findings of its own type cover all of
it. The clean corpus (the whole of Shakespeare, or its first --clean_chars) holds no PII, so
every finding there is a false redaction. Names from Faker's en_IN locale, which the name list
(Faker's English lists) does not include, give an out-of-list recall for names as well.
"""

from __future__ import annotations

import argparse
import collections
import re
import time

import numpy as np

from lmjax.data import pii, shakespeare


def sentences(works: dict[str, str], n: int, rng: np.random.Generator) -> list[str]:
    text = " ".join(works.values())
    text = re.sub(r"\s+", " ", text)
    found = [s for s in re.split(r"(?<=[.!?]) ", text) if 40 <= len(s) <= 200]
    return [found[i] for i in rng.choice(len(found), size=n, replace=False)]


def make_pii(fake, fake_gb, kind: str, i: int) -> str:
    if kind == "EMAIL":
        return fake.email()
    if kind == "PHONE":
        return (fake if i % 2 else fake_gb).phone_number()
    if kind == "CARD":
        number = fake.credit_card_number()
        if i % 3 == 1:  # also the grouped forms people type
            number = " ".join(number[j:j + 4] for j in range(0, len(number), 4))
        return number
    if kind == "IBAN":
        return fake.iban()
    if kind == "IP":
        return fake.ipv4() if i % 2 else fake.ipv6()
    if kind == "URL":
        return fake.url() if i % 2 else fake.uri()
    if kind == "ID":
        return fake.ssn() if i % 2 else str(fake.random_number(digits=9, fix_len=True))
    if kind == "PERSON":
        return fake.name()
    raise ValueError(kind)


def inject(sentence: str, item: str, rng: np.random.Generator) -> tuple[str, int]:
    words = sentence.split(" ")
    at = int(rng.integers(0, len(words) + 1))
    head = " ".join(words[:at])
    tail = " " + " ".join(words[at:]) if at < len(words) else ""
    text = (head + " " if head else "") + item + tail
    return text, len(head) + (1 if head else 0)


def covered(findings, kind: str, start: int, end: int) -> bool:
    mask = np.zeros(end - start, bool)
    for x in findings:
        if pii._ENTITY[x.entity_type] == kind:
            lo, hi = max(x.start, start), min(x.end, end)
            if lo < hi:
                mask[lo - start:hi - start] = True
    return bool(mask.all())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sentences", type=int, default=2000)
    p.add_argument("--clean_chars", type=int, default=0, help="0: the whole corpus")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--show", type=int, default=5, help="misses and false redactions to print")
    a = p.parse_args()
    from faker import Faker

    fake, fake_gb, fake_in = Faker("en_US"), Faker("en_GB"), Faker("en_IN")
    for i, f in enumerate((fake, fake_gb, fake_in)):
        f.seed_instance(a.seed + i)
    rng = np.random.default_rng(a.seed)
    works = shakespeare.works()
    scrubber = pii.Scrubber()

    hits, totals, misses = collections.Counter(), collections.Counter(), []
    t0 = time.perf_counter()
    chars = 0
    for i, s in enumerate(sentences(works, a.sentences, rng)):
        kind = pii.TYPES[i % len(pii.TYPES)]
        item = make_pii(fake, fake_gb, kind, i // len(pii.TYPES))
        text, start = inject(s, item, rng)
        chars += len(text)
        ok = covered(scrubber.find(text), kind, start, start + len(item))
        hits[kind] += ok
        totals[kind] += 1
        if not ok:
            misses.append((kind, item, scrubber.scrub(text)[0]))
    dt = time.perf_counter() - t0
    print(f"recall on {a.sentences} Shakespeare sentences with injected PII "
          f"({chars / dt:,.0f} chars/s):")
    for kind in pii.TYPES:
        print(f"  {kind:7s} {hits[kind] / max(totals[kind], 1):.3f}  ({hits[kind]}/{totals[kind]})")
    for m in misses[:a.show]:
        print("  missed", m)

    out_hits = 0
    n_out = 200
    for s in sentences(works, n_out, rng):
        item = f"{fake_in.first_name()} {fake_in.last_name()}"
        text, start = inject(s, item, rng)
        out_hits += covered(scrubber.find(text), "PERSON", start, start + len(item))
    print(f"  PERSON out-of-list (Faker en_IN names) {out_hits / n_out:.3f} ({out_hits}/{n_out})")

    clean = "\n\n".join(works.values())
    if a.clean_chars:
        clean = clean[:a.clean_chars]
    t0 = time.perf_counter()
    found = scrubber.find(clean)
    dt = time.perf_counter() - t0
    per_type = collections.Counter(pii._ENTITY[x.entity_type] for x in found)
    print(f"false redactions on the clean corpus ({len(clean):,} chars, {len(clean) / dt:,.0f} "
          f"chars/s): {len(found)} = {len(found) / len(clean) * 1e4:.3f} per 10,000 chars "
          f"{dict(per_type)}")
    for x in found[:a.show]:
        print("  false", pii._ENTITY[x.entity_type], repr(clean[max(0, x.start - 30):x.end + 30]))


if __name__ == "__main__":
    main()
