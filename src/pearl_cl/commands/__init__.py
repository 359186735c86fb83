"""What users call: the ``pearl-cl`` command line and the library functions behind its
subcommands (compare, report, plots, predict, export)."""
