"""TwiML for voice calls, built with the official SDK's VoiceResponse (it escapes the text for XML)."""

from __future__ import annotations

from twilio.twiml.voice_response import VoiceResponse

# Inline TwiML on CreateCall is limited to 4,000 characters (twilio-oai CreateCall Twiml description).
MAX_INLINE_TWIML = 4000


def say_twiml(text: str, *, voice: str | None = None, language: str | None = None, loop: int = 1) -> str:
    """`<Response><Say>text</Say></Response>`, ready for `TwilioClient.place_call(twiml=...)`."""
    response = VoiceResponse()
    attributes: dict[str, object] = {"loop": loop} if loop != 1 else {}
    if voice:
        attributes["voice"] = voice
    if language:
        attributes["language"] = language
    response.say(text, **attributes)
    twiml = str(response)
    if len(twiml) > MAX_INLINE_TWIML:
        raise ValueError(
            f"TwiML is {len(twiml)} characters; Twilio accepts at most {MAX_INLINE_TWIML} inline"
        )
    return twiml


def empty_messaging_response() -> str:
    """The reply to an inbound-message webhook when we send nothing back."""
    return '<?xml version="1.0" encoding="UTF-8"?><Response/>'
