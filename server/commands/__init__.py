"""Sub-commands of the `ml-connector` command line, one module per command group."""
