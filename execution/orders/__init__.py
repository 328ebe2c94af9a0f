"""Orders: the exchange order lifecycle and its durable journal."""
