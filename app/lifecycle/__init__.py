"""The rules of the task lifecycle: state machine, dependencies, roll-ups. No GraphQL, no HTTP."""
