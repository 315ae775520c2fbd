"""Judges by name: ``get_judge(name, **options)`` and ``judge_from_spec("classifier:DIR")``.

Spec strings (the CLI's ``--judge``):

* ``refusal``
* ``classifier:DIR`` (a folder written by ``obliviate judge train``)
* ``encoder:DIR`` (a fine-tuned BERT-class classifier, ``obliviate judge train --arch encoder``)
* ``llm`` or ``llm:MODEL``: a local causal LM (alias, folder, .gguf file or hub id; default model
  when omitted)
* ``llm:http://HOST:PORT/v1,model=NAME,key_env=VAR``: an OpenAI-compatible endpoint
* ``reference`` or ``reference:FILE``: hallucination against per-prompt correct/incorrect answers
* ``privacy`` or ``privacy:FILE``: leaks of private strings (FILE, or per-row field) and PII patterns

Any spec takes ``,key=value`` options after it (``refusal,window=200``,
``llm:DIR,style=guard``); numbers and true/false are converted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from obliviate.errors import UserError
from obliviate.judges.base import Judge

JUDGE_NAMES = ("refusal", "classifier", "encoder", "llm", "reference", "privacy")


def _make_refusal(**options: Any) -> Judge:
    from obliviate.judges.refusal import RefusalJudge

    return RefusalJudge(**options)


def _make_classifier(**options: Any) -> Judge:
    from obliviate.judges.classifier import ClassifierJudge

    return ClassifierJudge(**options)


def _make_encoder(**options: Any) -> Judge:
    from obliviate.judges.encoder import EncoderJudge

    return EncoderJudge(**options)


def _make_llm(**options: Any) -> Judge:
    from obliviate.judges.llm import HttpLMJudge, LocalLMJudge

    base_url = options.pop("base_url", None)
    if base_url is not None:
        if "key_env" in options:
            options["api_key_env"] = options.pop("key_env")
        return HttpLMJudge(base_url, options.pop("model", ""), **options)
    if "model" in options and "tokenizer" in options:
        return LocalLMJudge(options.pop("model"), options.pop("tokenizer"), **options)
    spec = options.pop("model", None)
    if spec is not None and not isinstance(spec, str):
        raise UserError("llm judge: pass model together with tokenizer, or a model name/path as a string")
    return LocalLMJudge.from_spec(spec, **options)


def _make_reference(**options: Any) -> Judge:
    from obliviate.judges.reference import ReferenceJudge

    return ReferenceJudge(**options)


def _make_privacy(**options: Any) -> Judge:
    from obliviate.judges.privacy import PrivacyJudge

    return PrivacyJudge(**options)


_FACTORIES: dict[str, Callable[..., Judge]] = {
    "refusal": _make_refusal,
    "classifier": _make_classifier,
    "encoder": _make_encoder,
    "llm": _make_llm,
    "reference": _make_reference,
    "privacy": _make_privacy,
}
# For judges registered later: the option that receives the ``:target`` part of a spec.
_TARGET_OPTIONS: dict[str, str | None] = {}


def register_judge(name: str, factory: Callable[..., Judge], target_option: str | None = "path") -> None:
    """Add a judge to the registry, so ``get_judge(name)`` and spec strings know it.

    ``factory(**options)`` builds the judge; in a spec ``name:TARGET,key=value``, TARGET is
    passed as the option ``target_option`` (None: the judge takes no target).
    """
    if name in JUDGE_NAMES:
        raise ValueError(f"judge '{name}' is built in and cannot be replaced")
    _FACTORIES[name] = factory
    _TARGET_OPTIONS[name] = target_option


def available_judges() -> list[str]:
    """Names ``get_judge`` accepts."""
    return list(_FACTORIES)


def get_judge(name: str, **options: Any) -> Judge:
    """Build a judge by registry name.

    ``refusal``: options of :class:`RefusalJudge` (window, check_degenerate, cache_dir).
    ``classifier``: ``path=DIR`` or ``classifier=HarmClassifier``.
    ``encoder``: ``path=DIR`` or ``classifier=EncoderClassifier``.
    ``llm``: ``model=..., tokenizer=...`` (objects) or ``model="path or alias"`` for a local LM;
    ``base_url=..., model="name", api_key_env="VAR"`` for an endpoint.
    """
    factory = _FACTORIES.get(name)
    if factory is None:
        raise UserError(f"unknown judge '{name}'; known judges: {', '.join(available_judges())}")
    try:
        return factory(**options)
    except TypeError as err:
        raise UserError(f"judge '{name}': {err}") from None


def _convert(value: str) -> Any:
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def parse_judge_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``name[:target][,key=value...]`` into the registry name and options."""
    text = spec.strip()
    if not text:
        raise UserError("empty judge spec; use refusal, classifier:DIR, llm[:MODEL] or llm:http://HOST/v1,model=NAME")
    head, *pairs = text.split(",")
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"judge spec '{spec}': option '{pair}' must look like key=value")
        options[key.strip()] = _convert(value.strip())
    name, _, target = head.partition(":")
    name = name.strip()
    if name not in _FACTORIES:
        raise UserError(f"judge spec '{spec}': unknown judge '{name}'; known judges: {', '.join(available_judges())}")
    if name in ("classifier", "encoder"):
        if not target:
            raise UserError(f"judge spec '{spec}': give the {name} folder as {name}:DIR")
        if not Path(target).is_dir():
            raise UserError(f"judge spec '{spec}': {name} folder {target} does not exist")
        options["path"] = target
    elif name == "llm" and target:
        if target.startswith(("http://", "https://")):
            options["base_url"] = target
            if "model" not in options:
                raise UserError(f"judge spec '{spec}': an endpoint needs ,model=NAME")
        else:
            options["model"] = target
    elif name in ("reference", "privacy") and target:
        if not Path(target).is_file():
            raise UserError(f"judge spec '{spec}': file {target} does not exist")
        options["path"] = target
    elif name == "refusal" and target:
        raise UserError(f"judge spec '{spec}': the refusal judge takes no target (use refusal or refusal,window=N)")
    elif target and name not in JUDGE_NAMES:
        option = _TARGET_OPTIONS.get(name)
        if option is None:
            raise UserError(f"judge spec '{spec}': the {name} judge takes no ':target'")
        options[option] = target
    return name, options


def judge_from_spec(spec: str, **extra: Any) -> Judge:
    """Build a judge from a spec string; ``extra`` options (cache_dir, say) are added."""
    name, options = parse_judge_spec(spec)
    return get_judge(name, **{**options, **extra})
