"""Real local service processes (nats-server, SeaweedFS, our own services) on chosen or free ports.

Used by `ops up` with fixed ports and by the test fixtures with random ones. Import from the module
that holds what you need:

- `ops.services.processes`: ManagedProcess (one child process with a log file, a readiness probe and a
  stop that leaves nothing behind), `python_service`, `http_probe`, `stop_all`, `pid_alive`,
  `find_binary`, ServiceError and LOCALHOST.
- `ops.services.ports`: `free_port`, `free_port_block`, `ensure_port_free` and PortInUse.
- `ops.services.nats`: NatsServer, NatsCluster and ClusterMembership (nats-server with JetStream).
- `ops.services.s3`: SeaweedS3 (SeaweedFS as the local S3 store).
- `ops.services.stack`: Stack, an ordered group of processes stopped newest first.
- `ops.services.restarts`: RestartPolicy and Backoff (exponential, capped) and Supervision, which
  restarts chosen children of a Stack when they die.
"""
