"""loadbench: an honest, fast load tester for OpenAI-compatible LLM inference servers."""

__version__ = "0.1.0"
