"""registryd: a privacy-focused, Enigma-compatible registry daemon."""

__version__ = "0.1.0"
