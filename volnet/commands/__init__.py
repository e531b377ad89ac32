"""One module per ``volnet`` subcommand; each parses its arguments and calls one public function."""
