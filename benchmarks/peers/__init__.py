"""Peer benchmarks: other job queues measured through their own Python clients."""
