"""pyinfra operations: the only layer of shipyard with side effects on hosts."""
