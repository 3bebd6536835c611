"""One module per ``klinestore`` subcommand (see ``klinestore.cli``)."""
