"""Pure rules engine: YAML rule files in, validated models, evaluation, planned messages out.

Nothing in this package does network or database I/O; the server package does all of that.
The public API, imported explicitly here:

    load_ruleset(rules_dir, templates_dir=None, *, catalogue=None, default_region=None) -> RuleSet
    evaluate(entity, record, ruleset, now, previous=None, *, event="updated") -> list[PlannedMessage]
    evaluate_detailed(...same...) -> list[RuleOutcome]
    group_messages(...) -> grouped reminders; make_job_id(parts) -> a stable job id
    lint_paths(paths, *, templates_dir=None, ...) -> LintReport
    run_rule_test_paths, run_preview_command, diff_rulesets: the rule authors' tools
"""

from engine.diagnostics import Diagnostic
from engine.diff import diff_rulesets
from engine.evaluate import evaluate, evaluate_detailed
from engine.grouping import group_messages
from engine.lint import lint_paths
from engine.loader import RuleSetError, load_rules, load_ruleset
from engine.messages import PlannedMessage, RuleOutcome, make_job_id
from engine.preview import run_preview_command
from engine.recipients import RecipientTarget
from engine.ruleset import CompiledRule, RuleSet
from engine.ruletests import run_rule_test_paths

__all__ = [
    "CompiledRule",
    "Diagnostic",
    "PlannedMessage",
    "RecipientTarget",
    "RuleOutcome",
    "RuleSet",
    "RuleSetError",
    "diff_rulesets",
    "evaluate",
    "evaluate_detailed",
    "group_messages",
    "lint_paths",
    "load_rules",
    "load_ruleset",
    "make_job_id",
    "run_preview_command",
    "run_rule_test_paths",
]
