"""Loopback servers that tests (and benchmarks) run against: real HTTP on 127.0.0.1, never mocks."""
