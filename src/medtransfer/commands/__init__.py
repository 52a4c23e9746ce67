"""One module per ``medtransfer`` sub-command (see :mod:`medtransfer.cli`)."""
