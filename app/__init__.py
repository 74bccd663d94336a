"""agent-tasks: a GraphQL API over the AI-agent task hierarchy, stored in MongoDB."""

__version__ = "0.1.0"
