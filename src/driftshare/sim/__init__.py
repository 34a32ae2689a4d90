"""A local Solana RPC (HTTP + WebSocket) serving a live Drift program state."""
