"""One generated planning function per rule: what `engine.evaluate._plan` does, for the common case.

A fired rule's planning step (the stage reached, the reason, the dedupe key, the template values,
the body and its segments, the recipient, the job id, the message) goes through a dozen small
functions and as many intermediate lists, tuples and dicts per record. Here it becomes one Python
function per rule, written once from the compiled rule: everything constant per rule (and per stage
of a ladder) is worked out at compile time and written into the function as a literal, and only the
record's own values are read per call.

It only answers the common case: a plain dict record whose template renders on its fast path, whose
recipients normalise, and whose dedupe values are text, whole numbers or null. Anything else (a skip,
a template error, an unusual value, any exception) makes it return None, and evaluation then plans
that record through `_plan`, which gives the real outcome. The function is pure, so trying it first
and then `_plan` is harmless: the fast path can make planning faster, never different
(tests/engine/test_fast_paths.py compares the two).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import phonenumbers

from engine import functions as fn
from engine.conditions import DaysCheck, ExprCheck, FieldCheck, PredicateCode, show
from engine.evaluate import (
    _TEMPLATE_EXTRAS,
    JOB_ID_HEX,
    JOB_ID_PREFIX,
    PlannedMessage,
    _encode_text,
    _normalise,
    _render,
    _template_names,
)
from engine.functions import EvaluationContext
from engine.model import CHANNELS, FIELD_PATH
from engine.render import MAX_OUTPUT, is_gsm_basic, segment_count

if TYPE_CHECKING:
    from engine.render import CompiledTemplate
    from engine.ruleset import CompiledRule, RecipientTarget

# (ctx, record id, record number) -> the rule's messages, or None: plan it through _plan instead.
FastPlanner = Callable[[EvaluationContext, str, "str | None"], "list[PlannedMessage] | None"]

# PlannedMessage's fields in declaration order (the order its constructor fills __dict__ in).
_MESSAGE_FIELDS = tuple(PlannedMessage.__dataclass_fields__)


class _GiveUp(Exception):
    """Raised inside a planner for values only the general path writes (it then returns None)."""


def _json_plain(value: Any) -> str:
    """The canonical JSON of a dedupe value that is not text: null or a whole number; else give up."""
    if value is None:
        return "null"
    if type(value) is int:
        return int.__repr__(value)
    raise _GiveUp


class _Unsupported(Exception):
    """A rule shape the generated planner does not cover: evaluation keeps `_plan` for it."""


class _Writer:
    """The source lines of one planner and the names they use."""

    def __init__(self) -> None:
        self.code = PredicateCode()
        self.code.namespace.update(
            {
                "_str": str,
                "_int": int,
                "_float": float,
                "_len": len,
                "_Exception": Exception,
                "_fromkeys": dict.fromkeys,
                "_reasons": "; ".join,
                "_new": object.__new__,
                "_PlannedMessage": PlannedMessage,
                "_enc": _encode_text,
                "_plain": _json_plain,
                "_show": show,
                "_sha": hashlib.sha256,
                "_normalise": _normalise,
                "_regions": phonenumbers.SUPPORTED_REGIONS,
                "_days_overdue": fn.days_overdue,
                "_gsm": is_gsm_basic,
                "_segments": segment_count,
                "_render": _render,
            }
        )
        self.code.namespace["_today_text"] = [(None, "")]
        self.lines: list[str] = []

    def name(self, value: Any) -> str:
        """A name bound to `value` in the function's globals."""
        return self.code.name(value)

    def lit(self, value: Any) -> str:
        """`value` as a literal when Python writes one back exactly, else a name bound to it."""
        if value is None or type(value) in (str, int, bool):
            return repr(value)
        return self.name(value)

    def temp(self) -> str:
        return self.code.temp()

    def read(self, path: str) -> str:
        """What make_getter(path) returns for the dict `rec`."""
        head, _, tail = path.partition(".")
        if not tail:
            return f"rec.get({head!r})"
        temp = self.temp()
        return (
            f"({temp}.get({tail!r}) if _type({temp} := rec.get({head!r})) is _dict "
            f"or _isinstance({temp}, _Mapping) else None)"
        )

    def line(self, indent: int, text: str) -> None:
        self.lines.append("    " * indent + text)


def _text(*pieces: str | tuple[str]) -> str:
    """An f-string: a 1-tuple is literal text, a str names a local whose str() is inserted."""
    parts: list[str] = []
    for piece in pieces:
        if isinstance(piece, tuple):
            if piece[0]:
                parts.append(repr(piece[0]))  # adjacent literals join at compile time
        else:
            parts.append(f"f'{{{piece}}}'")
    return "(" + " ".join(parts or ["''"]) + ")"


def compile_planner(rule: CompiledRule) -> FastPlanner | None:
    """The rule's planning step as one function, or None when the rule's shape is not covered."""
    try:
        return _compile(rule)
    except _Unsupported:
        return None


class _Variant:
    """What a fired record sends at one stage (or the rule's own settings without a ladder)."""

    def __init__(
        self,
        stage: int | None,
        reason_tail: str | None,
        channel: str,
        template: CompiledTemplate,
        recipients: tuple[RecipientTarget, ...],
        region: str | None,
        grace: int,
    ) -> None:
        self.stage = stage
        self.reason_tail = reason_tail  # the ladder's part of the reason after "(... today <date>)"
        self.channel = channel
        self.template = template
        self.recipients = recipients
        self.region = region
        self.grace = grace


def _compile(rule: CompiledRule) -> FastPlanner:
    w = _Writer()
    ladder = rule.ladder
    stage_check = None if ladder is not None else rule.stage_check
    w.line(0, "def _plan_fast(ctx, record_id, number):")
    w.line(1, "rec = ctx.record")
    w.line(1, "if _type(rec) is not _dict or _type(record_id) is not _str:")
    w.line(2, "return None")
    w.line(1, "try:")
    w.line(2, "today = ctx.today")
    # str(today) for the reasons, worked out once per day: a (today, text) pair swapped in whole.
    w.line(2, "known = _today_text[0]")
    w.line(2, "if known[0] is today:")
    w.line(3, "today_text = known[1]")
    w.line(2, "else:")
    w.line(3, "today_text = f'{today}'")
    w.line(3, "_today_text[0] = (today, today_text)")

    # --- the stage, and days_overdue of dueDate when it is known from it ----------------------------
    overdue_known = False
    if ladder is not None:
        if not ladder.stages or not all(type(s.days) is int for s in ladder.stages):
            raise _Unsupported("ladder")
        w.line(2, f"raw_days = {w.read(ladder.path)}")
        w.line(2, "days = _days_overdue(ctx, raw_days)")
        w.line(2, "if days is None:")
        w.line(3, "return None")
        if ladder.path == "dueDate":
            w.line(2, "overdue = days")
            overdue_known = True
    elif stage_check is not None:
        stages = stage_check.stages or ()
        if not stages or not all(type(s) is int for s in stages):
            raise _Unsupported("stages")
        w.line(2, f"raw_days = {w.read(stage_check.path)}")
        w.line(2, f"days = {w.name(stage_check.count)}(ctx, raw_days)")
        w.line(2, "if days is None:")
        w.line(3, "return None")
        # DaysCheck.stage: the last stage reached (overdue), the first still ahead (until due).
        if stage_check.kind == "days_overdue":
            order = [(f"days >= {s}", s) for s in reversed(stages)]
        else:
            order = [(f"0 <= days <= {s}", s) for s in stages]
        w.line(2, "stage = None")
        for index, (test, reached) in enumerate(order):
            w.line(2, f"{'if' if index == 0 else 'elif'} {test}:")
            w.line(3, f"stage = {reached}")
        if stage_check.path == "dueDate":
            # (due - today).days is exactly -(today - due).days.
            w.line(2, "overdue = days" if stage_check.kind == "days_overdue" else "overdue = -days")
            overdue_known = True
    else:
        w.line(2, "stage = None")
    if not overdue_known:
        # What _template_values reads whether the template shows it or not.
        w.line(2, "due = rec.get('dueDate')")
        w.line(2, "overdue = _days_overdue(ctx, due) if due is not None else None")
    if ladder is not None or stage_check is not None:
        w.line(2, "plural = '' if days == 1 or days == -1 else 's'")

    # --- the reason: each check's explain_held (the ladder's part is per stage) ---------------------
    # Each part as _text pieces; None marks the ladder's place.
    reasons: list[list[str | tuple[str]] | None] = []
    # What each part starts with, when known: parts that start differently are different, so
    # _plan's dict.fromkeys (dropping a repeated part) has nothing to drop.
    leads: list[str | None] = []
    for check in rule.checks:
        if check is ladder:
            reasons.append(None)
            leads.append("<days>")  # a number of days: a digit or '-'
            continue
        temp = w.temp()
        if isinstance(check, FieldCheck) and type(check) is FieldCheck:
            _field_reason(w, check, temp)
            # The path and then a space (paths have none, and start with a letter or '_').
            leads.append(check.path + " " if re.fullmatch(FIELD_PATH, check.path) else None)
        elif isinstance(check, ExprCheck) and type(check) is ExprCheck:
            text = f"`{check.compiled.source}` is true"
            reasons.append([(text,)])
            leads.append(text)
            continue
        elif isinstance(check, DaysCheck) and check is stage_check:
            # DaysCheck.explain for a check that held, its days and stage already counted.
            label = "overdue" if check.kind == "days_overdue" else "until due"
            w.line(2, "if stage is None:")
            w.line(3, "stage_part = ''")
            w.line(2, "else:")
            w.line(3, f"stage_part = {_text((', stage ',), 'stage')}")
            w.line(
                2,
                f"{temp} = "
                + _text(
                    "days",
                    (" day",),
                    "plural",
                    (f" {label} ({check.path} ",),
                    "raw_days",
                    (", today ",),
                    "today_text",
                    (")",),
                    "stage_part",
                ),
            )
            leads.append("<days>")
        else:
            w.line(2, f"{temp} = {w.name(check.explain_held)}(ctx)")
            leads.append(None)
        reasons.append([temp])
    distinct = None not in leads and not _may_share_start([lead for lead in leads if lead is not None])

    # --- the dedupe values (all but the stage) ------------------------------------------------------
    w.line(2, "rid = _enc(record_id)")
    key_pieces: list[str | tuple[str]] = [(f"{rule.id}/{rule.entity}/",)]
    json_pieces: list[str | tuple[str]] = [("[",)]
    for index, (entry, entry_json, field_name, getter) in enumerate(rule.once_per_steps):
        if index:
            key_pieces.append((",",))
            json_pieces.append((",",))
        key_pieces.append((f"{entry}=",))
        json_pieces.append((f"[{entry_json},",))
        if entry == "stage":
            # A whole number or None: its JSON and its shown form are written per stage.
            key_pieces.append("stage_shown")
            json_pieces.extend(["stage_json", ("]",)])
            continue
        if field_name is not None:
            value = f"rec.get({field_name!r})"
        elif getter is not None:
            value = f"{w.name(getter)}(rec)"
        elif entry == "day":
            value = "today.isoformat()"
        elif entry == "week":
            value = f"{w.name(_week)}(today)"
        elif entry == "crossing":
            raise _Unsupported("crossing")
        else:
            value = f"{w.name(rule.once_per_getters[entry])}(rec)"
        temp, shown, text = w.temp(), w.temp(), w.temp()
        w.line(2, f"{temp} = {value}")
        w.line(2, f"if _type({temp}) is _str:")
        w.line(3, f"{shown} = {temp}")
        if field_name == "id":
            # The record id is written once for the job id already (_record_identity's str() of it).
            w.line(3, f"{text} = rid if {temp} is record_id else _enc({temp})")
        else:
            w.line(3, f"{text} = _enc({temp})")
        w.line(2, "else:")
        w.line(3, f"{shown} = '' if {temp} is None else f'{{{temp}}}'")
        w.line(3, f"{text} = _plain({temp})")
        key_pieces.append(shown)
        json_pieces.extend([text, ("]",)])
    json_pieces.append(("]",))

    # --- per stage: the rest ------------------------------------------------------------------------
    if ladder is not None:
        for index, stage in enumerate(reversed(ladder.stages)):
            w.line(2, f"{'if' if index == 0 else 'elif'} days >= {stage.starts}:")
            grace = f" after {stage.grace_days} grace day(s)" if stage.grace_days else ""
            variant = _Variant(
                stage.days,
                f", stage {stage.days} ({stage.label}){grace}",
                stage.channel,
                stage.template,
                stage.recipients,
                stage.region,
                stage.grace_days,
            )
            _emit_variant(w, rule, variant, reasons, distinct, key_pieces, json_pieces, 3)
        w.line(2, "return None")
    else:
        w.line(2, "stage_json = 'null' if stage is None else _plain(stage)")
        w.line(2, "stage_shown = '' if stage is None else stage_json")
        variant = _Variant(None, None, rule.channel, rule.template, rule.recipients, rule.region, 0)
        _emit_variant(w, rule, variant, reasons, distinct, key_pieces, json_pieces, 2)
    w.line(1, "except _Exception:")
    w.line(2, "return None")
    source = "\n".join(w.lines) + "\n"
    namespace = w.code.namespace
    exec(compile(source, f"<planner {rule.id}>", "exec"), namespace)  # noqa: S102 - built from the compiled rule
    planner: FastPlanner = namespace["_plan_fast"]
    planner.__doc__ = source  # what was generated, for whoever debugs it
    return planner


def _may_share_start(leads: list[str]) -> bool:
    """Could two reason parts with these known starts be the same text? (Only with equal starts.)

    A field part starts with its path and a space, an expression part is a fixed text starting
    with a backtick, a days part starts with a digit or '-': two such parts can only be equal when
    their starts are (a repeated path, a repeated expression, two days parts).
    """
    return len(set(leads)) != len(leads)


def _field_reason(w: _Writer, check: FieldCheck, temp: str) -> None:
    """temp = FieldCheck.explain_held."""
    value = w.temp()
    w.line(2, f"{value} = {w.read(check.path)}")
    if check.ordered:
        # show(), its commonest cases written out: an int or a fractional float reads as str() does.
        shown = w.temp()
        w.line(
            2,
            f"{shown} = _str({value}) if _type({value}) is _int or (_type({value}) is _float "
            f"and not {value}.is_integer()) else _show({value})",
        )
        w.line(2, f"{temp} = {_text((check.path + ' ',), shown, (' ' + check._held_words,))}")
        return
    shown = _text((check.path + " is ",), f"_show({value})")
    if check._held_text is not None:
        w.line(2, f"{temp} = {w.lit(check._held_text)} if _type({value}) is _str else {shown}")
    else:
        w.line(2, f"{temp} = {shown}")


def _week(today: Any) -> str:
    year, week, _ = today.isocalendar()
    return f"{year}-W{week:02d}"


def _emit_variant(
    w: _Writer,
    rule: CompiledRule,
    variant: _Variant,
    reasons: list[list[str | tuple[str]] | None],
    distinct: bool,
    key_pieces: list[str | tuple[str]],
    json_pieces: list[str | tuple[str]],
    indent: int,
) -> None:
    if variant.stage is not None:
        w.line(indent, f"stage = {variant.stage!r}")
        w.line(indent, f"stage_json = stage_shown = {str(variant.stage)!r}")
    parts: list[list[str | tuple[str]]] = []
    for reason in reasons:
        if reason is not None:
            parts.append(reason)
            continue
        ladder = rule.ladder
        assert ladder is not None and variant.reason_tail is not None
        parts.append(
            [
                "days",
                (" day",),
                "plural",
                (f" overdue ({ladder.path} ",),
                "raw_days",
                (", today ",),
                "today_text",
                (")" + variant.reason_tail,),
            ]
        )
    if not parts:
        w.line(indent, "reason = 'no conditions'")
    elif distinct and len(parts) > 1:
        # "; ".join(dict.fromkeys(parts)) when no part can repeat another: one f-string.
        joined: list[str | tuple[str]] = []
        for index, part in enumerate(parts):
            if index:
                joined.append(("; ",))
            joined.extend(part)
        w.line(indent, f"reason = {_text(*joined)}")
    else:
        expressions = ", ".join(_text(*part) for part in parts)
        w.line(indent, f"reason = _reasons(_fromkeys(({expressions},))) or 'no conditions'")
    w.line(indent, f"key = {_text(*key_pieces)}")
    w.line(indent, f"parts = {_text(*json_pieces)}")
    _emit_body(w, rule, variant.template, indent)
    if CHANNELS[variant.channel].counts_segments:
        # segment_count, with its commonest case (plain GSM-7) written out.
        w.line(indent, "size = _len(body)")
        w.line(indent, "if not size:")
        w.line(indent + 1, "segments = 0")
        w.line(indent, "elif _gsm(body):")
        w.line(indent + 1, "segments = 1 if size <= 160 else -(-size // 153)")
        w.line(indent, "else:")
        w.line(indent + 1, "segments = _segments(body)")
    else:
        w.line(indent, "segments = 0")
    many = len(variant.recipients) > 1
    messages: list[str] = []
    for target in variant.recipients:
        if type(target.spec) is not str:
            raise _Unsupported("recipient spec")
        to = w.temp()
        if target.number is not None:
            to = w.lit(target.number)
        else:
            if target.getter is None:
                raise _Unsupported("recipient")
            raw = w.temp()
            w.line(indent, f"{raw} = {w.name(target.getter)}(rec)")
            # An empty number is a recorded skip: the general path writes it.
            w.line(indent, f"if {raw} is None or (_isinstance({raw}, _str) and not {raw}.strip()):")
            w.line(indent + 1, "return None")
            region = w.temp()
            w.line(indent, f"{region} = {w.lit(variant.region)}")
            if target.region_getter is not None:
                country = w.temp()
                w.line(indent, f"{country} = {w.name(target.region_getter)}(rec)")
                w.line(indent, f"if _isinstance({country}, _str) and {country}.strip().upper() in _regions:")
                w.line(indent + 1, f"{region} = {country}.strip().upper()")
            w.line(indent, f"{to} = _normalise(_str({raw}), {region})")
        job = w.temp()
        canonical = _text((rule.job_id_head,), "rid", (",",), "parts", (f",{_encode_text(target.spec)}]",))
        w.line(indent, f"{job} = {JOB_ID_PREFIX!r} + _sha({canonical}.encode()).hexdigest()[:{JOB_ID_HEX}]")
        values = {
            "job_id": job,
            "rule_id": w.lit(rule.id),
            "entity": w.lit(rule.entity),
            "record_id": "record_id",
            "record_number": "number",
            "channel": w.lit(variant.channel),
            "to": to,
            "body": "body",
            "segments": "segments",
            "dedupe_key": f"key + {('/to=' + target.spec)!r}" if many else "key",
            "reason": "reason",
            "skip_code": "None",
            "skip_reason": "None",
            "timezone": w.lit(rule.timezone.key),
            "quiet_hours": w.lit(rule.quiet_hours),
            "stage": "stage",
            "grace_days": w.lit(variant.grace),
            "group_job_id": "None",
            "record": "rec",
        }
        if tuple(values) != _MESSAGE_FIELDS:
            raise _Unsupported("PlannedMessage fields")
        message = w.temp()
        # evaluate._new_message: the same object as PlannedMessage(**fields), without its __init__.
        w.line(indent, f"{message} = _new(_PlannedMessage)")
        items = ", ".join(f"{k!r}: {v}" for k, v in values.items())
        w.line(indent, f"{message}.__dict__.update({{{items}}})")
        messages.append(message)
    w.line(indent, f"return [{', '.join(messages)}]")


def _emit_body(w: _Writer, rule: CompiledRule, template: CompiledTemplate, indent: int) -> None:
    """body = the rendered, stripped text (what _render gives), or return None for the general path."""
    fast = template._fast
    if fast is None:
        w.line(indent, f"body, failed = _render({w.name(rule)}, {w.name(template)}, ctx, stage, overdue)")
        w.line(indent, "if failed is not None:")
        w.line(indent + 1, "return None")
        return
    fields, extras = _template_names(template)
    values: list[str] = []
    for field_name in fields:
        # _template_values leaves a missing field out and the fast render then fails: so does this.
        values.append(f"{field_name!r}: rec[{field_name!r}]")
    for extra in extras:
        if extra not in _TEMPLATE_EXTRAS:
            raise _Unsupported(extra)
        expression = {
            "days_overdue": "overdue",
            "days_until_due": "(None if overdue is None else -overdue)",
            "stage": "stage",
            "record": "rec",
            "today": "today",
            "now": f"ctx.now.astimezone({w.name(rule.timezone)})",
            "previous": "(ctx.previous or {})",
            "rule": f"{{'id': {w.lit(rule.id)}, 'description': {w.lit(rule.description)}}}",
        }[extra]
        values.append(f"{extra!r}: {expression}")
    w.line(indent, f"body = {w.name(fast)}({{{', '.join(values)}}})")
    w.line(indent, f"if _len(body) > {MAX_OUTPUT}:")
    w.line(indent + 1, "return None")
    # CompiledTemplate.render's rstrip('\r\n') then _render's strip() is strip().
    w.line(indent, "body = body.strip()")


__all__ = ["FastPlanner", "compile_planner"]
