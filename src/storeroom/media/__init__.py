"""Validation, sniffing, metadata and variants of stored files."""
