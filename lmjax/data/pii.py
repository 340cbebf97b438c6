"""PII scrubbing: personal data in text replaced by typed placeholders, with counts per type.

    scrubber = Scrubber()
    text, counts = scrubber.scrub("Mail jane.doe@example.com or call (555) 123-4567.")
    # 'Mail <EMAIL> or call <PHONE>.', Counter({'EMAIL': 1, 'PHONE': 1})

Detection runs Microsoft Presidio's recognizers without an NLP model (none can be installed
here; pattern recognizers take `nlp_artifacts=None`): Presidio's e-mail (with an offline
domain check), IP (v4 and v6), IBAN
(with its checksum) and credit-card (Luhn) recognizers, plus our own Presidio recognizers where
pattern-only Presidio's recall is poor or it needs the network: phone numbers (10-15 digits
with the usual separators, extensions), cards in any 12-19 digit grouping (Luhn-checked), URLs
(with a scheme, `www.`, or a bare domain with a common TLD; Presidio's own needs tldextract's
online suffix list), national IDs (US SSN `123-45-6789` and standalone 9-digit numbers), and
person names. Presidio's anonymizer writes the placeholders.

Person names come from a name list, not a model: Faker's English first-name and surname lists
(en, en_US, en_GB, en_IE, en_NZ; about 7k first names, 3k surnames). A name is a listed first
name followed by a listed surname (both capitalised, on one line, an optional middle initial and
suffix), or a title (Mr, Mrs, Ms, Dr, Prof) followed by a capitalised word. A single first name
("Will", "Grace") is never masked: such words are ordinary English, and Shakespeare's characters
(ROMEO, Juliet) are fiction, not personal data. Speakers' names in capitals are not Title-case
and never match. docs/privacy.md has the figures (benchmarks/pii_recall.py).
"""

from __future__ import annotations

import collections
import functools
import importlib
import re
from typing import Iterable

VERSION = 3  # part of the data cache's key (data.scrub_pii): raise it when detection changes
TYPES = ("EMAIL", "PHONE", "CARD", "IBAN", "IP", "URL", "ID", "PERSON")
PLACEHOLDERS = {t: f"<{t}>" for t in TYPES}

# Presidio's entity names -> ours.
_ENTITY = {"EMAIL_ADDRESS": "EMAIL", "PHONE_NUMBER": "PHONE", "CREDIT_CARD": "CARD",
           "IBAN_CODE": "IBAN", "IP_ADDRESS": "IP", "URL": "URL", "US_SSN": "ID",
           "NATIONAL_ID": "ID", "PERSON": "PERSON"}
# Where two findings overlap, the longer wins; at equal length, the earlier type here.
_PRIORITY = {t: i for i, t in enumerate(("EMAIL", "URL", "IBAN", "CARD", "IP", "ID", "PHONE",
                                         "PERSON"))}

_NAME_LOCALES = ("en", "en_US", "en_GB", "en_IE", "en_NZ")
# Faker's lists hold titles and common words as names ("King Henry", "Young Harry", "Richard
# Earl of Cambridge" would fire all over the history plays): never a name part here.
_NOT_FIRST = frozenset("""King Queen Prince Princess Duke Duchess Lord Lady Saint Sir Earl Count
    Countess Master Mistress Little Young Old Great Good Fair Sweet Noble Brave General Captain
    Major Bishop Cardinal Father Mother Brother Sister Friar Abbot Dame Madam Pope Emperor
    Marshal Sheriff Judge Doctor Nurse Page Squire Knight Baron Don Colonel Son Royal True
    Merry Gay Love Joy Rich Art Holy Gentle Dear Poor Black White Brown Green Gray Grey
    Lieutenant Sergeant Constable Officer Cousin Uncle Aunt Signior Monsieur Hunter Archer
    Sterling Earnest Marquis Lucky Chance Glory Friend Justice Bay Blue Sage French English
    Power""".split())
# Surnames that are also titles ("Richard Earl of Cambridge", "Harry Prince of Wales").
_NOT_LAST = frozenset("""King Queen Prince Princess Duke Duchess Lord Lady Saint Sir Earl Count
    Countess Master Mistress Bishop Cardinal Pope Judge Knight Baron Marquis Squire Page Power
    French English Young Little Good Fair Noble""".split())
_TITLES = r"(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof)"
_SUFFIXES = r"(?:Jr|Sr|II|III|IV|MD|PhD|DDS|DVM)"
_TLDS = ("com|org|net|edu|gov|mil|int|info|biz|io|co|us|uk|de|fr|es|it|nl|eu|ca|au|nz|ie|in|"
         "jp|cn|ru|br|ch|se|no|dk|fi|pl|be|at|me|tv|app|dev|ai")


def luhn_valid(number: str) -> bool:
    """The Luhn checksum of the digits in `number` (separators ignored)."""
    digits = [int(c) for c in number if c.isdigit()]
    if len(digits) < 2:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    return total % 10 == 0


@functools.lru_cache(maxsize=1)
def name_lists() -> tuple[frozenset, frozenset]:
    """Faker's English first names and surnames (each Title-case)."""
    first, last = set(), set()
    for loc in _NAME_LOCALES:
        provider = importlib.import_module(f"faker.providers.person.{loc}").Provider
        first.update(provider.first_names)
        last.update(provider.last_names)

    def keep(names):
        return frozenset(n for n in names if re.fullmatch(r"[A-Z][a-z'-]+", n))

    return keep(first) - _NOT_FIRST, keep(last) - _NOT_LAST


def _recognizers() -> list:
    from presidio_analyzer import (  # lazy: optional 'privacy' extra
        EntityRecognizer, Pattern, PatternRecognizer, RecognizerResult)
    from presidio_analyzer.predefined_recognizers import (  # lazy: optional 'privacy' extra
        CreditCardRecognizer, EmailRecognizer, IbanRecognizer, IpRecognizer)
    import regex  # lazy: Presidio's regex engine (privacy extra); overlapped=True finds every pair

    class DigitsRecognizer(PatternRecognizer):
        """A regex whose match must hold between `lo` and `hi` digits (and pass `check`)."""

        def __init__(self, entity, regex, lo, hi, check=None):
            super().__init__(supported_entity=entity, name=f"lmjax_{entity.lower()}",
                             patterns=[Pattern(entity.lower(), regex, 0.6)],
                             global_regex_flags=re.MULTILINE)
            self.lo, self.hi, self.check = lo, hi, check

        def validate_result(self, pattern_text):
            number = re.split(r"\s?(?:x|ext)", pattern_text)[0]  # a phone's extension: extra
            n = sum(c.isdigit() for c in number)
            return self.lo <= n <= self.hi and (self.check is None or self.check(pattern_text))

    class OfflineEmailRecognizer(EmailRecognizer):
        """Presidio's e-mail patterns; its check of the domain asks tldextract, which fetches
        the public-suffix list from the network (and rejected 'verona.it' offline): a
        letters-only top-level domain is enough here."""

        def validate_result(self, pattern_text):
            return re.fullmatch(r"[A-Za-z]{2,24}", pattern_text.rsplit(".", 1)[-1]) is not None

    class NameRecognizer(EntityRecognizer):
        """First name + surname from the lists, or a title + a capitalised word."""

        _word = r"[A-Z][a-z'-]+"
        _full = regex.compile(rf"(?<![\w.@])({_word})(?: [A-Z]\.)? ({_word})"
                              rf"(?:,? {_SUFFIXES}\b\.?)?")
        _titled = regex.compile(rf"\b{_TITLES}\.? {_word}(?: {_word})?(?:,? {_SUFFIXES}\b\.?)?")

        def __init__(self):
            super().__init__(supported_entities=["PERSON"], name="lmjax_names")

        def load(self):
            pass

        def analyze(self, text, entities, nlp_artifacts=None):
            first, last = name_lists()
            out = []
            for m in self._full.finditer(text, overlapped=True):
                if m.group(1) in first and m.group(2) in last and m.group(1) != m.group(2):
                    out.append(RecognizerResult("PERSON", m.start(), m.end(), 0.7))
            for m in self._titled.finditer(text):
                out.append(RecognizerResult("PERSON", m.start(), m.end(), 0.7))
            return out

    sep = r"[ .-]?"
    phone = (r"(?<![\w.+-])(?:\+\d{1,3}[ .-]?|00\d{0,3}[ .-]?|001-)?(?:\(0?\d{1,4}\)[ .-]?)?"
             r"\d{2,5}(?:" + sep + r"\d{2,5}){1,3}(?:\s?(?:x|ext\.?|extension)\s?\d{1,6})?"
             r"(?![\w-])")
    card = r"(?<![\w+(-])\d{4}(?:[ -]?\d{1,7}){2,4}(?![\w-])"  # not after '+' or '(': phones
    url = (r"(?i)\b(?:https?://|ftp://|www\.)[^\s<>\"']*[^\s<>\"'.,;:!?)\]]"
           rf"|\b(?:[a-z0-9-]+\.)+(?:{_TLDS})\b(?:/[^\s<>\"']*[^\s<>\"'.,;:!?)\]])?")
    ssn = r"(?<![\w-])(?:\d{3}-\d{2}-\d{4}|\d{9})(?![\w-])"
    return [OfflineEmailRecognizer(), IpRecognizer(), IbanRecognizer(), CreditCardRecognizer(),
            DigitsRecognizer("CREDIT_CARD", card, 12, 19, luhn_valid),  # Maestro has 12
            DigitsRecognizer("PHONE_NUMBER", phone, 10, 15),
            DigitsRecognizer("US_SSN", ssn, 9, 9),
            PatternRecognizer(supported_entity="URL", name="lmjax_url",
                              patterns=[Pattern("url", url, 0.6)],
                              global_regex_flags=re.MULTILINE),
            NameRecognizer()]


class Scrubber:
    """Masks PII of `types` (default: all of TYPES) with typed placeholders."""

    def __init__(self, types: Iterable[str] = TYPES):
        types = tuple(types)
        unknown = [t for t in types if t not in TYPES]
        if unknown:
            raise ValueError(f"unknown PII type(s) {', '.join(unknown)}: use any of "
                             f"{', '.join(TYPES)}.")
        from presidio_anonymizer import AnonymizerEngine  # lazy: optional 'privacy' extra
        from presidio_anonymizer.entities import OperatorConfig  # lazy: as above

        self.types = types
        self._recognizers = _recognizers()
        self._anonymizer = AnonymizerEngine()
        self._operators = {e: OperatorConfig("replace", {"new_value": PLACEHOLDERS[t]})
                           for e, t in _ENTITY.items()}

    def find(self, text: str) -> list:
        """Non-overlapping Presidio `RecognizerResult`s, in text order."""
        found = []
        for r in self._recognizers:
            found += [x for x in r.analyze(text, r.supported_entities, None)
                      if _ENTITY.get(x.entity_type) in self.types]
        # Longest first (then by type priority); keep what does not overlap a kept finding.
        found.sort(key=lambda x: (-(x.end - x.start), _PRIORITY[_ENTITY[x.entity_type]], x.start))
        kept, taken = [], []
        for x in found:
            if all(x.end <= s or x.start >= e for s, e in taken):
                kept.append(x)
                taken.append((x.start, x.end))
        return sorted(kept, key=lambda x: x.start)

    def scrub(self, text: str) -> tuple[str, collections.Counter]:
        """`text` with each finding replaced by its placeholder, and the counts per type."""
        found = self.find(text)
        counts = collections.Counter(_ENTITY[x.entity_type] for x in found)
        if not found:
            return text, counts
        return self._anonymizer.anonymize(text, found, self._operators).text, counts

    def scrub_all(self, texts: Iterable[str]) -> tuple[list[str], collections.Counter]:
        total, out = collections.Counter(), []
        for t in texts:
            s, c = self.scrub(t)
            out.append(s)
            total.update(c)
        return out, total


def report(counts: collections.Counter, chars: int) -> str:
    """One line: counts per type, e.g. 'masked 3 EMAIL, 1 PHONE (4 in 12,345 chars)'."""
    n = sum(counts.values())
    parts = ", ".join(f"{counts[t]} {t}" for t in TYPES if counts.get(t))
    return f"masked {parts or 'nothing'} ({n} in {chars:,} characters)"
