"""Root mutation fields, one module per domain; `schema.py` merges them."""
