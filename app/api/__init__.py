"""The GraphQL layer: Strawberry types, per-request loaders, root queries, errors and limits."""
