"""Fakes of Business Central and Twilio as real HTTP servers on loopback.

They import nothing from engine/ or server/: a simulator that shared the connector's code would test
the connector with itself.
"""
