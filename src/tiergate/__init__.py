"""tiergate: a hybrid LLM gateway between self-hosted open-weight models and Claude."""

__version__ = "0.1.0"
__all__ = ["__version__"]
