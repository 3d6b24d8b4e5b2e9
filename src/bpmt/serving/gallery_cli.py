"""CLI commands of the gallery feature (registered by bpmt.cli.build_parser)."""


def register(sub) -> None:
    """Add this feature's subcommands to the `bpmt` parser (none yet)."""
