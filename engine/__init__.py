"""Pure rules engine: YAML rule files in, validated models, evaluation, planned messages out.

Nothing in this package does network or database I/O; the server package does all of that.
The public API is re-exported here lazily (importing `engine` stays cheap):

    load_ruleset(rules_dir, templates_dir=None, *, catalogue=None, default_region=None) -> RuleSet
    evaluate(entity, record, ruleset, now, previous=None, *, event="updated") -> list[PlannedMessage]
    evaluate_detailed(...same...) -> list[RuleOutcome]
    lint_paths(paths, *, templates_dir=None, ...) -> LintReport
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CompiledRule": "engine.ruleset",
    "RuleSet": "engine.ruleset",
    "PlannedMessage": "engine.evaluate",
    "RuleOutcome": "engine.evaluate",
    "evaluate": "engine.evaluate",
    "evaluate_detailed": "engine.evaluate",
    "load_rules": "engine.loader",
    "load_ruleset": "engine.loader",
    "RuleSetError": "engine.loader",
    "lint_paths": "engine.lint",
    "Diagnostic": "engine.diagnostics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
