"""Why a file is not an acceptable LoRA, as a small exception hierarchy.

Every message says what is wrong and what is accepted, because it is shown verbatim to the person
who uploaded the file (API problem+json ``detail``, CLI ``error:`` line, failed-job reason).
``kind`` is a stable machine-readable slug; ``http_status`` is what the API answers with.

    LoraFileError (ValueError)
    ├── FileTooLargeError          413  whole file or header above the caps
    ├── NotSafetensorsError        415  not a safetensors file at all
    │   └── PickleFileError        415  a pickle / torch zip: refused, never unpickled
    ├── HeaderError                422  malformed safetensors header or byte layout
    ├── UnsupportedDtypeError      422  factor dtype other than F16/BF16/F32/F64
    ├── UnsupportedVariantError    422  LoHa, LoKr, DoRA, OFT, IA3, full-weight diffs, ...
    ├── NotALoraError              422  keys that follow no LoRA grammar
    │   ├── UnpairedFactorError    422  an A without its B (or down without up)
    │   └── RankMismatchError      422  factor shapes that disagree on the rank
    ├── NonFiniteWeightsError      422  NaN or Inf in a factor
    └── AdapterConfigError         422  adapter_config.json unreadable or not a plain LoRA config
"""

from __future__ import annotations


class LoraFileError(ValueError):
    """Base class: the input is not an acceptable LoRA adapter."""

    kind = "invalid_lora"
    http_status = 422

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class FileTooLargeError(LoraFileError):
    kind = "too_large"
    http_status = 413


class NotSafetensorsError(LoraFileError):
    kind = "not_safetensors"
    http_status = 415


class PickleFileError(NotSafetensorsError):
    kind = "pickle_refused"


class HeaderError(LoraFileError):
    kind = "malformed_safetensors"


class UnsupportedDtypeError(LoraFileError):
    kind = "unsupported_dtype"


class UnsupportedVariantError(LoraFileError):
    kind = "unsupported_variant"


class NotALoraError(LoraFileError):
    kind = "not_a_lora"


class UnpairedFactorError(NotALoraError):
    kind = "unpaired_factor"


class RankMismatchError(NotALoraError):
    kind = "rank_mismatch"


class NonFiniteWeightsError(LoraFileError):
    kind = "non_finite"


class AdapterConfigError(LoraFileError):
    kind = "bad_adapter_config"
