"""obliviate: machine unlearning for large language models."""

from obliviate import memory_tuning as _memory_tuning

# Before anything imports torch: its CPU allocator reads THP_MEM_ALLOC_ENABLE once
# (obliviate.memory_tuning says why and how to opt out).
_memory_tuning.tune()

__version__ = "0.1.0"
