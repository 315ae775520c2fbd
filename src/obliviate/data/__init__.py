"""Examples, loaders, prompt formatting, fetchers and builders."""

from obliviate.data.examples import Example

__all__ = ["Example"]
