"""Small shared helpers: atomic file writes, JSON, devices, seeding."""

from .io import atomic_write_bytes, atomic_write_json, atomic_write_text, atomic_save_torch, read_json, append_jsonl
from .device import resolve_device, seed_everything

__all__ = [
    "append_jsonl", "atomic_save_torch", "atomic_write_bytes", "atomic_write_json", "atomic_write_text",
    "read_json", "resolve_device", "seed_everything",
]
