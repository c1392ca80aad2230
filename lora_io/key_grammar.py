"""Key grammar of the LoRA conventions found in the wild, and refusal of the variants we do not read.

Standard library only, so the API can pair factors and refuse variants from the header alone.
Factors are paired by grammar (module path + role), never by key order, and module names are
normalised to one dotted form so the same base model gives the same module names whatever tool
wrote the file:

* ``peft``: ``base_model.model.<path>.lora_A[.<adapter>].weight`` -> ``<path>``;
* ``diffusers`` (PEFT-backed): ``unet.<path>.lora_A.weight`` -> ``unet.<path>``;
* ``diffusers_legacy``: ``unet.<path>.processor.to_q_lora.down.weight`` -> ``unet.<path>.to_q``;
* ``kohya``: ``lora_unet_down_blocks_0_..._to_q.lora_down.weight`` -> ``unet.down_blocks.0....to_q``
  (underscores become dots except inside known compound names such as ``transformer_blocks``);
  SDXL files written with SAI block names keep them (``unet.input_blocks.4.1....``).

Role ``A`` is PEFT's ``lora_A`` / kohya's ``lora_down`` (r x in), ``B`` is ``lora_B`` / ``lora_up``
(out x r); ``alpha`` is a scalar per module (kohya, diffusers ``network_alphas``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, cast

from lora_io.errors import NotALoraError, UnpairedFactorError, UnsupportedVariantError

LoraFormat = Literal["peft", "diffusers", "diffusers_legacy", "kohya"]

ACCEPTED = (
    "accepted: plain LoRA in PEFT (`<module>.lora_A.weight` / `lora_B.weight`), kohya "
    "(`lora_unet_*` / `lora_te*_*` with `.lora_down.weight` / `.lora_up.weight` / `.alpha`) or "
    "diffusers (`unet.*` / `text_encoder*.*` with lora_A/lora_B, or `*_lora.down/up.weight`) keys"
)

# (marker found in a key, what it is): checked on every key before any pairing.
_VARIANT_MARKERS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), name)
    for p, name in (
        (r"(^|[._])hada_(w|t)\d", "LoHa (LyCORIS/PEFT Hadamard-product adapter)"),
        (r"(^|[._])lokr_(w|t)\d", "LoKr (LyCORIS/PEFT Kronecker-product adapter)"),
        (r"(^|[._])(lora_magnitude_vector|dora_scale)($|[._])", "DoRA (weight-decomposed LoRA)"),
        (
            r"(^|[._])(oft_blocks|oft_r|oft_s|boft_[a-z]+)($|[._])",
            "OFT/BOFT (orthogonal finetuning)",
        ),
        (r"(^|[._])(ia3_l|on_input)($|[._])", "IA3 (learned rescaling vectors)"),
        (r"(^|[._])lora_mid($|[._])", "LyCORIS LoCon with a Tucker core (lora_mid)"),
        (r"\.(diff|diff_b)$", "a full-weight diff (LyCORIS `full`)"),
        (r"\.(a1|a2|b1|b2|bm)\.weight$", "GLoRA"),
        (r"(^|[._])vera_lambda_[bd]($|[._])", "VeRA"),
        (r"(^|[._])lora_embedding_[AB]($|[._])", "LoRA on embedding layers (lora_embedding_A/B)"),
        (r"(^|[._])lora_B\.bias$", "LoRA with a trained bias (lora_bias)"),
    )
)

_PEFT_RE = re.compile(
    r"^(?P<mod>.+?)\.lora_(?P<role>A|B)(?:\.(?P<adapter>[A-Za-z0-9_\-]+))?\.weight$"
)
_KOHYA_RE = re.compile(
    r"^(?P<mod>lora_(?:unet|te\d?)_[A-Za-z0-9_]+)\.(?P<role>lora_down\.weight|lora_up\.weight|alpha)$"
)
_LEGACY_PROC_RE = re.compile(
    r"^(?P<mod>.+?)(?:\.processor)?\.(?P<proj>to_q|to_k|to_v|to_out|q_proj|k_proj|v_proj|out_proj)_lora\.(?P<role>down|up)\.weight$"
)
_LEGACY_LINEAR_RE = re.compile(r"^(?P<mod>.+?)\.lora_linear_layer\.(?P<role>down|up)\.weight$")
_ALPHA_RE = re.compile(r"^(?P<mod>.+)\.alpha$")

_DIFFUSERS_PREFIXES = (
    "unet.",
    "text_encoder.",
    "text_encoder_2.",
    "text_encoder_3.",
    "transformer.",
    "prior.",
)
_KOHYA_PREFIXES = {"lora_unet": "unet", "lora_te": "text_encoder", "lora_te1": "text_encoder",
                   "lora_te2": "text_encoder_2", "lora_te3": "text_encoder_3"}  # fmt: skip

# Multi-word module names that must keep their underscores when kohya names become dotted paths.
_COMPOUNDS = {
    tuple(c.split("_"))
    for c in [
        "down_blocks",
        "up_blocks",
        "mid_block",
        "transformer_blocks",
        "to_q",
        "to_k",
        "to_v",
        "to_out",
        "proj_in",
        "proj_out",
        "conv_in",
        "conv_out",
        "conv_shortcut",
        "time_emb_proj",
        "time_embedding",
        "linear_1",
        "linear_2",
        "text_model",
        "self_attn",
        "q_proj",
        "k_proj",
        "v_proj",
        "out_proj",
        "final_layer_norm",
        "input_blocks",
        "output_blocks",
        "middle_block",
        "emb_layers",
        "in_layers",
        "out_layers",
        "skip_connection",
        "add_embedding",
        "label_emb",
        "time_embed",
        "norm_out",
        "conv_norm_out",
        "text_projection",
        "embed_tokens",
        "gate_proj",
        "up_proj",
        "down_proj",
        "o_proj",
        "lm_head",
        "layer_norm1",
        "layer_norm2",
        "add_k_proj",
        "add_v_proj",
        "add_q_proj",
        "to_add_out",
        "attention_mask",
    ]
}
_LEGACY_TEXT_PROJ = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"}


@dataclass(frozen=True)
class ModuleKeys:
    """The keys of one adapted module: ``a`` (r x in[...]), ``b`` (out x r[...]), optional ``alpha``."""

    name: str
    a: str
    b: str
    alpha: str | None = None


@dataclass(frozen=True)
class KeyLayout:
    """How a file's keys map to modules: the detected format and one entry per adapted module."""

    format: LoraFormat
    modules: tuple[ModuleKeys, ...]
    adapter_name: str | None = None


def natural_key(name: str) -> tuple[object, ...]:
    """Sort key that orders ``layers.2`` before ``layers.10`` (stable module order for specs)."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name))


def kohya_to_dotted(lora_name: str) -> str:
    """``lora_unet_down_blocks_0_attentions_0_proj_in`` -> ``unet.down_blocks.0.attentions.0.proj_in``."""
    for prefix in sorted(_KOHYA_PREFIXES, key=len, reverse=True):
        if lora_name.startswith(prefix + "_"):
            head, rest = _KOHYA_PREFIXES[prefix], lora_name[len(prefix) + 1 :]
            break
    else:  # pragma: no cover - the regex guarantees a known prefix
        raise NotALoraError(f"kohya module {lora_name!r} has no lora_unet/lora_te prefix")
    tokens, parts, i = rest.split("_"), [], 0
    while i < len(tokens):
        for width in (3, 2):
            if tuple(tokens[i : i + width]) in _COMPOUNDS:
                parts.append("_".join(tokens[i : i + width]))
                i += width
                break
        else:
            parts.append(tokens[i])
            i += 1
    return ".".join([head, *parts])


def detect_variant(keys: Iterable[str]) -> None:
    """Raise :class:`UnsupportedVariantError` naming the first non-LoRA variant found in the keys."""
    for key in keys:
        for pattern, name in _VARIANT_MARKERS:
            if pattern.search(key):
                raise UnsupportedVariantError(
                    f"this adapter is {name} (key {key!r}); loravet reads plain low-rank LoRA only. {ACCEPTED}"
                )


def parse_keys(keys: Iterable[str]) -> KeyLayout:
    """Detect the format, refuse variants, and pair every factor with its partner by grammar.

    Raises:
        UnsupportedVariantError: LoHa, LoKr, DoRA, OFT, IA3, full diffs, ...
        UnpairedFactorError: an A without a B (or the reverse), or an alpha without factors.
        NotALoraError: keys that follow no LoRA grammar, or a mix of conventions.
    """
    keys = list(keys)
    if not keys:
        raise NotALoraError(f"the file holds no tensors; {ACCEPTED}")
    detect_variant(keys)
    # role table: normalised module -> {"A": key, "B": key, "alpha": key}
    table: dict[str, dict[str, str]] = {}
    formats: set[str] = set()
    adapters: set[str] = set()
    unknown: list[str] = []
    alphas: list[tuple[str, str]] = []
    for key in keys:
        parsed = _parse_one(key)
        if parsed is None:
            m = _ALPHA_RE.match(key)
            if m:
                alphas.append((m["mod"], key))
            else:
                unknown.append(key)
            continue
        fmt, module, role, adapter = parsed
        formats.add(fmt)
        if adapter is not None:
            adapters.add(adapter)
        slot = table.setdefault(module, {})
        if role in slot:
            raise NotALoraError(
                f"module {module!r} has two {role} factors ({slot[role]!r} and {key!r})"
            )
        slot[role] = key
    if unknown:
        shown = ", ".join(repr(k) for k in unknown[:3])
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise NotALoraError(
            f"{len(unknown)} key(s) are not LoRA factors, e.g. {shown}{more} (full-weight tensors such "
            f"as modules_to_save copies are not accepted); {ACCEPTED}"
        )
    if not table:
        raise NotALoraError(f"no LoRA factor keys found; {ACCEPTED}")
    if len(formats) > 1:
        raise NotALoraError(
            f"the file mixes key conventions ({', '.join(sorted(formats))}); {ACCEPTED}"
        )
    if len(adapters) > 1:
        raise NotALoraError(
            f"the file holds several adapters ({', '.join(sorted(adapters))}); upload one adapter per file"
        )
    fmt = formats.pop()
    for module_raw, key in alphas:
        module = _normalise_alpha_module(fmt, module_raw)
        if module not in table:
            raise UnpairedFactorError(f"alpha key {key!r} has no matching LoRA factors")
        table[module]["alpha"] = key
    modules = []
    for name in sorted(table, key=natural_key):
        slot = table[name]
        for role, other in (("A", "B"), ("B", "A")):
            if role not in slot:
                present = slot.get(other)
                label = {"A": "lora_A / lora_down", "B": "lora_B / lora_up"}[role]
                raise UnpairedFactorError(
                    f"module {name!r} has {present!r} but no {label} factor; every LoRA module needs both"
                )
        modules.append(ModuleKeys(name=name, a=slot["A"], b=slot["B"], alpha=slot.get("alpha")))
    return KeyLayout(
        format=cast(LoraFormat, fmt),
        modules=tuple(modules),
        adapter_name=adapters.pop() if adapters else None,
    )


def _parse_one(key: str) -> tuple[str, str, str, str | None] | None:
    """(format, normalised module, role, adapter name) for a factor key, or None."""
    m = _KOHYA_RE.match(key)
    if m:
        role = {"lora_down.weight": "A", "lora_up.weight": "B", "alpha": "alpha"}[m["role"]]
        if role == "alpha":
            return None  # alphas are attached after pairing
        return "kohya", kohya_to_dotted(m["mod"]), role, None
    m = _LEGACY_PROC_RE.match(key)
    if m:
        return (
            "diffusers_legacy",
            _legacy_module(m["mod"], m["proj"]),
            "A" if m["role"] == "down" else "B",
            None,
        )
    m = _LEGACY_LINEAR_RE.match(key)
    if m:
        return "diffusers_legacy", m["mod"], "A" if m["role"] == "down" else "B", None
    m = _PEFT_RE.match(key)
    if m:
        module = m["mod"]
        if module.startswith(_DIFFUSERS_PREFIXES):
            return "diffusers", module, m["role"], m["adapter"]
        module = module.removeprefix("base_model.model.")
        return "peft", module, m["role"], m["adapter"]
    return None


def _legacy_module(path: str, proj: str) -> str:
    path = path.removesuffix(".processor")
    if path.startswith("text_encoder") and proj in _LEGACY_TEXT_PROJ:
        return f"{path}.{_LEGACY_TEXT_PROJ[proj]}"
    return f"{path}.{proj}.0" if proj == "to_out" else f"{path}.{proj}"


def _normalise_alpha_module(fmt: str, module: str) -> str:
    if fmt == "kohya" and module.startswith("lora_"):
        return kohya_to_dotted(module)
    if fmt == "peft":
        return module.removeprefix("base_model.model.")
    return module
