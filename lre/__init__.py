"""lre: spoken language recognition with attention-based hierarchical GRUs."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Identifier", "__version__"]


def __getattr__(name: str):
    # Import lazily: `import lre` must stay cheap for the CLI and for data-prep jobs.
    if name == "Identifier":
        from lre.identify import Identifier

        return Identifier
    raise AttributeError(f"module 'lre' has no attribute {name!r}")
