"""spikelm command-line interface (Typer + rich). The library is `spikelm_core`."""
