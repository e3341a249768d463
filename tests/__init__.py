"""The test suite: unit tests (fake engine) and integration tests (the local stack)."""
