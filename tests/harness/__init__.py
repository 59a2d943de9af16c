"""Shared test tooling: a real ComfyUI host, its HTTP client and a headless browser."""
