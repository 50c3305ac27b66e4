"""The rule-error tree of the engine and the lint codes the leaf modules raise.

Every error a rule author can cause derives from `EngineError` and carries a stable code
(`ML2xx` templates, `ML3xx` conditions, `ML4xx` recipients). `CODES` is the table of those codes;
the lint registry merges it, so a code is documented exactly once.
"""

from __future__ import annotations

# code -> (kebab-case name, one-line summary)
CODES: dict[str, tuple[str, str]] = {
    "ML201": ("template-syntax", "the template does not parse (Jinja syntax error, unknown filter)"),
    "ML202": ("template-missing", "the template named by the rule does not exist"),
    "ML203": (
        "template-render",
        "the template failed to render (undefined variable, bad value for a filter)",
    ),
    "ML204": (
        "template-forbidden",
        "the template uses something the sandbox refuses (private attributes, unbounded work, macros)",
    ),
    "ML301": ("expression-syntax", "the condition expression does not parse"),
    "ML302": ("unknown-name", "the expression names a field or value that does not exist"),
    "ML303": ("unknown-function", "the expression calls a function that is not a registered helper"),
    "ML304": (
        "forbidden-construct",
        "the expression uses a construct outside the safe subset (lambda, comprehension, methods, dunders)",
    ),
    "ML305": (
        "expression-too-large",
        "the expression is too long, too deep, or an operation exceeds its bound (huge power, huge repeat)",
    ),
    "ML306": (
        "expression-runtime",
        "evaluating the expression failed on this record (type mismatch, division by zero, bad date)",
    ),
    "ML307": ("helper-arguments", "a helper is called with the wrong number of arguments"),
    "ML401": ("phone-unparseable", "the phone number is empty or cannot be parsed"),
    "ML402": ("phone-invalid", "the phone number parses but is not a valid number for its region"),
    "ML403": ("phone-extension", "the phone number has an extension: a switchboard cannot receive SMS"),
    "ML404": (
        "phone-not-mobile-capable",
        "the number is a type that cannot receive SMS (short code, premium rate, pager, ...)",
    ),
    "ML405": ("bad-region", "the default region is not an ISO 3166-1 alpha-2 code known to phonenumbers"),
}


class EngineError(Exception):
    """Root of every error caused by a rule, an expression, a template or a recipient."""

    code: str = "ML000"


class ExpressionError(EngineError):
    """A condition expression is refused at compile time (ML301-ML305, ML307).

    `offset` is the 0-based character column in the expression source and `length` the number of
    characters of the offending part, so a linter can point at it inside the YAML value.
    """

    def __init__(self, code: str, message: str, *, offset: int = 0, length: int = 0) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message
        self.offset = offset
        self.length = length


class EvaluationError(EngineError):
    """Evaluating a compiled expression failed for one record.

    ML305 when an operation exceeds a bound (`2 ** 1000`, a huge string repeat), ML306 when the
    record's data does not fit the expression (comparing text with a number, an unreadable date).
    """

    def __init__(self, code: str, message: str, *, source: str = "") -> None:
        super().__init__(f"{code} {message}" + (f" in {source!r}" if source else ""))
        self.code = code
        self.message = message
        self.source = source


class TemplateError(EngineError):
    """A message template failed to compile (ML201, ML202, ML204) or render (ML203, ML204)."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        template: str,
        line: int | None = None,
        col: int | None = None,
    ) -> None:
        where = template + (f":{line}" if line is not None else "") + (f":{col}" if col is not None else "")
        super().__init__(f"{where}: {code} {message}")
        self.code = code
        self.message = message
        self.template = template
        self.line = line
        self.col = col


class PhoneError(EngineError):
    """A recipient number cannot be turned into an E.164 number we are willing to send to (ML4xx)."""

    def __init__(self, code: str, reason: str, *, raw: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.raw = raw
