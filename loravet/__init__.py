"""loravet: self-hosted vetting for LoRA adapters (console entry point and version)."""

__version__ = "0.1.0"
