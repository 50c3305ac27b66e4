"""The OTP-gated write-back of sensitive fields to Business Central."""
