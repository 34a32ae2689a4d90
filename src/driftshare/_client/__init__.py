"""The shared client's life: building it, its generations, its health checks and its endpoints."""
