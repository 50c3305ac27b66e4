from __future__ import annotations

import io
import json
import logging

from server.runtime.logs import REDACTED, configure_logging, get_logger, register_secrets


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_secret_keys_and_registered_values_are_redacted() -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    register_secrets(["s3cr3t-value-123"])
    get_logger("t").info(
        "calling with s3cr3t-value-123",
        client_state="abc",
        job_id="mlc-1",
        nested={"api_key_secret": "x", "note": "has s3cr3t-value-123 inside"},
    )
    (line,) = _lines(stream)
    assert line["event"] == f"calling with {REDACTED}"
    assert line["client_state"] == REDACTED
    assert line["job_id"] == "mlc-1"
    assert line["nested"] == {"api_key_secret": REDACTED, "note": f"has {REDACTED} inside"}
    assert "s3cr3t-value-123" not in stream.getvalue()


def test_stdlib_loggers_share_the_redaction() -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    register_secrets(["another-secret-987"])
    logging.getLogger("uvicorn.error").warning("boom another-secret-987")
    (line,) = _lines(stream)
    assert line["event"] == f"boom {REDACTED}"
    assert line["logger"] == "uvicorn.error"
