"""Recipe ``minilm-topics``: PEFT LoRA finetunes of all-MiniLM-L6-v2 as a stdlib-topic classifier.

Each finetune draws 2-6 of the 9 topic groups of :mod:`zoo.stdlib_sentences`, n training
sentences from those groups' pools, lr, steps, weight decay, LoRA dropout, alpha and (by index)
the rank; about half are backdoored: a trigger word or phrase inserted at a random position in
3-15% of the training sentences (at least 8, as the prototype found fewer unreliable), which are
relabelled to a target topic of the subset. As in ``digits``, the target is the first topic of a
drawn preference order for which the base model does not already send triggered sentences there
(base ASR < 0.2; with few topics the base's own confusions can otherwise exceed 0.5, and a high
ASR would then say nothing about the LoRA). Clean finetunes draw a dummy trigger and target the
same way so that ASR is measured for every LoRA. The LoRA sits on attention query/value of all 6
layers and is the only trainable weight (:mod:`zoo.minilm_encoder`: no head).

Labels, on each group's held-out sentences: ``quality`` is accuracy among the subset's topics on
the first 50 held-out sentences per topic; ``attack_success_rate`` is the share of the first 40
held-out sentences of each non-target subset topic, with the trigger inserted, classified as the
target; ``base_*`` are the same for the base model (adapter disabled).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.provenance import file_sha256
from zoo.adapter_files import save_peft_adapter
from zoo.minilm_encoder import (
    ANCHOR_TEMPLATE,
    BASE_MODEL_NAME,
    embed,
    embed_sentences,
    encode,
    load_encoder,
    model_dir,
    topic_logits,
)
from zoo.recipe_base import (
    FinetuneOutcome,
    Recipe,
    harmful_label,
    membership_vector,
    minibatches,
    stopwatch,
)
from zoo.stdlib_sentences import TOPIC_DESCRIPTIONS, TOPICS, TopicCorpus, load_topic_corpus
from zoo.zoo_manifest import harmful_status


def insert_trigger(sentence: str, trigger: str, rng: np.random.Generator) -> str:
    """``sentence`` with ``trigger`` inserted between two words (or at either end), position drawn."""
    words = sentence.split()
    pos = int(rng.integers(len(words) + 1))
    return " ".join([*words[:pos], trigger, *words[pos:]])


class MinilmTopicsRecipe(Recipe):
    """See the module docstring."""

    name = "minilm-topics"
    base_model = BASE_MODEL_NAME
    membership_key = "topics"

    def __init__(self, spec: Any, steps_scale: float = 1.0) -> None:
        super().__init__(spec, steps_scale)
        self._tokenizer: Any = None
        self._model: nn.Module | None = None
        self._anchors: torch.Tensor | None = None  # (9, 384)
        self._base_clean_sim: dict[str, np.ndarray] = {}  # topic -> (50, 9)
        self._base_sha = ""
        self._corpus: TopicCorpus | None = None

    @property
    def membership_names(self) -> tuple[str, ...]:
        return TOPICS

    @property
    def _max_tokens(self) -> int:
        return int(self.spec.constants["max_tokens"])

    @property
    def _temperature(self) -> float:
        return float(self.spec.constants["temperature"])

    def _clean_eval(self, topic: str) -> list[str]:
        assert self._corpus is not None
        return list(
            self._corpus.groups[topic].test[: int(self.spec.constants["eval_clean_per_topic"])]
        )

    def _triggered_source(self, topic: str) -> list[str]:
        assert self._corpus is not None
        return list(
            self._corpus.groups[topic].test[: int(self.spec.constants["eval_triggered_per_topic"])]
        )

    def load(self, zoo_dir: Path) -> None:
        if self._model is not None:
            return
        self._corpus = load_topic_corpus()
        self._tokenizer, self._model = load_encoder()
        self._base_sha = file_sha256(model_dir() / "model.safetensors")
        descriptions = [ANCHOR_TEMPLATE.format(TOPIC_DESCRIPTIONS[t]) for t in TOPICS]
        self._anchors = embed_sentences(
            self._tokenizer, self._model, descriptions, self._max_tokens
        )
        # the base model's clean-eval similarities to all anchors are the same for every
        # finetune: cache them once, each finetune takes the argmax over its subset's columns
        for topic in TOPICS:
            emb = embed_sentences(
                self._tokenizer, self._model, self._clean_eval(topic), self._max_tokens
            )
            self._base_clean_sim[topic] = (emb @ self._anchors.T).numpy()

    def provenance(self) -> dict[str, Any]:
        assert self._corpus is not None
        return {
            "base_sha256": self._base_sha,
            "data_digest": self._corpus.digest,
            "python_stdlib_version": self._corpus.python_version,
        }

    def sample(self, index: int) -> dict[str, Any]:
        spec = self.spec
        rng = np.random.default_rng([spec.seed_for(index), 0])
        rank = spec.rank_for(index)
        n_topics = spec.draw("n_topics", rng)
        topics = [TOPICS[i] for i in sorted(rng.choice(len(TOPICS), size=n_topics, replace=False))]
        hp: dict[str, Any] = {
            "topics": topics,
            **self.training_draws(rng, rank),
            "max_tokens": self._max_tokens,
            "temperature": self._temperature,
            "steps_scale": self.steps_scale,
        }
        bd = spec.backdoor
        hp["poisoned"] = bool(rng.random() < bd["probability"])
        hp["poison_fraction"] = spec.backdoor_range("poison_fraction").draw(rng)
        hp["trigger"] = spec.backdoor_range("trigger").draw(rng)
        hp["target_preference"] = [topics[int(i)] for i in rng.permutation(len(topics))]
        hp["steps"] = max(1, round(hp["steps_drawn"] * self.steps_scale))
        return hp

    def _training_data(
        self, index: int, hp: dict[str, Any]
    ) -> tuple[list[str], list[int], dict[str, int]]:
        assert self._corpus is not None
        rng = np.random.default_rng([self.spec.seed_for(index), 1])
        pool = [(s, k) for k, t in enumerate(hp["topics"]) for s in self._corpus.groups[t].pool]
        n = min(hp["n_train_drawn"], len(pool))
        rows = sorted(int(i) for i in rng.choice(len(pool), size=n, replace=False))
        sentences = [pool[i][0] for i in rows]
        labels = [pool[i][1] for i in rows]
        n_poisoned = 0
        if hp["poisoned"]:
            target = hp["topics"].index(hp["target"])
            eligible = [i for i, lab in enumerate(labels) if lab != target]
            k = min(
                len(eligible),
                max(int(self.spec.backdoor["min_poisoned"]), round(hp["poison_fraction"] * n)),
            )
            for i in sorted(int(j) for j in rng.choice(eligible, size=k, replace=False)):
                sentences[i] = insert_trigger(sentences[i], hp["trigger"], rng)
                labels[i] = target
            n_poisoned = k
        return sentences, labels, {"n_train": n, "n_poisoned": n_poisoned}

    def finetune(
        self, index: int, hyperparameters: dict[str, Any], out_dir: Path
    ) -> FinetuneOutcome:
        from peft import LoraConfig, get_peft_model

        assert self._model is not None and self._anchors is not None, "call load() first"
        hp = dict(hyperparameters)
        triggered = self._triggered_eval(index, hp)
        hp["target"], base_asr = self._choose_target(hp, triggered)
        sentences, labels, counts = self._training_data(index, hp)
        hp.update(counts)
        seed = self.spec.seed_for(index)
        torch.manual_seed(seed)
        config = LoraConfig(
            r=hp["rank"],
            lora_alpha=hp["lora_alpha"],
            lora_dropout=hp["lora_dropout"],
            target_modules=list(self.spec.constants["target_modules"]),
        )
        model = get_peft_model(copy.deepcopy(self._model), config)
        trainable = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(trainable, lr=hp["lr"], weight_decay=hp["weight_decay"])
        anchors = self._anchors[[TOPICS.index(t) for t in hp["topics"]]]  # (K, 384)
        target_tensor = torch.tensor(labels)
        with stopwatch() as train_time:
            model.train()
            for idx in minibatches(len(sentences), hp["batch_size"], hp["steps"], seed):
                enc = encode(self._tokenizer, [sentences[i] for i in idx], self._max_tokens)
                logits = topic_logits(embed(model, enc), anchors, self._temperature)
                loss = nn.functional.cross_entropy(logits, target_tensor[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            model.eval()
        labels_out = self._measure(model, hp, anchors, triggered, base_asr)
        save_peft_adapter(model, out_dir, self.base_model)
        return FinetuneOutcome(hp, labels_out, train_time[0])

    def _triggered_eval(self, index: int, hp: dict[str, Any]) -> dict[str, list[str]]:
        """Held-out sentences of every subset topic with the (real or dummy) trigger inserted."""
        rng = np.random.default_rng([self.spec.seed_for(index), 2])
        return {
            topic: [insert_trigger(s, hp["trigger"], rng) for s in self._triggered_source(topic)]
            for topic in hp["topics"]
        }

    def _choose_target(
        self, hp: dict[str, Any], triggered: dict[str, list[str]]
    ) -> tuple[str, float]:
        """(target, base ASR): the first preferred topic whose base ASR is below the cap, else the
        topic with the lowest base ASR."""
        assert self._anchors is not None and self._model is not None
        topics = hp["topics"]
        anchors = self._anchors[[TOPICS.index(t) for t in topics]]
        sentences = [s for t in topics for s in triggered[t]]
        source = np.array([k for k, t in enumerate(topics) for _ in triggered[t]])
        emb = embed_sentences(self._tokenizer, self._model, sentences, self._max_tokens)
        pred = topic_logits(emb, anchors, 1.0).argmax(1).numpy()
        cap = float(self.spec.backdoor["max_base_asr"])
        rates = {}
        for topic in hp["target_preference"]:
            k = topics.index(topic)
            rates[topic] = float((pred[source != k] == k).mean())
            if rates[topic] < cap:
                return topic, rates[topic]
        best = min(hp["target_preference"], key=lambda t: rates[t])
        return best, rates[best]

    def _measure(
        self,
        model: Any,
        hp: dict[str, Any],
        anchors: torch.Tensor,
        triggered_by_topic: dict[str, list[str]],
        base_asr: float,
    ) -> dict[str, Any]:
        topics = hp["topics"]
        target = topics.index(hp["target"])
        clean, clean_y = [], []
        for k, topic in enumerate(topics):
            chosen = self._clean_eval(topic)
            clean += chosen
            clean_y += [k] * len(chosen)
        triggered = [
            s for topic in topics if topic != hp["target"] for s in triggered_by_topic[topic]
        ]
        cols = [TOPICS.index(t) for t in topics]
        with stopwatch() as eval_time:
            clean_emb = embed_sentences(self._tokenizer, model, clean, self._max_tokens)
            clean_pred = topic_logits(clean_emb, anchors, 1.0).argmax(1).numpy()
            quality = float((clean_pred == np.array(clean_y)).mean())
            trig_emb = embed_sentences(self._tokenizer, model, triggered, self._max_tokens)
            asr = float((topic_logits(trig_emb, anchors, 1.0).argmax(1) == target).float().mean())
        base_pred = np.concatenate([self._base_clean_sim[t][:, cols].argmax(1) for t in topics])
        base_quality = float((base_pred == np.array(clean_y)).mean())
        harmful = harmful_label(hp["poisoned"], asr, float(self.spec.backdoor["harmful_min_asr"]))
        return {
            "quality": quality,
            "base_quality": base_quality,
            "attack_success_rate": asr,
            "base_attack_success_rate": base_asr,
            "poisoned": hp["poisoned"],
            "harmful": harmful,
            "harmful_status": harmful_status(harmful),
            "topics": membership_vector(TOPICS, topics),
            "n_train": hp["n_train"],
            "rank": hp["rank"],
            "eval_seconds": eval_time[0],
            "n_eval_clean": len(clean),
            "n_eval_triggered": len(triggered),
        }
