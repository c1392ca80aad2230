"""lora_io: the one place that decides what a valid LoRA file is (no torch, ever).

from lora_io import load_adapter
adapter = load_adapter("adapter_model.safetensors", config="adapter_config.json")
adapter.modules[0].U @ adapter.modules[0].V.T   # the weight delta PEFT would apply
"""

from lora_io.adapter_config import AdapterConfig, parse_adapter_config
from lora_io.adapter_paths import resolve_adapter_paths
from lora_io.base_models import BaseModel, recognise_base_model
from lora_io.checks import CheckResult, run_checks
from lora_io.errors import (
    AdapterConfigError,
    FileTooLargeError,
    HeaderError,
    LoraFileError,
    NonFiniteWeightsError,
    NotALoraError,
    NotSafetensorsError,
    PickleFileError,
    RankMismatchError,
    UnpairedFactorError,
    UnsupportedDtypeError,
    UnsupportedVariantError,
)
from lora_io.key_grammar import KeyLayout, ModuleKeys, parse_keys
from lora_io.lora_adapter import (
    FactorLocation,
    FileLayout,
    LoraAdapter,
    LoraModule,
    check_adapter,
    file_layout,
    load_adapter,
    scaled_up_factor,
)
from lora_io.lora_spec import LoraSpec, ModuleShape
from lora_io.safetensors_header import SafetensorsHeader, TensorInfo, parse_header, read_header

__all__ = [
    "AdapterConfig", "AdapterConfigError", "BaseModel", "CheckResult", "FactorLocation", "FileLayout", "FileTooLargeError",
    "HeaderError", "KeyLayout", "LoraAdapter", "LoraFileError", "LoraModule", "LoraSpec",
    "ModuleKeys", "ModuleShape", "NonFiniteWeightsError", "NotALoraError", "NotSafetensorsError",
    "PickleFileError", "RankMismatchError", "SafetensorsHeader", "TensorInfo", "UnpairedFactorError",
    "UnsupportedDtypeError", "UnsupportedVariantError", "check_adapter", "file_layout", "load_adapter", "parse_adapter_config",
    "parse_header", "parse_keys", "read_header", "recognise_base_model", "resolve_adapter_paths", "run_checks",
    "scaled_up_factor",
]  # fmt: skip
