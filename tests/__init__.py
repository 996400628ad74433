"""mediaserver tests."""
