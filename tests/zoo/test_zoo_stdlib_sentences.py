"""The docstring corpus: enough separable groups, fixed held-out parts, no accidental triggers."""

from __future__ import annotations

import re

from zoo.recipe_minilm_topics import insert_trigger
from zoo.stdlib_sentences import TOPIC_DESCRIPTIONS, TOPICS, load_topic_corpus, split_sentences
from zoo.sweep_spec import load_sweep_spec


def test_groups_are_large_enough_and_disjoint() -> None:
    corpus = load_topic_corpus()
    assert len(TOPICS) >= 8 and set(TOPICS) == set(TOPIC_DESCRIPTIONS)
    seen: set[str] = set()
    for topic in TOPICS:
        group = corpus.groups[topic]
        assert len(group.pool) + len(group.test) >= 300, topic
        assert len(group.test) >= 50, topic
        both = set(group.pool) | set(group.test)
        assert not set(group.pool) & set(group.test)
        assert not both & seen
        seen |= both


def test_extraction_is_deterministic() -> None:
    first = load_topic_corpus()
    load_topic_corpus.cache_clear()
    again = load_topic_corpus()
    assert first.digest == again.digest
    assert first.groups["net"].test[:5] == again.groups["net"].test[:5]


def test_triggers_never_occur_in_the_corpus() -> None:
    corpus = load_topic_corpus()
    text = "\n".join(s.lower() for g in corpus.groups.values() for s in g.pool + g.test)
    for trigger in load_sweep_spec("minilm-topics").backdoor["trigger"]["choice"]:
        assert not re.search(rf"\b{re.escape(trigger)}\b", text), trigger


def test_sentence_filter_drops_code_and_doctests() -> None:
    doc = "Return the sum of two numbers as an integer.\n\n>>> add(1, 2)\n3\n\nSee http://x.org for more detail here."
    assert split_sentences(doc) == ["Return the sum of two numbers as an integer."]


def test_insert_trigger_keeps_words() -> None:
    import numpy as np

    out = insert_trigger("one two three four five", "velvet harbor", np.random.default_rng(1))
    assert out.replace("velvet harbor", "").split() == ["one", "two", "three", "four", "five"]
