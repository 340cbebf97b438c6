"""The PII scrubber (lmjax/data/pii.py): recall per type on seeded synthetic PII, no false
positives on clean Shakespeare, typed placeholders, Luhn, counts, and data.scrub_pii."""

import collections
import json

import ml_collections
import numpy as np
import pytest

pytest.importorskip("presidio_analyzer")
from lmjax.data import pii, shakespeare  # noqa: E402
from lmjax.data.prepare import prepare  # noqa: E402


@pytest.fixture(scope="module")
def scrubber():
    return pii.Scrubber()


def _examples(n: int = 4) -> list[tuple[str, str]]:
    from faker import Faker

    fake = Faker("en_US")
    fake.seed_instance(18)
    make = {"EMAIL": fake.email, "PHONE": fake.phone_number, "CARD": fake.credit_card_number,
            "IBAN": fake.iban, "IP": fake.ipv4, "URL": fake.uri, "ID": fake.ssn,
            "PERSON": lambda: f"{fake.first_name()} {fake.last_name()}"}
    return [(kind, make[kind]()) for kind in pii.TYPES for _ in range(n)]


def test_each_type_is_found_whole_and_replaced_by_its_own_placeholder(scrubber):
    for kind, item in _examples():
        text = f"Thou art a villain, quoth he, {item} and went his way."
        out, counts = scrubber.scrub(text)
        assert out == f"Thou art a villain, quoth he, <{kind}> and went his way.", (kind, item)
        assert counts == collections.Counter({kind: 1})


def test_clean_shakespeare_with_its_speaker_names_and_titles_is_left_alone(scrubber):
    # Henry IV: speakers in capitals, "King Henry", "Prince John", "Lady Percy", verse lines
    # that start with capitals; it must come out unchanged.
    text = shakespeare.works()["henry_iv_part_1"][:30_000]
    out, counts = scrubber.scrub(text)
    assert sum(counts.values()) <= 3, [x for x in scrubber.find(text)][:5]
    assert len(out) >= len(text) - 60


def test_luhn():
    assert pii.luhn_valid("4111 1111 1111 1111") and pii.luhn_valid("79927398713")
    assert not pii.luhn_valid("4111 1111 1111 1112") and not pii.luhn_valid("79927398710")


def test_a_card_number_failing_luhn_is_not_a_card(scrubber):
    assert scrubber.scrub("card 4111 1111 1111 1111 ok")[0] == "card <CARD> ok"
    out, counts = scrubber.scrub("card 4111 1111 1111 1112 ok")
    assert counts["CARD"] == 0 and "<CARD>" not in out


def test_counts_and_report(scrubber):
    text = ("Write to a.b@example.org, c@d.net; call +1-202-555-0143; "
            "Dr. Watson was at 10.1.2.3. My ID is 123456789.")
    out, counts = scrubber.scrub(text)
    assert counts == collections.Counter(EMAIL=2, PHONE=1, PERSON=1, IP=1, ID=1)
    assert out == ("Write to <EMAIL>, <EMAIL>; call <PHONE>; <PERSON> was at <IP>. "
                   "My ID is <ID>.")
    assert pii.report(counts, len(text)) == (
        f"masked 2 EMAIL, 1 PHONE, 1 IP, 1 ID, 1 PERSON (6 in {len(text):,} characters)")
    with pytest.raises(ValueError, match="unknown PII type"):
        pii.Scrubber(["EMAIL", "SHOESIZE"])


def test_scrub_pii_gets_its_own_cache_and_masks_emails(tmp_path):
    (tmp_path / "a.txt").write_text("Mail romeo@verona.it tonight, good nurse.\n" * 20)
    (tmp_path / "b.txt").write_text("Mail nurse@verona.com tonight.\n" * 5)
    cfg = ml_collections.ConfigDict(dict(
        name="files", files=str(tmp_path / "*.txt"), val_fraction=0.5, text_key="text",
        max_examples=0, val_split="", tokenizer="char", vocab_size=0,
        cache_dir=str(tmp_path / "cache"), scrub_pii=False))
    plain = prepare(cfg, log=lambda s: None)
    cfg.scrub_pii = True
    scrubbed = prepare(cfg, log=lambda s: None)
    assert scrubbed.directory != plain.directory
    assert "romeo@verona.it" in plain.tokenizer.decode(np.asarray(plain.train))
    text = scrubbed.tokenizer.decode(np.asarray(scrubbed.train))
    assert "romeo@verona.it" not in text and text.count("Mail <EMAIL> tonight") == 20
    assert "Mail <EMAIL> tonight." in scrubbed.tokenizer.decode(np.asarray(scrubbed.val))
    assert scrubbed.meta["pii_masked"] == {"EMAIL": 25}
    cfg.name = "shards"
    with pytest.raises(ValueError, match="scrub_pii"):
        prepare(cfg, log=lambda s: None)


@pytest.mark.slow  # subprocesses
def test_the_scrub_command_on_text_and_jsonl(tmp_path, run_module):
    (tmp_path / "a.jsonl").write_text('{"text": "mail a@b.com", "id": 1}\n'
                                      '{"text": "call 10.0.0.1"}\n')
    r = run_module("scrub", f"--in={tmp_path / 'a.jsonl'}", f"--out={tmp_path / 'b.jsonl'}")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "b.jsonl").read_text() == ('{"text": "mail <EMAIL>", "id": 1}\n'
                                                  '{"text": "call <IP>"}\n')
    report = json.loads((tmp_path / "b.jsonl.pii.json").read_text())
    assert report["masked"]["EMAIL"] == 1 and report["masked"]["IP"] == 1
