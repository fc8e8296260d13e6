"""NATS JetStream: the names, the event envelope, the bus and the shared state built on it."""
