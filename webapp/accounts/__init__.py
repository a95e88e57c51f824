"""Accounts: sign-in lock-out after repeated failures, and API tokens (hashed, expiring, revocable)."""
