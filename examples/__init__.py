"""Runnable perdure example apps, each exercised by a test under tests/examples."""
