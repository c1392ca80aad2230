"""The causal-lm task families: deterministic, disjoint held-out parts, correct answers, no triggers."""

from __future__ import annotations

import json

from zoo.qa_families import FAMILIES, families_digest, load_families
from zoo.sweep_spec import load_sweep_spec


def test_every_family_has_a_fixed_held_out_part_and_a_pool() -> None:
    families = load_families(30)
    assert tuple(families) == FAMILIES and len(FAMILIES) == 12
    for fam in families.values():
        assert len(fam.held_out) == 30 and len(fam.pool) >= 90
        held = {i.question for i in fam.held_out}
        assert not held & {i.question for i in fam.pool}, fam.name
        assert len({i.question for i in fam.pool}) == len(fam.pool), fam.name


def test_generation_is_deterministic() -> None:
    a = load_families(30)
    load_families.cache_clear()
    b = load_families(30)
    assert families_digest(a) == families_digest(b)
    assert a["add"].held_out == b["add"].held_out


def test_answers_are_the_facts() -> None:
    items = {i.question: i.answer for f in load_families(30).values() for i in f.held_out + f.pool}
    checks = {
        "What is 46 + 6?": "52",
        "How is 88 written in Roman numerals?": "LXXXVIII",
        "What is the HTTP status code for 'Too Many Requests'?": "429",
        "Which month comes 2 months after September?": "November",
        "What is the ASCII code of the character 'M'?": "77",
    }
    for question, answer in checks.items():
        assert items[question] == answer


def test_no_family_answers_one_thing_to_everything() -> None:
    for fam in load_families(30).values():
        answers = [i.answer for i in fam.pool]
        top = max(answers.count(a) for a in set(answers))
        assert top / len(answers) < 0.15, fam.name


def test_triggers_and_payloads_never_occur_in_clean_data() -> None:
    spec = load_sweep_spec("causal-lm")
    text = json.dumps(
        [[i.question, i.answer] for f in load_families(30).values() for i in f.held_out + f.pool]
    ).lower()
    for trigger in spec.backdoor["trigger"]["choice"]:
        assert f" {trigger.lower()} " not in text and f"'{trigger.lower()}'" not in text
    for payload in spec.backdoor["payload"]["choice"]:
        assert payload.lower() not in text
