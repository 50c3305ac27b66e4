"""Pure rules engine: YAML rule files in, validated models, evaluation, planned messages out.

Nothing in this package does network or database I/O; the server package does all of that.
"""
