"""MongoDB: the client, the embedded mongod and the indexes."""
