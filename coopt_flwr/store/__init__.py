"""What the platform writes and reads: the optimized set and checkpoints (safetensors, atomic
writes), the summary table, and TLS / node-key material for deployments."""
