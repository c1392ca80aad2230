"""loravet: self-hosted vetting for LoRA adapters (console entry point, version, shipped data)."""

from pathlib import Path

__version__ = "0.1.0"

SHIPPED_PREDICTORS = Path(__file__).resolve().parent.parent / "predictors"
"""The trained predictors that ship with loravet (loaded by default by workers and `loravet vet`)."""
