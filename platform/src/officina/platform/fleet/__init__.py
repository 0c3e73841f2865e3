"""The worker fleet: registration, heartbeats and capacity (real or simulated GPUs)."""
